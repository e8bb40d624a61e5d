"""End to end with contribution verification on (protocol.md §7): real aggregator and client
processes over mTLS, ``serve --norm-bound``. Every upload carries a commitment and a norm proof
that the aggregator verifies before unmasking; the sum is checked against the commitments before
it is published. Client 4's vector is above the bound: it cannot prove, sits the round out, and
the others' round completes with their exact sum."""

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
        assert summary["norm_bound"] == bound and summary["upload_dim"] > D
        assert summary["rejected"] == {}
        assert 4 not in summary["stage_sets"]["U1"]  # it never advertised: no proof exists
        assert agg.wait(60) == 0
        for i, p in clients.items():
            assert p.wait(60) == 0, p.text()
        assert "refused" in clients[4].text() and "above the round's bound" in clients[4].text()
        assert "norm proofs" in agg.text() and "Traceback" not in agg.text()
