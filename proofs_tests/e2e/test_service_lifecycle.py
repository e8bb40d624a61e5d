"""End to end, the aggregator as a service an operator runs (issue 15): one process per port and
per state folder, a clean stop on SIGTERM, metrics and a health probe, and an aborted round that
names its real cause."""

from __future__ import annotations

import re
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import Cluster, free_port


@pytest.mark.timeout(120)
def test_a_second_aggregator_on_the_same_port_or_state_is_refused(tmp_path: Path) -> None:
    with Cluster(tmp_path, members=3, threshold=2) as c:
        first = c.start_aggregator(rounds=1, first_round_wait=60)
        # Same state folder, another port: the lock refuses it.
        port = c.port
        c.port = free_port()
        args = list(first.args[first.args.index("-m") :])
        args[args.index("--listen") + 1] = f"127.0.0.1:{c.port}"
        locked = c._spawn("same-state", args)
        assert locked.wait(30) == 2
        assert "in use by another aggregator (pid" in locked.text(), locked.text()
        # Same port, another state folder: the exclusive bind refuses it.
        args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
        args[args.index("--state") + 1] = str(tmp_path / "other-state")
        bound = c._spawn("same-port", args)
        assert bound.wait(30) == 2
        assert "cannot listen on 127.0.0.1:" in bound.text() and "in use" in bound.text()
        for p in (locked, bound):
            assert "Traceback" not in p.text() and len(p.text().strip().splitlines()) <= 2
        assert first.alive()
        # SIGTERM mid-round: a clean stop, the open round aborted, 128 + 15.
        c.wait_log(first, "round 0 open", 10)
        first.popen.send_signal(signal.SIGTERM)
        assert first.wait(30) == 128 + signal.SIGTERM
        assert "Traceback" not in first.text()
        row = c.db_round(0)
        assert row is not None and row["status"] == "aborted"
        assert row["reason"] == "the aggregator is shutting down"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, flags=re.M)
    assert m, f"{name} not in\n{text}"
    return float(m.group(1))


@pytest.mark.timeout(120)
def test_metrics_and_health_probe(tmp_path: Path) -> None:
    ops = free_port()
    with Cluster(tmp_path, members=4, threshold=3) as c:
        agg = c.start_aggregator(rounds=1, extra=["--metrics-listen", f"127.0.0.1:{ops}"])
        base = f"http://127.0.0.1:{ops}"
        assert _get(f"{base}/healthz") == (200, "ok\n")
        clients = c.start_clients(c.ids)
        c.assert_aggregate(0, included=c.ids)
        for p in clients.values():
            assert p.wait(30) == 0, p.text()
        code, text = _get(f"{base}/metrics")
        assert code == 200
        assert _metric(text, 'secagg_rounds_total{outcome="completed"}') == 1
        assert _metric(text, 'secagg_rounds_total{outcome="aborted"}') == 0
        assert _metric(text, 'secagg_round_clients_total{outcome="included"}') == 4
        assert _metric(text, 'secagg_stage_duration_seconds_count{stage="UNMASK"}') == 1
        assert _metric(text, 'secagg_rpc_bytes_total{direction="in",method="Submit"}') > 4 * 200
        assert _metric(text, 'secagg_rpcs_total{code="OK",method="Submit"}') == 4 * 5
        assert _metric(text, "secagg_registry_version") == 5
        assert _metric(text, "secagg_members") == 4
        assert _get(f"{base}/nope")[0] == 404
        assert agg.wait(30) == 0


@pytest.mark.timeout(120)
def test_a_round_members_decline_names_why(tmp_path: Path) -> None:
    """Members whose own policy refuses the round (here: they require verified contributions)
    say so; the round aborts at once with their reason, not with a count of silent members."""
    with Cluster(tmp_path, members=4, threshold=3, first_round_wait=60) as c:
        agg = c.start_aggregator(rounds=1)
        procs = {
            i: c._spawn(
                f"client-{i}",
                [
                    "-m",
                    "client.cli",
                    "join",
                    "--aggregator",
                    c.address,
                    "--consortium",
                    str(c.consortium),
                    "--id",
                    str(i),
                    "--input",
                    str(c.input_path(i)),
                    "--require-verification",
                ],
            )
            for i in c.ids
        }
        row = c.wait_round_ended(0, timeout=40)  # well before the 60 s first-round wait
        assert row["status"] == "aborted"
        assert "4 members declined the round's parameters" in row["reason"], row
        assert "does not verify contributions" in row["reason"], row
        assert agg.wait(30) == 1
        for p in procs.values():
            assert p.wait(30) == 1, p.text()
            assert "0/1 rounds completed" in p.text()
