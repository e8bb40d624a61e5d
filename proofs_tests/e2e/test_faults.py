"""End to end, crashes: clients SIGKILLed at each stage, too few survivors, and the aggregator
itself SIGKILLed mid-round and restarted on the same state.

The client policy (threats.md SA-03) refuses ``t <= (k + c) / 2``: with n=7 (k=6, c=1) the
smallest accepted threshold is 4, which still leaves slack for one more dropout after the kill.
"""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import Cluster

STAGES = ["ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "CONSISTENCY", "UNMASK"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stage", STAGES)
def test_client_killed_at_stage(tmp_path: Path, stage: str) -> None:
    """Round 0 runs clean; in round 1 client 7 SIGKILLs itself right before sending ``stage``
    (round 1, so that the ADVERTISE_KEYS case waits one stage timeout, not the first-round
    wait). Its input is in the sum iff its masked input had been sent."""
    victim = 7
    with Cluster(tmp_path, members=7, threshold=4, stage_timeout=3.0) as c:
        agg = c.start_aggregator(rounds=2)
        procs = c.start_clients(c.ids, rounds=2, faults={victim: [f"kill:1:{stage}"]})
        c.assert_aggregate(0, included=c.ids)

        summary = c.assert_aggregate(1)
        masked_sent = STAGES.index(stage) > STAGES.index("MASKED_INPUT")
        want = c.ids if masked_sent else [u for u in c.ids if u != victim]
        assert summary["included"] == want
        # It completed every stage before ``stage`` and none from it on.
        v = STAGES.index(stage) + 1  # U<v> is the set that completed ``stage``
        sets = summary["stage_sets"]
        if v > 1:
            assert victim in sets[f"U{v - 1}"], sets
        assert victim not in sets[f"U{v}"], sets
        assert summary["rejected"] == {}

        assert procs[victim].wait(30) == -signal.SIGKILL
        assert agg.wait(30) == 0
        for i in c.ids:
            if i != victim:
                assert procs[i].wait(30) == 0, procs[i].text()
                assert f"client {i}: 2/2 rounds completed" in procs[i].text()
        assert [row["status"] for row in c.db_rows()] == ["completed", "completed"]


@pytest.mark.timeout(180)
def test_round_aborts_cleanly_when_too_few_survive(tmp_path: Path) -> None:
    """n=5, t=4: two clients die before sending their masked input, leaving 3 < t + 1."""
    victims = (4, 5)
    with Cluster(tmp_path, members=5, threshold=4, stage_timeout=3.0) as c:
        agg = c.start_aggregator(rounds=1)
        procs = c.start_clients(c.ids, faults={v: ["kill:0:MASKED_INPUT"] for v in victims})
        row = c.wait_round_ended(0)
        assert row["status"] == "aborted"
        assert "round aborted" in row["reason"] and "threshold" in row["reason"], row
        assert row["included"] is None  # no aggregates row
        assert agg.wait(30) == 1  # the one round asked for did not complete
        npy, js = c.round_files(0)
        assert not npy.exists() and not js.exists()
        assert not c.output.exists() or not list(c.output.iterdir())  # not even a temp file
        assert "round 0 aborted in MASKED_INPUT" in agg.text()
        for v in victims:
            assert procs[v].wait(30) == -signal.SIGKILL
        for i in (1, 2, 3):
            assert procs[i].wait(30) == 1, procs[i].text()  # 0 of the 1 round asked for
            assert "round 0 ended for this client: round aborted" in procs[i].text()
            assert f"client {i}: 0/1 rounds completed" in procs[i].text()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_aggregator_killed_mid_round_and_restarted(tmp_path: Path) -> None:
    """Round 0 completes; every client stalls before advertising in round 1; the aggregator is
    SIGKILLed with round 1 open and restarted on the same port, state and output: round 1 is marked
    aborted (never resumed), round 2 completes under a fresh session, round 0 is untouched."""
    stage_timeout = 5.0
    with Cluster(tmp_path, members=4, threshold=3, stage_timeout=stage_timeout) as c:
        agg = c.start_aggregator(rounds=3)
        first = c.start_clients(
            c.ids, rounds=3, faults={i: ["delay:1:ADVERTISE_KEYS:120"] for i in c.ids}
        )
        c.assert_aggregate(0, included=c.ids)
        npy0, js0 = c.round_files(0)
        npy0_bytes, js0_bytes = npy0.read_bytes(), js0.read_bytes()
        row0 = c.db_round(0)
        assert row0 is not None and row0["status"] == "completed"

        c.wait_log(agg, "round 1 open", 30)
        agg.popen.send_signal(signal.SIGKILL)
        assert agg.wait(10) == -signal.SIGKILL
        row1 = c.db_round(1)
        assert row1 is not None and row1["status"] == "open", "killed before round 1 could end"
        for p in first.values():  # the stalled clients go with it
            p.kill()

        agg2 = c.start_aggregator(rounds=1, same_port=True)
        c.wait_log(agg2, "round 1 was interrupted by a restart", 10)
        row1 = c.db_round(1)
        assert row1 is not None and row1["status"] == "aborted"
        assert row1["reason"] == "aggregator restarted during the round"

        fresh = c.start_clients(c.ids, rounds=1)
        summary = c.assert_aggregate(2, included=c.ids)
        assert agg2.wait(30) == 0
        for p in fresh.values():
            assert p.wait(30) == 0, p.text()

        rows = {row["round"]: row for row in c.db_rows()}
        assert [(r, rows[r]["status"]) for r in sorted(rows)] == [
            (0, "completed"),
            (1, "aborted"),
            (2, "completed"),
        ]
        sessions = {rows[r]["session_id"] for r in rows}
        assert len(sessions) == 3 and summary["session_id"] == rows[2]["session_id"]
        # Earlier results intact: files byte-identical, database row unchanged.
        assert npy0.read_bytes() == npy0_bytes and js0.read_bytes() == js0_bytes
        assert rows[0] == row0
        assert rows[0]["sha256"] == hashlib.sha256(npy0_bytes).hexdigest()
        assert not c.round_files(1)[0].exists() and not c.round_files(1)[1].exists()
        c.assert_aggregate(0, included=c.ids)
