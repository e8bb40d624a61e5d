"""Integer noise samplers: exact pmfs by chi-square, moments, precision of the float parts.

Every sample is drawn from a fixed ``SeededRandom`` so the statistics are the same on every run
and cannot flake; the thresholds are the p = 1e-6 quantiles.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dp import InvalidParameter, SeededRandom, discrete_gaussian, poisson, skellam
from dp.noise import (
    _bernoulli_exp,
    _log_poisson_pmf,
    _poisson_envelope,
    discrete_gaussian_variance,
)

N = 200_000
Z_1E6 = 4.753  # upper 1e-6 quantile of N(0, 1)


def chi2_critical(df: int, z: float = Z_1E6) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile with ``df`` degrees of freedom."""
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi2_statistic(samples: np.ndarray, support: np.ndarray, pmf: np.ndarray) -> tuple[float, int]:
    """Pearson chi-square of integer ``samples`` against ``pmf`` on ``support`` (sums to ~1).

    Cells with expected count < 5 are pooled into the two tails.
    """
    n = samples.size
    expected = n * pmf
    keep = expected >= 5.0
    lo, hi = support[keep].min(), support[keep].max()
    inner = (support >= lo) & (support <= hi)
    counts = np.array([np.count_nonzero(samples == v) for v in support[inner]], dtype=float)
    exp_inner = expected[inner]
    left_obs = np.count_nonzero(samples < lo)
    right_obs = np.count_nonzero(samples > hi)
    left_exp = n * pmf[support < lo].sum()
    right_exp = n * pmf[support > hi].sum()
    obs = list(counts)
    exp = list(exp_inner)
    for o, e in ((left_obs, left_exp), (right_obs, right_exp)):
        if e >= 5.0:
            obs.append(o)
            exp.append(e)
        else:  # too little mass to test by itself: fold into the nearest edge cell
            assert o <= 5 + 10 * e, "tail heavier than the exact pmf allows"
    o_arr, e_arr = np.array(obs), np.array(exp)
    return float(np.sum((o_arr - e_arr) ** 2 / e_arr)), o_arr.size - 1


def dg_pmf(sigma2: float) -> tuple[np.ndarray, np.ndarray]:
    half = math.ceil(40 * math.sqrt(sigma2)) + 5
    y = np.arange(-half, half + 1)
    w = np.exp(-(y.astype(float) ** 2) / (2 * sigma2))
    return y, w / w.sum()


def log_poisson(lam: float, ks: np.ndarray) -> np.ndarray:
    return np.array([-lam + k * math.log(lam) - math.lgamma(k + 1.0) for k in ks])


def poisson_pmf(lam: float) -> tuple[np.ndarray, np.ndarray]:
    top = int(lam + 40 * math.sqrt(lam) + 40)
    k = np.arange(0, top + 1)
    return k, np.exp(log_poisson(lam, k))


def skellam_pmf(variance: float) -> tuple[np.ndarray, np.ndarray]:
    _, p = poisson_pmf(variance / 2)
    full = np.correlate(p, p, mode="full")  # P(X - Y = k) = sum_j p(j + k) p(j)
    k = np.arange(-(p.size - 1), p.size)
    return k, full / full.sum()


# --- discrete Gaussian ---------------------------------------------------------------------------


@pytest.mark.parametrize(("sigma", "seed"), [(1.5, 1), (20.0, 2)])
def test_discrete_gaussian_matches_exact_pmf(sigma: float, seed: int) -> None:
    x = discrete_gaussian(sigma * sigma, N, SeededRandom(f"dg-chi2/{seed}"))
    support, pmf = dg_pmf(sigma * sigma)
    stat, df = chi2_statistic(x, support, pmf)
    assert stat < chi2_critical(df), (stat, df)


def test_chi_square_has_power_against_a_rounded_continuous_gaussian() -> None:
    """Negative control: the test above rejects the classic float shortcut at sigma = 1.5."""
    gen = np.random.default_rng(0)  # test-only data, not noise
    x = np.rint(gen.normal(0.0, 1.5, N)).astype(np.int64)
    support, pmf = dg_pmf(1.5**2)
    stat, df = chi2_statistic(x, support, pmf)
    assert stat > chi2_critical(df)


@pytest.mark.parametrize("sigma2", [0.3, 4.0, 1e4, 2.0**40])
def test_discrete_gaussian_moments(sigma2: float) -> None:
    x = discrete_gaussian(sigma2, N, SeededRandom(f"dg-moments/{sigma2}")).astype(float)
    var = discrete_gaussian_variance(sigma2)
    assert abs(x.mean()) < 5 * math.sqrt(var / N)
    kurt_bound = 5 * var * math.sqrt(2.0 / N) * 1.5  # sd of the sample variance, with slack
    assert abs(x.var() - var) < kurt_bound


def test_discrete_gaussian_variance_is_exact_and_below_sigma2() -> None:
    for sigma2 in (0.05, 0.25, 1.0, 9.0, 63.0):
        support, pmf = dg_pmf(sigma2)
        exact = float(np.sum(support.astype(float) ** 2 * pmf))
        assert discrete_gaussian_variance(sigma2) == pytest.approx(exact, rel=1e-12)
        assert discrete_gaussian_variance(sigma2) <= sigma2
    assert discrete_gaussian_variance(64.0) == 64.0
    assert discrete_gaussian_variance(0.0) == 0.0


