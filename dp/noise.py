"""Integer noise for distributed DP: the discrete Gaussian and the Skellam distribution.

Both samplers are vectorised rejection samplers over an *exact integer* proposal, the discrete
Laplace of Canonne, Kamath and Steinke 2020 ("The Discrete Gaussian for Differential Privacy",
CKS20, Algorithm 2), fed only by a :class:`~dp._random.RandomSource`:

* :func:`discrete_gaussian` is CKS20 Algorithm 3: propose ``Y ~ DLap(t)``, ``t = floor(sigma)+1``,
  accept with probability ``exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))``.
* :func:`poisson` proposes ``floor(lam) + DLap(t)``, ``t = floor(sqrt(lam))+1``, and accepts with
  probability ``P(k) / (M q(k))`` computed in the log domain with Loader's saddle-point form of
  the Poisson pmf (no cancellation for large ``lam``). ``log P(k) + |k - floor(lam)|/t`` is
  concave on each side of ``floor(lam)``, so ``M`` is found exactly by checking both peaks.
* :func:`skellam` is the difference of two independent Poissons with equal means.

Precision (why float64 is acceptable here, docs/threats.md DP-01/DP-02). Outputs are integers on a
data-independent lattice; only the *probabilities* of the integers are approximated. Every
Bernoulli trial compares a 53-bit uniform with a probability in ``[e^-1, 1]``: an acceptance
``exp(-x)`` is split into ``floor(x)`` Bernoulli(1/e) trials and one Bernoulli(exp(-frac(x)))
trial, so each comparison has relative error below ``2^-50``. A candidate with proposal depth
``v = |y - centre| // t`` and exponent ``x`` goes through ``v + floor(x) + 3`` comparisons, and
``x`` itself carries an absolute error below ``(x + 1) 2^-50`` (Loader's form keeps this true
for the Poisson pmf at any ``lam``). Every value whose exact probability is at least ``e^-700``
has ``x <= 705`` and ``v <= 190``, so its sampled probability is within a factor
``exp(+-SAMPLER_LOG_PMF_ERROR)`` of the exact one, normalisation included (twice that for a
Skellam, a difference of two draws); all other values together have mass below ``1e-300``.
Consequence for accounting, with ``a = m d SAMPLER_LOG_PMF_ERROR`` for ``m`` summed shares per
coordinate and ``d`` coordinates (``2a`` for Skellam): a privacy-loss (epsilon) bound grows by at
most ``2a``, an RDP bound of order ``alpha`` by at most ``(2 alpha - 1) a / (alpha - 1)``; for
``m = 1000``, ``d = 10^6`` that is ``a = 0.004``. For a fully exact (and about 1000x slower)
sampler, use opendp (docs/dp-lora-notes.md section 5).

Security: the rejection loops run over whole vectors, so the running time depends on the noise
only through batch-level retry counts; still, sample outside any timed path (docs/threats.md DP-03).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dp._errors import InvalidParameter
from dp._random import RandomSource, random_bits, uniform_below, uniform_floats

__all__ = [
    "MAX_POISSON_MEAN",
    "MAX_SIGMA2",
    "SAMPLER_LOG_PMF_ERROR",
    "discrete_gaussian",
    "discrete_gaussian_variance",
    "poisson",
    "skellam",
]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
B = npt.NDArray[np.bool_]

SAMPLER_LOG_PMF_ERROR = 2.0**-38
"""Bound on ``|log P_sampled(y) - log P_exact(y)|`` where ``P_exact(y) >= e^-700`` (see above)."""

MAX_SIGMA2 = 2.0**80
"""Largest discrete Gaussian ``sigma^2`` accepted (keeps ``t * depth`` inside int64)."""

MAX_POISSON_MEAN = 2.0**60
"""Largest Poisson mean accepted (keeps ``k`` and the envelope search inside int64/float64)."""

_EXP_M1 = math.exp(-1.0)
_MAX_EXPONENT = 1000.0  # exp(-1000) < 1e-434: such candidates are rejected without trials
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_ENVELOPE_SLACK = 2.0**-36  # added to log M; a constant factor cancels in the normalisation


def _bernoulli_exp(x: F64, rng: RandomSource) -> B:
    """One Bernoulli(exp(-x_i)) draw per ``x_i >= 0`` (CKS20 Algorithm 1, split by whole units)."""
    x = np.minimum(x, _MAX_EXPONENT + 1.0)
    whole = np.floor(x)
    ok = uniform_floats(rng, x.size) < np.exp(-(x - whole))
    ok &= x <= _MAX_EXPONENT
    rem = whole.astype(np.int64)
    idx = np.flatnonzero(ok & (rem > 0))
    while idx.size:
        passed = uniform_floats(rng, idx.size) < _EXP_M1
        ok[idx[~passed]] = False
        rem[idx] -= 1
        idx = idx[passed & (rem[idx] > 0)]
    return ok


def _geometric_e(n: int, rng: RandomSource) -> I64:
    """``n`` draws of the number of Bernoulli(1/e) successes before the first failure."""
    out = np.zeros(n, dtype=np.int64)
    idx = np.arange(n)
    while idx.size:
        idx = idx[uniform_floats(rng, idx.size) < _EXP_M1]
        out[idx] += 1
    return out


def _discrete_laplace(t: int, m: int, rng: RandomSource) -> I64:
    """Up to ``m`` draws of DLap(t), P(y) proportional to exp(-|y|/t) (CKS20 Algorithm 2).

    Rejected proposals are dropped, so fewer than ``m`` values come back (about 0.6 m).
    """
    u = uniform_below(rng, t, m)
    keep = uniform_floats(rng, m) < np.exp(-u / t)  # Bernoulli(exp(-u/t)), u/t in [0, 1)
    u = u[keep]
    x = u + t * _geometric_e(u.size, rng)
    negative = random_bits(rng, x.size)
    keep = ~(negative & (x == 0))  # +0 and -0 would double-count zero
    signed: I64 = np.where(negative, -x, x)[keep]
    return signed


def _fill(size: int, batch: Callable[[int], I64]) -> I64:
    """Concatenate accepted values from ``batch(m)`` until ``size`` are available."""
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        got = batch(int(2.2 * need) + 64)  # both samplers accept about half
        take = min(got.size, need)
        out[filled : filled + take] = got[:take]
        filled += take
    return out


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
        raise InvalidParameter(f"size must be a non-negative integer, got {size!r}")
    return int(size)


def discrete_gaussian(sigma2: float, size: int, rng: RandomSource) -> I64:
    """``size`` i.i.d. draws of N_Z(0, sigma2): P(y) proportional to exp(-y^2 / (2 sigma2)).

    ``sigma2`` is the scale parameter; the variance is slightly below it for small ``sigma2``
    (see :func:`discrete_gaussian_variance`).

    Security: ``rng`` must be the OS CSPRNG on any release path; callers check that.
    """
    size = _check_size(size)
    if not (math.isfinite(sigma2) and 0.0 <= sigma2 <= MAX_SIGMA2):
        raise InvalidParameter(f"sigma2 must be in [0, 2^80], got {sigma2!r}")
    if sigma2 == 0.0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    t = math.floor(math.sqrt(sigma2)) + 1
    shift = sigma2 / t

    def batch(m: int) -> I64:
        y = _discrete_laplace(t, m, rng)
        d = np.abs(y).astype(np.float64) - shift
        return y[_bernoulli_exp(d * d / (2.0 * sigma2), rng)]

    return _fill(size, batch)


def discrete_gaussian_variance(sigma2: float) -> float:
    """Variance of N_Z(0, sigma2), by direct summation; it is below ``sigma2`` (CKS20 Cor. 9).

    For ``sigma2 >= 64`` the deficit is below ``sigma2 * exp(-2 pi^2 sigma2) < 1e-500``
    (Poisson summation), so ``sigma2`` itself is returned.
    """
    if not (math.isfinite(sigma2) and sigma2 >= 0.0):
        raise InvalidParameter(f"sigma2 must be finite and non-negative, got {sigma2!r}")
    if sigma2 >= 64.0:
        return sigma2
    if sigma2 == 0.0:
        return 0.0
    half = math.ceil(40.0 * math.sqrt(sigma2)) + 2
    y = np.arange(1, half + 1, dtype=np.float64)
    w = np.exp(-(y * y) / (2.0 * sigma2))
    return min(sigma2, float(2.0 * np.sum(y * y * w) / (1.0 + 2.0 * np.sum(w))))


# --- Poisson ---------------------------------------------------------------------------------

# Stirling-series error, stirlerr(k) = log k! - (k + 1/2) log k + k - log sqrt(2 pi), for k <= 15.
_STIRLERR_TABLE = np.array(
    [0.0]
    + [math.lgamma(k + 1.0) - (k + 0.5) * math.log(k) + k - _HALF_LOG_2PI for k in range(1, 16)],
    dtype=np.float64,
)


def _stirlerr(k: F64) -> F64:
    """stirlerr(k) for integer-valued k >= 1 (table below 16, 5-term series above)."""
    small = k <= 15
    out = np.empty_like(k)
    out[small] = _STIRLERR_TABLE[k[small].astype(np.int64)]
    kb = k[~small]
    inv2 = 1.0 / (kb * kb)
    series = 1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - inv2 / 1188) * inv2) * inv2) * inv2
    out[~small] = series / kb
    return out


def _bd0(k: F64, lam: float, diff: F64) -> F64:
    """Loader's deviance ``k log(k/lam) + lam - k`` with ``diff = k - lam`` given accurately."""
    s = k + lam
    near = np.abs(diff) < 0.1 * s
    out = np.empty_like(k)
    far = ~near
    out[far] = k[far] * np.log(k[far] / lam) - diff[far]  # |log(k/lam)| > 0.2: no cancellation
    if near.any():
        # (k - lam) v + 2k sum_j v^(2j+1)/(2j+1), v = (k - lam)/(k + lam), |v| < 0.1.
        v = diff[near] / s[near]
        v2 = v * v
        term = 2.0 * k[near] * v
        series = diff[near] * v
        vmax2 = float(np.max(v2))
        j = 1
        while j < 12 and vmax2**j > 1e-18:  # stop once every remaining term is negligible
            term = term * v2
            series = series + term / (2 * j + 1)
            j += 1
        out[near] = series
    return out


