"""Whole rounds: sums match numpy (exact on the encoded integers for BFV, within the stated
bound for CKKS) with dropouts; the count, the layout and the switch between variants."""

from __future__ import annotations

import numpy as np
import pytest

from proofs_tests.he_helpers import REGISTRY, he_upload
from secagg import DeterministicRandom, RoundConfig, SimulationResult, Stage
from secagg.he import (
    HeAccumulator,
    HeKeyHolder,
    HeRoundConfig,
    HeSimulationResult,
    simulate_he,
    simulate_round,
)

SESSION = bytes(range(16))


def _inputs(n: int, d: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, 0.6, d) for _ in range(n)]  # some beyond the clip


def _exact_round(cfg: HeRoundConfig, xs: list[np.ndarray], drop: set[int]):  # type: ignore[no-untyped-def]
    """Drive the three roles by hand; return the release and the exact encoded sum."""
    holder = HeKeyHolder(REGISTRY, min_cohort=3)
    keys = holder.open_round(cfg)
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    enc = cfg.encoding
    expected = np.zeros(cfg.d, dtype=np.int64)
    for u, x in enumerate(xs, start=1):
        if u in drop:
            continue
        acc.add(u, he_upload(cfg, keys, u, x))
        expected += enc.to_signed(enc.encode(x, DeterministicRandom(u)))
    return holder.release(acc.close()), expected


def test_bfv_sum_is_exact_on_the_encoded_integers_with_dropouts() -> None:
    cfg = HeRoundConfig(n=6, d=9000, session_id=SESSION)
    xs = _inputs(6, 9000)
    rel, expected = _exact_round(cfg, xs, drop={2, 5})
    assert rel.count == 4 and rel.flood == 0
    assert np.array_equal(rel.int_sum, expected)
    truth = sum(np.clip(xs[u - 1], -1, 1) for u in (1, 3, 4, 6))
    assert np.max(np.abs(rel.aggregate - truth)) <= rel.error_bound


def test_ckks_without_flooding_recovers_the_exact_grid_sum() -> None:
    cfg = HeRoundConfig(n=6, d=5000, params="ckks-4096", flood=0, session_id=SESSION)
    rel, expected = _exact_round(cfg, _inputs(6, 5000, 1), drop={1})
    assert np.array_equal(rel.int_sum, expected)


@pytest.mark.parametrize("params", ["bfv-4096", "ckks-4096", "ckks-8192"])
def test_simulated_round_matches_numpy_within_the_bound(params: str) -> None:
    n, d = 8, 12_000
    xs = _inputs(n, d, 2)
    res = simulate_he(HeRoundConfig(n=n, d=d, params=params), xs, drops=[3, 7], seed=4)
    assert res.included == frozenset({1, 2, 4, 5, 6, 8}) and res.count == 6
    truth = sum(np.clip(xs[u - 1], -1, 1) for u in sorted(res.included))
    err = float(np.max(np.abs(res.aggregate - truth)))
    assert err <= res.error_bound
    lay = res.config.layout
    lo, hi = res.config.he_params.chunk_bounds()
    assert lay.chunks * lo <= res.upload_bytes <= lay.chunks * hi
    assert res.parameters_context_bytes <= 128


def test_ckks_release_is_flooded_by_at_most_the_stated_magnitude() -> None:
    cfg = HeRoundConfig(n=5, d=4000, params="ckks-4096", flood=200, session_id=SESSION)
    rel, expected = _exact_round(cfg, _inputs(5, 4000, 3), drop=set())
    noise = rel.int_sum - expected
    assert rel.flood == 200 and np.max(np.abs(noise)) <= 200
    assert np.count_nonzero(noise) > 3000  # noise was added to (almost) every coordinate
    assert rel.error_bound == pytest.approx((5 + 200) / cfg.encoding.scale)


def test_stage_keyed_drops_and_the_one_setting_switch() -> None:
    n, d = 5, 3000
    xs = _inputs(n, d, 5)
    drops = {Stage.MASKED_INPUT: [4]}
    he = simulate_round(HeRoundConfig(n=n, d=d), xs, drops, seed=1)
    pw = simulate_round(RoundConfig(n=n, t=3, d=d), xs, drops, seed=1)
    assert isinstance(he, HeSimulationResult) and isinstance(pw, SimulationResult)
    assert he.included == pw.included == frozenset({1, 2, 3, 5})
    assert np.max(np.abs(he.aggregate - pw.aggregate)) <= he.error_bound + pw.error_bound
    cfg = HeRoundConfig.from_round_config(RoundConfig(n=n, t=3, d=d))
    assert (cfg.n, cfg.d, cfg.encoding) == (n, d, RoundConfig(n=n, t=3, d=d).encoding)
