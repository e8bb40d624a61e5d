"""T16 (threat_models/oneshot.md): in a task round (federated DP-LoRA over one-shot
aggregation) the aggregator swaps the task document or the global model after the committee
signed the config, strips the job to pass a task round off as a statistics round, or sends a
task to a client that only does statistics. Each client refuses before it trains, so a bogus
round costs no privacy budget; the contributor is never called."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from aggregator.consortium import init_consortium, load_consortium
from client.oneshot_agent import OneShotAgentOptions, OneShotClientAgent, OneShotContributor
from protos import oneshot_wire as wire
from protos.secagg.oneshot.v1 import oneshot_pb2 as pb
from secagg import ConfigError
from secagg.oneshot import CommitteeMember, MemberKey, OneShotConfig

COMMITTEE = (4, 5, 6)
TASK = b'{"kind": "dp-lora/v1", "round": 0}'
MODEL = np.arange(16, dtype="<f4").tobytes()


class _Spy:
    """A contributor that records every call: a refusal must come before any training."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []

    def contribute_oneshot(
        self, config: OneShotConfig, task: bytes, model: bytes
    ) -> npt.NDArray[np.int64]:
        self.calls.append((task, model))
        return np.zeros(config.d, dtype=np.int64)


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_consortium(6, tmp_path_factory.mktemp("t16") / "consortium")


def _signed(cons: Path) -> tuple[OneShotConfig, list[MemberKey]]:
    c = load_consortium(cons)
    cfg = OneShotConfig(
        n=6,
        d=64,
        committee=COMMITTEE,
        threshold=2,
        min_cohort=3,
        task_digest=hashlib.sha256(TASK).digest(),
        model_digest=hashlib.sha256(MODEL).digest(),
    ).with_session(os.urandom(16), 0)
    members = [
        CommitteeMember(m, c.member(m).identity, c.registry, min_cohort=3) for m in COMMITTEE
    ]
    return cfg, [m.open_round(cfg) for m in members]


def _info(cfg: OneShotConfig, keys: list[MemberKey], task: bytes, model: bytes) -> pb.RoundInfo:
    return pb.RoundInfo(
        config=wire.config_to_pb(cfg),
        member_keys=[wire.member_key_to_pb(k) for k in keys],
        task=task,
        model=model,
    )


def _agent(cons: Path, provider: object) -> OneShotClientAgent:
    # Never dialled: every case here is refused before the upload.
    options = OneShotAgentOptions(
        aggregator="127.0.0.1:9", member=None, consortium=cons, client_id=1
    )
    return OneShotClientAgent(options, provider)  # type: ignore[arg-type]


def test_t16_a_swapped_task_or_model_is_refused_before_training(consortium: Path) -> None:
    cfg, keys = _signed(consortium)
    spy = _Spy()
    assert isinstance(spy, OneShotContributor)
    agent = _agent(consortium, spy)
    try:
        swapped_task = TASK.replace(b'round": 0', b'round": 9')
        swapped_model = np.ones(16, dtype="<f4").tobytes()
        for task, model, what in (
            (swapped_task, MODEL, "task"),
            (TASK, swapped_model, "model"),
            (b"", MODEL, "task"),
            (TASK, b"", "model"),
        ):
            rep = agent._one_round(_info(cfg, keys, task, model))
            assert not rep.completed
            assert f"the round's {what} does not match its digest" in rep.reason, rep.reason
        # Stripping the job's digests changes the config the committee signed: the members'
        # round keys no longer verify, so the client does not upload a statistics round either.
        stripped = replace(cfg, task_digest=bytes(32), model_digest=bytes(32))
        rep = agent._one_round(_info(stripped, keys, b"", b""))
        assert not rep.completed and "bad signature" in rep.reason, rep.reason
        assert spy.calls == []
    finally:
        agent.close()


def test_t16_a_statistics_client_refuses_a_task_round(consortium: Path) -> None:
    cfg, keys = _signed(consortium)
    asked: list[int] = []

    def provide(config: OneShotConfig) -> npt.NDArray[np.float64]:
        asked.append(config.round)
        return np.zeros(config.d)

    agent = _agent(consortium, provide)
    try:
        rep = agent._one_round(_info(cfg, keys, TASK, MODEL))
        assert not rep.completed and "only does statistics rounds" in rep.reason
        assert asked == []
    finally:
        agent.close()


def test_t16_the_job_digests_are_bound_into_the_config_digest() -> None:
    base = OneShotConfig(n=6, d=64, committee=COMMITTEE, threshold=2, min_cohort=3)
    plain = base.with_session(bytes(16))
    job = replace(base, task_digest=b"\x01" * 32, model_digest=b"\x02" * 32).with_session(bytes(16))
    other = replace(job, model_digest=b"\x03" * 32)
    assert len({plain.digest, job.digest, other.digest}) == 3
    assert b"task_digest" not in plain.canonical()  # statistics rounds keep their digest
    with pytest.raises(ConfigError, match="must have a task"):
        replace(base, model_digest=b"\x02" * 32)
    with pytest.raises(ConfigError, match="32 bytes"):
        replace(base, task_digest=b"\x01" * 31)