def _log_poisson_pmf(k: I64, lam: float, lam_int: int) -> F64:
    """log P(k) for Poisson(lam), stable for huge ``lam`` (Loader 2000, saddle point)."""
    kf = k.astype(np.float64)
    diff = (k - lam_int).astype(np.float64) - (lam - lam_int)
    out = np.full(k.shape, -lam, dtype=np.float64)  # k == 0
    pos = k > 0
    kp = kf[pos]
    out[pos] = -_stirlerr(kp) - _bd0(kp, lam, diff[pos]) - _HALF_LOG_2PI - 0.5 * np.log(kp)
    return out


@dataclass(frozen=True, slots=True)
class _PoissonEnvelope:
    """``floor(lam) + DLap(t)`` scaled by ``exp(log_m)`` lies above the Poisson(lam) pmf."""

    lam: float
    centre: int
    t: int
    log_m: float

    def log_ratio(self, k: I64) -> F64:
        """``log P(k) - log q(k - centre)`` up to the DLap normalising constant."""
        log_p = _log_poisson_pmf(k, self.lam, self.centre)
        return log_p + np.abs(k - self.centre).astype(np.float64) / self.t


def _poisson_envelope(lam: float) -> _PoissonEnvelope:
    """Find ``M = max_k P(k) / q(k)`` exactly: ``log_ratio`` is concave on ``[0, centre]`` and on
    ``[centre, inf)`` (log-concave pmf plus a linear term), with its peaks where the increments
    ``log(lam/(k+1)) -+ 1/t`` change sign, i.e. near ``lam e^{-1/t}`` and ``lam e^{1/t}``."""
    centre = math.floor(lam)
    t = math.floor(math.sqrt(lam)) + 1
    probe = _PoissonEnvelope(lam, centre, t, 0.0)
    width = 2 + math.ceil(lam * 2.0**-48)  # covers float error in locating the peaks
    peaks = [0, centre, math.floor(lam * math.exp(-1.0 / t)), math.floor(lam * math.exp(1.0 / t))]
    cand = np.unique(
        np.clip(np.concatenate([np.arange(p - width, p + width + 1) for p in peaks]), 0, None)
    ).astype(np.int64)
    log_m = float(np.max(probe.log_ratio(cand))) + _ENVELOPE_SLACK
    return _PoissonEnvelope(lam, centre, t, log_m)


