"""End to end, happy path and a slow client: real aggregator and client processes over mTLS.

Thresholds: the client's policy (threats.md SA-03) refuses ``t <= (k + c) / 2`` with ``c`` the
tolerated corrupt neighbours, so a full graph of 10 needs t >= 6 and one of 5 needs t >= 3.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import Cluster


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ten_clients_three_rounds(tmp_path: Path) -> None:
    with Cluster(tmp_path, members=10, threshold=6, stage_timeout=5.0) as c:
        agg = c.start_aggregator(rounds=3)
        clients = c.start_clients(c.ids, rounds=3)
        sessions = set()
        for r in range(3):
            summary = c.assert_aggregate(r, included=c.ids)
            assert summary["round"] == r
            assert summary["dropped"] == [] and summary["rejected"] == {}
            sessions.add(summary["session_id"])
        assert len(sessions) == 3, "every round has a fresh session id"
        assert agg.wait(30) == 0
        for i, p in clients.items():
            assert p.wait(30) == 0, p.text()
            assert f"client {i}: 3/3 rounds completed" in p.text()
        rows = c.db_rows()
        assert [(row["round"], row["status"]) for row in rows] == [
            (0, "completed"),
            (1, "completed"),
            (2, "completed"),
        ]
        assert all(row["included"] == c.ids for row in rows)
        assert "Traceback" not in agg.text()


@pytest.mark.timeout(180)
def test_slow_client_misses_deadline_and_is_dropped(tmp_path: Path) -> None:
    stage_timeout = 3.0
    slow = 5
    with Cluster(tmp_path, members=5, threshold=3, stage_timeout=stage_timeout) as c:
        c.start_aggregator(rounds=1)
        late = f"delay:0:MASKED_INPUT:{stage_timeout + 6}"
        c.start_clients(c.ids, faults={slow: [late]})
        summary = c.assert_aggregate(0, included=[1, 2, 3, 4])
        assert summary["dropped"] == [slow]
        # It shared its keys (so its pairwise masks had to be rebuilt), then missed the deadline.
        assert slow in summary["stage_sets"]["U2"]
        assert slow not in summary["stage_sets"]["U3"]
        assert summary["timings"]["stages_s"]["MASKED_INPUT"] >= stage_timeout - 0.1
        assert c.wait_round_ended(0)["status"] == "completed"
