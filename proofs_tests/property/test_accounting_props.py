"""Hypothesis properties of the accountants (threats.md DP-07, DP-10).

* Calibration never overshoots: for every (q, steps, target, accountant) on a grid, the returned
  noise multiplier's epsilon, computed by the same accountant, is at most the target.
* Epsilon falls as noise rises, and rises with steps (RDP: cheap enough for many examples).
* The Zhu-Wang subsampled curve is never above the unamplified one and grows with q.
* Distributed DDG: fewer survivors never cost less.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dp import accounting as A

DELTA = 1e-5

# A PLD evaluation costs up to ~1 s when sigma < 1; this grid keeps sigma >= ~0.8 so that the
# whole file runs in about 15 s on two cores.
GRID = st.tuples(
    st.sampled_from([0.02, 0.1]),  # sample rate
    st.sampled_from([50, 200]),  # steps
    st.sampled_from([0.5, 1.0, 2.0]),  # target epsilon
)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(GRID, st.sampled_from(["pld", "rdp"]))
def test_calibration_never_overshoots(point: tuple[float, int, float], accountant: str) -> None:
    q, steps, target = point
    sigma = A.noise_multiplier_for(target, q, steps, DELTA, accountant)
    assert A.epsilon(q, sigma, steps, DELTA, accountant) <= target


@settings(max_examples=2, deadline=None)
@given(GRID.filter(lambda p: p[0] == 0.1))
def test_calibration_never_overshoots_prv(point: tuple[float, int, float]) -> None:
    q, steps, target = point
    sigma = A.noise_multiplier_for(target, q, steps, DELTA, "prv")
    assert A.epsilon(q, sigma, steps, DELTA, "prv") <= target


@settings(max_examples=15, deadline=None)
@given(
    q=st.floats(0.001, 1.0),
    sigma=st.floats(0.5, 20.0),
    steps=st.integers(1, 2000),
)
def test_rdp_epsilon_is_monotone(q: float, sigma: float, steps: int) -> None:
    eps = A.epsilon(q, sigma, steps, DELTA, "rdp")
    assert eps >= 0
    assert A.epsilon(q, sigma * 1.1, steps, DELTA, "rdp") <= eps + 1e-9
    assert A.epsilon(q, sigma, steps + 10, DELTA, "rdp") >= eps - 1e-9


@settings(max_examples=40, deadline=None)
@given(
    q_lo=st.floats(0.0, 1.0),
    q_hi=st.floats(0.0, 1.0),
    scale=st.floats(0.01, 5.0),
)
def test_subsampled_rdp_is_bounded_and_monotone(q_lo: float, q_hi: float, scale: float) -> None:
    q_lo, q_hi = sorted((q_lo, q_hi))

    def curve(a: int) -> float:
        return scale * a

    base = A.subsampled_rdp(curve, 1.0)
    lo, hi = A.subsampled_rdp(curve, q_lo), A.subsampled_rdp(curve, q_hi)
    assert all(0.0 <= x <= y + 1e-9 <= z + 2e-9 for x, y, z in zip(lo, hi, base, strict=True))


@settings(max_examples=30, deadline=None)
@given(
    sigma=st.floats(0.5, 30.0),
    n=st.integers(1, 300),
    q=st.floats(0.01, 1.0),
    rounds=st.integers(1, 100),
)
def test_ddg_fewer_survivors_never_cost_less(sigma: float, n: int, q: float, rounds: int) -> None:
    def eps(k: int) -> float:
        e = A.DistributedDiscreteGaussianEvent(sigma, k, q, 30.0, 512, rounds=rounds)
        return A.account([e], DELTA).epsilon

    more, fewer = eps(n + 1), eps(n)
    assert math.isfinite(more) and fewer >= more - 1e-9