def test_noise_is_integer_and_zero_scale_is_zero() -> None:
    rng = SeededRandom("int")
    for sample in (discrete_gaussian(7.3, 100, rng), skellam(7.3, 100, rng), poisson(7.3, 9, rng)):
        assert sample.dtype == np.int64  # threats.md DP-02: integer noise, exact lattice
    assert not discrete_gaussian(0.0, 10, rng).any()
    assert not skellam(0.0, 10, rng).any()
    assert discrete_gaussian(1.0, 0, rng).shape == (0,)


@pytest.mark.parametrize(
    "call",
    [
        lambda r: discrete_gaussian(-1.0, 3, r),
        lambda r: discrete_gaussian(float("nan"), 3, r),
        lambda r: discrete_gaussian(1.0, -1, r),
        lambda r: poisson(float("inf"), 3, r),
        lambda r: poisson(-0.5, 3, r),
        lambda r: skellam(-2.0, 3, r),
        lambda r: skellam(1.0, 2.5, r),
    ],
)
def test_bad_sampler_parameters_raise(call: object) -> None:
    with pytest.raises(InvalidParameter):
        call(SeededRandom(0))  # type: ignore[operator]


# --- Poisson and Skellam --------------------------------------------------------------------------


@pytest.mark.parametrize(("lam", "seed"), [(0.3, 1), (4.0, 2), (60.0, 3)])
def test_poisson_matches_exact_pmf(lam: float, seed: int) -> None:
    x = poisson(lam, N, SeededRandom(f"poisson-chi2/{seed}"))
    support, pmf = poisson_pmf(lam)
    stat, df = chi2_statistic(x, support, pmf)
    assert stat < chi2_critical(df), (stat, df)


@pytest.mark.parametrize(("variance", "seed"), [(3.0, 1), (200.0, 2)])
def test_skellam_matches_exact_pmf(variance: float, seed: int) -> None:
    x = skellam(variance, N, SeededRandom(f"skellam-chi2/{seed}"))
    support, pmf = skellam_pmf(variance)
    stat, df = chi2_statistic(x, support, pmf)
    assert stat < chi2_critical(df), (stat, df)


@pytest.mark.parametrize("variance", [0.02, 2.0, 5e4, 2.0**44, 2.0**58])
def test_skellam_mean_zero_and_variance(variance: float) -> None:
    x = skellam(variance, N, SeededRandom(f"skellam-moments/{variance}")).astype(float)
    assert abs(x.mean()) < 5 * math.sqrt(variance / N)
    # Var of the sample variance is (2 + kurtosis excess) var^2 / N; Skellam excess = 1/variance.
    sd = variance * math.sqrt((2.0 + 1.0 / variance) / N)
    assert abs(x.var() - variance) < 5 * sd


def test_poisson_huge_mean_is_unbiased() -> None:
    lam = 2.0**50 + 0.37
    x = poisson(lam, N, SeededRandom("poisson-huge"))
    dev = (x - 2**50).astype(float) - 0.37  # exact in float: deviations are ~2^25
    assert abs(dev.mean()) < 5 * math.sqrt(lam / N)
    assert abs(dev.var() / lam - 1.0) < 5 * math.sqrt(2.0 / N)


def test_log_poisson_pmf_is_accurate() -> None:
    for lam in (0.01, 3.5, 250.0, 1e4):
        centre = math.floor(lam)
        top = int(lam + 30 * math.sqrt(lam) + 30)
        k = np.arange(0, top, dtype=np.int64)
        ref = log_poisson(lam, k)
        got = _log_poisson_pmf(k, lam, centre)
        # the reference itself loses ~1e-16 * lam * log(lam) to cancellation
        tol = 1e-12 + 1e-15 * lam * math.log(lam + 2) * 10
        assert np.max(np.abs(got - ref)) < tol, lam


@pytest.mark.parametrize("lam", [1e-9, 0.3, 1.0, 4.0, 9.99, 60.0, 12345.6, 2.0**40 + 0.5])
def test_poisson_envelope_dominates_the_pmf(lam: float) -> None:
    """The rejection constant M really is the maximum of P(k)/q(k): brute force around it."""
    env = _poisson_envelope(lam)
    sd = math.sqrt(lam)
    lo = max(0, env.centre - int(40 * sd) - 50)
    k = np.unique(
        np.concatenate([np.arange(0, 200), np.linspace(lo, env.centre + 40 * sd + 50, 20001)])
    ).astype(np.int64)
    ratio = env.log_ratio(k)
    assert np.max(ratio) <= env.log_m
    assert np.max(ratio) >= env.log_m - 1e-9  # and it is not loose


def test_bernoulli_exp_frequencies() -> None:
    rng = SeededRandom("bexp")
    for x0 in (0.0, 0.3, 1.0, 1.7, 5.2):
        hits = _bernoulli_exp(np.full(N, x0), rng)
        p = math.exp(-x0)
        assert abs(hits.mean() - p) < 5 * math.sqrt(p * (1 - p) / N + 1e-12)
    assert not _bernoulli_exp(np.full(10, 2000.0), rng).any()
