"""SA-04 inside Flower, from the client side: Flower's Grid relays any node's reply and does
not authenticate members, so a node may send an advertisement naming another member. The
advertisement's signature is what ties it to the member: :class:`aggregator.flower.
SecAggWorkflow` drops a claim that does not verify (``SecAggServer.advert_is_signed``) before
the state machine sees it, so the impersonator cannot get the member it names excluded, and the
member's own advertisement, arriving after it, still counts.

Drives the workflow's reply handling directly with real ``flwr.app.Message`` replies (no
simulation engine needed); skipped without the ``flower`` extra.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proofs_tests.adversarial.harness import make_cohort, signed_advert, stranger
from secagg import RoundConfig, Stage
from secagg.messages import ClientMessage

pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from aggregator.flower import FlowerRound, SecAggWorkflow
from protos import wire
from protos.flower import RECORD

CFG = RoundConfig(n=6, t=4, d=16)
VICTIM = 2
IMPOSTOR_NODE = 9000


def _reply(nid: int, msg: ClientMessage, cfg: RoundConfig) -> Message:
    """What node ``nid`` answers to the round's opening message, carrying ``msg``."""
    opening = Message(RecordDict({RECORD: ConfigRecord({"stage": "x"})}), dst_node_id=nid,
                      message_type="train")  # fmt: skip
    envelope = wire.client_to_pb(msg, cfg).SerializeToString()
    return Message(RecordDict({RECORD: ConfigRecord({"envelope": envelope})}), reply_to=opening)


@pytest.mark.parametrize("signer", ["stranger", "another member"])
def test_an_unsigned_claim_to_a_member_neither_binds_nor_excludes_it(
    tmp_path: Path, signer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what Flower sets for a run and a
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)  # node and task; Message needs them
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    coh = make_cohort(CFG, seed=1801)
    key = stranger("flower-impostor") if signer == "stranger" else coh.identities[3]
    forged = signed_advert(coh.config, VICTIM, key, tag="flower-impostor")
    adverts = coh.advertise()
    replies = [_reply(IMPOSTOR_NODE, forged, coh.config)]  # the impostor answers first
    replies += [_reply(100 + u, adverts[u], coh.config) for u in sorted(adverts)]
    node_of: dict[int, int] = {}
    member_of: dict[int, int] = {}
    report = FlowerRound(round=1, sampled=len(replies))
    workflow = SecAggWorkflow(tmp_path)
    workflow._collect(
        Stage.ADVERTISE_KEYS, coh.config, coh.server, replies, node_of, member_of, report, []
    )
    assert VICTIM not in coh.server.rejected
    assert node_of[VICTIM] == 100 + VICTIM and IMPOSTOR_NODE not in member_of
    assert report.answered["ADVERTISE_KEYS"] == sorted(adverts)
    result = coh.finish(coh.server.close_stage())
    coh.assert_aggregate(result, included=range(1, CFG.n + 1))


def test_a_signed_advert_is_recognised() -> None:
    coh = make_cohort(CFG, seed=1802)
    adverts = coh.advertise()
    assert all(coh.server.advert_is_signed(m) for m in adverts.values())
    moved = signed_advert(coh.config, CFG.n + 7, coh.identities[1], tag="unregistered")
    assert not coh.server.advert_is_signed(moved)  # a sender outside the registry