def poisson(lam: float, size: int, rng: RandomSource) -> I64:
    """``size`` i.i.d. Poisson(lam) draws by discrete-Laplace rejection (module docstring)."""
    size = _check_size(size)
    if not (math.isfinite(lam) and 0.0 <= lam <= MAX_POISSON_MEAN):
        raise InvalidParameter(f"lam must be in [0, 2^60], got {lam!r}")
    if lam == 0.0 or size == 0:
        return np.zeros(size, dtype=np.int64)
    env = _poisson_envelope(lam)

    def batch(m: int) -> I64:
        k = env.centre + _discrete_laplace(env.t, m, rng)
        k = k[k >= 0]
        return k[_bernoulli_exp(np.maximum(env.log_m - env.log_ratio(k), 0.0), rng)]

    return _fill(size, batch)


def skellam(variance: float, size: int, rng: RandomSource) -> I64:
    """``size`` i.i.d. draws of Skellam(variance/2, variance/2): mean 0, the given variance.

    Closed under summation: n shares with variances v_i sum to Skellam with variance sum(v_i)
    exactly, which is what makes it the distributed-DP noise of Agarwal, Kairouz, Liu 2021.
    """
    size = _check_size(size)
    if not (math.isfinite(variance) and 0.0 <= variance <= 2.0 * MAX_POISSON_MEAN):
        raise InvalidParameter(f"variance must be in [0, 2^61], got {variance!r}")
    lam = variance / 2.0
    return poisson(lam, size, rng) - poisson(lam, size, rng)
