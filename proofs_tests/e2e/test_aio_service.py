"""The asyncio transport (``serve``'s default): members waiting on a stage are coroutines, not
threads. Sixty members park a long-poll (``Await``) on the open ADVERTISE_KEYS stage; the
aggregator's thread count stays at its fixed pool, where the threaded transport needs one
thread per waiting member."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import Cluster
from protos import wire
from protos.secagg.v1 import secagg_pb2 as pb
from protos.secagg.v1 import secagg_pb2_grpc as pb_grpc
from secagg import Stage

MEMBERS = 60


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def _parked_threads(c: Cluster, transport: str) -> int:
    """Threads of an aggregator (``transport``) while every member long-polls on it."""
    agg = c.start_aggregator(rounds=1, first_round_wait=40, extra=["--transport", transport])
    calls = []
    for i in c.ids:
        stub = pb_grpc.AggregatorStub(c.channel(i))  # type: ignore[no-untyped-call]
        info = stub.GetRound(pb.GetRoundRequest(client_id=i, after_round=-1), timeout=30)
        cfg = wire.config_from_pb(info.config)
        req = pb.AwaitRequest(
            round=cfg.round,
            session_id=cfg.session_id,
            client_id=i,
            stage=wire.STAGE_TO_PB[Stage.ADVERTISE_KEYS],
        )
        calls.append(stub.Await.future(req, timeout=20))
    c.wait_for("every long-poll to be in", lambda: all(not f.done() for f in calls), 5)
    time.sleep(2.0)  # every Await has reached its handler
    assert all(not f.done() for f in calls), "the long-polls are still parked"
    n = _threads(agg.pid)
    for f in calls:
        f.cancel()
    agg.kill()
    return n


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_waiting_members_hold_no_thread_each(tmp_path: Path) -> None:
    with Cluster(tmp_path, members=MEMBERS, threshold=40, stage_timeout=30) as c:
        aio = _parked_threads(c, "aio")
        threads = _parked_threads(c, "threads")
    assert threads >= MEMBERS, f"the threaded server parks a thread per waiter ({threads})"
    assert aio < 30, f"the asyncio server has {aio} threads for {MEMBERS} waiting members"
