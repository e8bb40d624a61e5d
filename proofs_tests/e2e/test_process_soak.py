"""Soak over real processes (issue 8): epochs of rounds with clients SIGKILLed at random stages,
clients delayed past their deadline, and the aggregator SIGKILLed mid-round and restarted.

Every round the database calls completed must have published exactly the clipped sum of its
included clients (within the bound); every other round must have published nothing; session ids
are never reused. CI runs it for about a minute; ``make soak`` for longer
(``SECAGG_PROCESS_SOAK_SECONDS``).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import Cluster
from secagg import Stage

SECONDS = float(os.environ.get("SECAGG_PROCESS_SOAK_SECONDS", "45"))


@pytest.mark.slow
@pytest.mark.timeout(int(SECONDS) + 600)
def test_process_soak_random_kills_delays_and_restarts(tmp_path: Path) -> None:
    rng = random.Random(4242)  # the fault schedule (test only)
    stages = [s.name for s in Stage]
    stats = {"epochs": 0, "restarts": 0, "client_kills": 0, "delays": 0}
    with Cluster(tmp_path, members=7, threshold=4, stage_timeout=3.0) as c:
        start = time.monotonic()
        while time.monotonic() - start < SECONDS or stats["epochs"] < 2:
            rows = c.db_rows()
            first = rows[-1]["round"] + 1 if rows else 0
            rounds = 2
            agg = c.start_aggregator(rounds=rounds, same_port=stats["epochs"] > 0)
            faults: dict[int, list[str]] = {}
            for victim in rng.sample(c.ids, rng.randint(1, 2)):
                r = first + rng.randrange(rounds)
                if rng.random() < 0.7:
                    faults[victim] = [f"kill:{r}:{rng.choice(stages)}"]
                    stats["client_kills"] += 1
                else:
                    faults[victim] = [f"delay:{r}:{rng.choice(stages)}:5"]
                    stats["delays"] += 1
            clients = c.start_clients(c.ids, rounds=rounds, faults=faults)
            if stats["epochs"] % 2 == 1:  # every other epoch ends with a kill -9 mid-round
                c.wait_log(agg, f"round {first + 1} open", 90)
                time.sleep(rng.uniform(0.0, 1.5))
                agg.popen.send_signal(signal.SIGKILL)
                agg.wait(10)
                stats["restarts"] += 1
            else:
                assert agg.wait(180) == 0, agg.text()[-3000:]
            for p in clients.values():
                p.kill()
            stats["epochs"] += 1
        # A last clean run so the store sees the restart and aborts what was left open.
        rows = c.db_rows()
        final = rows[-1]["round"] + 1 if rows else 0
        c.start_aggregator(rounds=1, same_port=True)
        last = c.start_clients(c.ids, rounds=1)
        c.assert_aggregate(final, included=c.ids)
        for p in last.values():
            p.wait(60)

        rows = c.db_rows()
        assert len({row["session_id"] for row in rows}) == len(rows)
        completed = aborted = 0
        for row in rows:
            npy, js = c.round_files(row["round"])
            if row["status"] == "completed":
                c.assert_aggregate(row["round"])
                completed += 1
            else:
                assert row["status"] == "aborted", row
                assert not npy.exists() and not js.exists(), row
                aborted += 1
        print(f"process soak: {stats}, rounds completed {completed}, aborted {aborted}")
        assert completed >= 3
