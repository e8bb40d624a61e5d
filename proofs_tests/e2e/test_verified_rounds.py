"""End to end with contribution verification on (protocol.md §7, SPEC.md D12): a real
aggregator and client processes over mTLS, ``serve --norm-bound``. Every upload carries a
commitment; at the CHECK stage every client proves its norm bound and that its upload is its
committed vector, masked, and the aggregator verifies before unmasking. Client 4's vector is
above the bound: it cannot prove, sits the round out, and the others' round completes with
their exact sum. A colluding pair of forgers is excluded, named, and refused in the next round
until an operator clears them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from proofs_tests.e2e.cluster import Cluster
from secagg import RoundConfig

D = 200


@pytest.mark.timeout(240)
def test_verified_round_over_grpc_excludes_an_over_bound_client(tmp_path: Path) -> None:
    with Cluster(
        tmp_path, members=4, threshold=2, dimension=D, stage_timeout=20.0, first_round_wait=20.0
    ) as c:
        m = RoundConfig(n=4, t=2, d=D, clip=c.clip).encoding.max_abs
        # Honest inputs (normal, sd 0.7, clipped) have E[x^2] < 0.5; all-ones is 1 per coordinate.
        bound = int(0.75 * D * m * m)
        c.inputs[4] = np.ones(D)
        np.save(c.input_path(4), c.inputs[4], allow_pickle=False)
        agg = c.start_aggregator(rounds=1, extra=["--norm-bound", str(bound)])
        clients = c.start_clients(c.ids)
        summary = c.assert_aggregate(0, included=[1, 2, 3])
        assert summary["norm_bound"] == bound and summary["upload_dim"] == D
        assert summary["rejected"] == {}
        assert 4 not in summary["stage_sets"]["U1"]  # it never advertised: no proof exists
        assert agg.wait(60) == 0
        for i, p in clients.items():  # client 4 did not complete the round it was asked for
            assert p.wait(60) == (1 if i == 4 else 0), p.text()
        assert "refused" in clients[4].text() and "above the round's bound" in clients[4].text()
        assert "norm proofs" in agg.text() and "Traceback" not in agg.text()


@pytest.mark.timeout(300)
def test_colluding_forgers_over_grpc_are_named_refused_next_round_and_cleared(
    tmp_path: Path,
) -> None:
    """The review's colluding pair over real gRPC: members 2 and 4 run a deviating state
    machine (in this process, over their own mTLS identities) that uploads a vector 25x over
    the bound under row commitments hiding opposite H components. Both proofs fail at the
    CHECK stage: round 0 publishes the exact sum of 1, 3, 5, 6, 7 and names 2 and 4; in round 1
    both are refused (PERMISSION_DENIED, with the reason), and ``clear-cheater`` lifts it."""
    import threading

    from client.agent import AgentOptions, ClientAgent
    from proofs_tests.adversarial.cheaters import factory
    from proofs_tests.adversarial.test_verification_attacks import _forger
    from secagg import ClientPolicy

    with Cluster(
        tmp_path, members=7, threshold=4, dimension=D, stage_timeout=20.0, first_round_wait=20.0
    ) as c:
        m = RoundConfig(n=7, t=4, d=D, clip=c.clip).encoding.max_abs
        bound = D * m * m
        agg = c.start_aggregator(rounds=2, extra=["--norm-bound", str(bound)])
        honest = c.start_clients([1, 3, 5, 6, 7], rounds=2)
        x_big = [0] * D
        x_big[0] = 40 * m
        reports: dict[int, object] = {}

        def run(u: int, sign: int) -> None:
            opts = AgentOptions(
                aggregator=c.address, consortium=c.consortium, client_id=u, rounds=1,
                policy=ClientPolicy(), wait_timeout=120.0,
            )  # fmt: skip
            agent = ClientAgent(
                opts,
                lambda cfg: np.zeros(cfg.d),
                client_factory=factory({u: _forger(x_big, bound, b"g%d" % u, sign)}),
            )
            try:
                reports[u] = agent.run()
            except Exception as exc:  # the service refuses the proof: the agent reports it
                reports[u] = exc
            finally:
                agent.close()

        threads = [threading.Thread(target=run, args=a) for a in ((2, 1), (4, -1))]
        for t in threads:
            t.start()
        summary = c.assert_aggregate(0, included=[1, 3, 5, 6, 7])
        assert set(summary["cheaters"]) == {"2", "4"}
        assert all("proof rejected" in why for why in summary["cheaters"].values())
        for t in threads:
            t.join(120)
        for u in (2, 4):
            assert "proof rejected" in str(reports[u]), reports[u]
        # Round 1: the named members are refused at the door; the round goes on without them.
        run(2, 1)
        assert "PERMISSION_DENIED" in str(reports[2]) and "suspended" in str(reports[2])
        summary1 = c.assert_aggregate(1, included=[1, 3, 5, 6, 7])
        assert summary1["cheaters"] == {}
        assert agg.wait(60) == 0
        for p in honest.values():
            assert p.wait(60) == 0, p.text()
        assert "suspended" in agg.text() and "Traceback" not in agg.text()
        listed = c.run_cli(["-m", "aggregator.cli", "cheaters", "--state", str(c.state)])
        assert "2\tround 0" in listed and "4\tround 0" in listed
        c.run_cli(["-m", "aggregator.cli", "clear-cheater", "--state", str(c.state), "--id", "2"])
        listed = c.run_cli(["-m", "aggregator.cli", "cheaters", "--state", str(c.state)])
        assert "2\t" not in listed and "4\tround 0" in listed
