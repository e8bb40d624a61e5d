"""Our secure aggregation in Flower's simulation engine (``flwr==1.42``, the ``flower``
extra) on the Ray backend with two workers: 100 clients, four dropping out at each of the five
stages; the unmasked weighted sum must equal the plain weighted sum of the included clients
bit for bit, the included set must be exactly those that uploaded, and nodes' state must have
moved between the two worker processes. A second round under distributed DP must include the
same clients and decode to the plain sum of updates within its noise. Runs ``flower_cases.py``
inside a private network namespace; skipped without Flower or without namespaces (not root)."""

from __future__ import annotations

import pytest

from proofs_tests.flower_sim import flower_available, run_in_netns
from proofs_tests.netns import require_netns


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flower_ray_100_clients_dropping_at_every_stage() -> None:
    if not flower_available():
        pytest.skip("Flower is not installed (the 'flower' extra)")
    require_netns()
    r = run_in_netns("proofs_tests.e2e.flower_cases", timeout=280)
    log = r["_log"][-4000:]
    assert r["completed"], (r["reason"], log)
    assert (r["k"], r["t"]) == (60, 41)
    # Dropped before uploading: out of the sum; dropped after uploading: in it.
    assert r["included"] == r["want_included"]
    assert len(r["included"]) == 100 - 12
    assert set(r["uploaded_then_dropped"]) <= set(r["included"])
    for stage, want in (("ADVERTISE_KEYS", 96), ("SHARE_KEYS", 92), ("MASKED_INPUT", 88)):
        assert len(r["answered"][stage]) == want, stage
    assert len(r["answered"]["CONSISTENCY"]) == 84 and len(r["answered"]["UNMASK"]) == 80
    assert r["weighted_equal"] and r["weight_total"] == r["want_weight_total"]
    assert r["mean_equal"] and r["global_close"]
    assert len(r["workers"]) == 2, r["workers"]
    assert r["moved"] > 0  # some node's stages ran in both workers: the state travelled
    # Round 2, distributed DP (DP-FedAvg): the same dropouts, the same members in the sum; the
    # decoded sum of updates is the plain one plus noise of the announced size (6 sigma).
    assert r["dp_completed"], r["dp_reason"]
    assert r["dp_included"] == r["want_included"]
    assert r["dp_max_delta_norm"] < 0.05  # below the clip: nothing was clipped
    sigma = r["dp_noise_stddev"]
    assert sigma > 0 and not r["dp_exact"]
    assert r["dp_max_error"] < 6 * sigma, (r["dp_max_error"], sigma)
    assert r["dp_global_close"]  # the strategy applied global + noisy mean update
    # Round 3, contribution verification on: the CHECK stage runs over Flower's messages, every
    # honest proof verifies (only the planned dropouts are missing), the sum is exact over the
    # same members.
    v = r["verified"]
    assert v["completed"], (v["reason"], log)
    assert v["norm_bound"] == (1 << 64) - 1
    assert len(v["refusals"]) == 20  # the planned dropouts only: no proof was refused
    assert all("drops out at" in why for why in v["refusals"].values())
    assert v["included"] == r["want_included"]
    assert v["answered"]["CHECK"] == v["answered"]["MASKED_INPUT"]  # nobody drops at CHECK
    assert len(v["answered"]["MASKED_INPUT"]) == 88
    assert v["weighted_equal"] and v["weight_total_equal"] and r["verified_global_close"]
