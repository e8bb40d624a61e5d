"""Closed-form bounds used by the distributed-DP encoder: rounding norm, noise tails, RDP.

All quantities are in the *integer* (scaled) domain. Sources:

* KLS21: Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
  Learning with Secure Aggregation", ICML 2021 (arXiv 2102.06387): Theorem 1 (conditional
  randomized rounding) and the distributed discrete Gaussian RDP bound, in the three-term form
  used by google-research/federated ``distributed_dp/accounting_utils.py``.
* AKL21: Agarwal, Kairouz, Liu, "The Skellam Mechanism for Differentially Private Federated
  Learning", NeurIPS 2021: the multi-dimensional Skellam RDP bound (same reference code).
* CKS20: Canonne, Kamath, Steinke 2020: N_Z(0, s^2) is s^2-subgaussian.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "ddg_rdp",
    "ddg_rho",
    "kls_tau",
    "log_tail_skellam",
    "log_tail_subgaussian",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "skellam_rdp",
    "skellam_rho",
]


def rounded_l2_bound(l2: float, beta: float, dim: int) -> float:
    """L2 norm bound after conditional randomized rounding of a vector of norm <= ``l2``.

    KLS21 Theorem 1: unconditionally ``l2 + sqrt(d)``; when re-rounding until the norm is below
    ``sqrt(l2^2 + d/4 + sqrt(2 log(1/beta)) (l2 + sqrt(d)/2))``, each attempt fails with
    probability at most ``beta``. The smaller of the two is used.
    """
    bound_1 = l2 + math.sqrt(dim)
    if beta == 0.0:
        return bound_1
    sq = l2 * l2 + 0.25 * dim + math.sqrt(2.0 * math.log(1.0 / beta)) * (l2 + 0.5 * math.sqrt(dim))
    return min(bound_1, math.sqrt(sq))


def rounded_l1_bound(l2_rounded: float, dim: int) -> float:
    """L1 bound of an integer vector with L2 norm <= ``l2_rounded``: ``L1 <= L2 min(sqrt d, L2)``.

    (``sqrt(d)`` by Cauchy-Schwarz; ``L2`` because integer coordinates satisfy ``|x| <= x^2``.)
    """
    return l2_rounded * min(math.sqrt(dim), l2_rounded)


def kls_tau(sigma2: float, num_shares: int) -> float:
    """KLS21's ``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k/(k+1))``: the distance (in the
    RDP bound) between a sum of ``n`` N_Z(0, sigma^2) and a single discrete Gaussian."""
    return float(_taus(sigma2, num_shares)[-1])


def _taus(sigma2: float, num_shares: int) -> npt.NDArray[np.float64]:
    """``tau_k`` for k = 1..num_shares (``tau_1 = 0``)."""
    j = np.arange(1, max(num_shares, 1), dtype=np.float64)
    steps = np.exp(-2.0 * math.pi**2 * sigma2 * j / (j + 1.0))
    return 10.0 * np.concatenate(([0.0], np.cumsum(steps)))


def _ddg_terms(
    l2: float, l1: float, sigma2: float, num_shares: int, dim: int
) -> tuple[npt.NDArray[np.float64], ...]:
    """Per k = 1..n: (a^2, 2 b tau + tau^2 d, (a + sqrt(d) tau)^2, tau d) of KLS21's bound.

    The sum of ``n`` shares is the sum of any ``k <= n`` of them plus independent noise (a
    post-processing), so the bound for every ``k`` holds; callers take the minimum over ``k``.
    That matters when the shares are small: ``tau`` grows with ``k``.
    """
    tau = _taus(sigma2, num_shares)
    k = np.arange(1, tau.size + 1, dtype=np.float64)
    a = l2 / np.sqrt(k * sigma2)
    b = l1 / np.sqrt(k * sigma2)
    return a * a, 2.0 * b * tau + tau * tau * dim, (a + math.sqrt(dim) * tau) ** 2, tau * dim


def ddg_rdp(order: float, l2: float, l1: float, sigma2: float, num_shares: int, dim: int) -> float:
    """RDP of order ``order`` of the sum of ``num_shares`` N_Z(0, sigma2)^d noise vectors added to
    a vector with L2/L1 sensitivity ``l2``/``l1`` (KLS21; min of its three bounds)."""
    if sigma2 <= 0.0:
        return math.inf
    a2, extra, t3, tau_d = _ddg_terms(l2, l1, sigma2, num_shares, dim)
    half = order / 2.0
    bound = np.minimum(np.minimum(half * a2 + tau_d, half * (a2 + extra)), half * t3)
    return float(np.min(bound))


def ddg_rho(l2: float, l1: float, sigma2: float, num_shares: int, dim: int) -> float:
    """A zCDP ``rho`` (RDP <= order * rho for all orders >= 1) implied by :func:`ddg_rdp`.

    Terms 2 and 3 are already linear in the order; term 1, ``order a^2/2 + tau d``, is at most
    ``order (a^2/2 + tau d)`` for orders >= 1.
    """
    if sigma2 <= 0.0:
        return math.inf
    a2, extra, t3, tau_d = _ddg_terms(l2, l1, sigma2, num_shares, dim)
    bound = np.minimum(np.minimum(a2 / 2.0 + tau_d, (a2 + extra) / 2.0), t3 / 2.0)
    return float(np.min(bound))


def skellam_rdp(order: float, l2: float, l1: float, variance: float) -> float:
    """RDP of order ``order`` of adding Skellam noise of total per-coordinate ``variance`` to a
    vector with integer L2/L1 sensitivity ``l2``/``l1`` (AKL21):
    ``order l2^2/(2 mu) + min(((2 order - 1) l2^2 + 6 l1)/(4 mu^2), 3 l1/(2 mu))``."""
    if variance <= 0.0:
        return math.inf
    mu = variance
    return order * l2 * l2 / (2.0 * mu) + min(
        ((2.0 * order - 1.0) * l2 * l2 + 6.0 * l1) / (4.0 * mu * mu), 3.0 * l1 / (2.0 * mu)
    )


def skellam_rho(l2: float, l1: float, variance: float) -> float:
    """A zCDP ``rho`` implied by :func:`skellam_rdp` for orders >= 1.

    ``(2 order - 1) <= 2 order`` and ``6 l1 <= 6 order l1`` make the correction linear in order.
    """
    if variance <= 0.0:
        return math.inf
    mu = variance
    return l2 * l2 / (2.0 * mu) + min(
        (2.0 * l2 * l2 + 6.0 * l1) / (4.0 * mu * mu), 3.0 * l1 / (2.0 * mu)
    )


def log_tail_subgaussian(a: float, proxy_variance: float) -> float:
    """Upper bound on ``log P(X >= a)``, ``a > 0``, for X that is ``proxy_variance``-subgaussian.

    A sum of independent N_Z(0, s_i^2) is ``sum s_i^2``-subgaussian (CKS20), so
    ``P(X >= a) <= exp(-a^2 / (2 sum s_i^2))``.
    """
    if proxy_variance <= 0.0:
        return -math.inf
    return -(a * a) / (2.0 * proxy_variance)


def log_tail_skellam(a: float, variance: float) -> float:
    """Chernoff bound on ``log P(X >= a)``, ``a > 0``, for X ~ Skellam with total ``variance``.

    ``E exp(theta X) = exp(variance (cosh theta - 1))``; the optimum ``sinh theta = a/variance``
    gives ``-(a asinh(r) - variance (sqrt(1 + r^2) - 1))`` with ``r = a/variance``.
    """
    if variance <= 0.0:
        return -math.inf
    r = a / variance
    return -(a * math.asinh(r) - variance * r * r / (math.sqrt(1.0 + r * r) + 1.0))
