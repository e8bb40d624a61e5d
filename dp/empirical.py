"""Empirical privacy audit in one training run: canary guesses -> an epsilon lower bound.

Steinke, Nasr and Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023
(arXiv 2305.08846). ``m`` canaries are each included in training independently with
probability 1/2 (``S_i = +1`` in, ``-1`` out). After the single run an auditor guesses
``T_i in {+1, -1, 0}`` (0 abstains). If the training is (eps, delta)-DP, the number ``v`` of
correct guesses among the ``r`` non-abstaining ones is, up to a delta term, stochastically
dominated by ``Binomial(r, e^eps / (1 + e^eps))`` (Thm 3.1, Cor. 5.4 for delta > 0; the
p-value is that of App. D). Every eps whose p-value falls below ``1 - confidence`` is
rejected; the largest rejected eps is a lower bound on the true eps with that confidence.

Statistics only: training with canaries and scoring them is out of scope here. The bound is
valid for one pre-declared set of guesses; choosing ``k_pos``/``k_neg`` by looking at several
bounds is multiple testing and needs a correction (e.g. Bonferroni over the choices tried).
Pure and deterministic: no randomness, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dp._errors import InvalidParameter

__all__ = [
    "OneRunAudit",
    "audit_guesses",
    "epsilon_lower_bound",
    "guesses_from_scores",
    "p_value",
]

_BISECTION_STEPS = 60
_EPS_CAP = 100.0  # above this, e^eps overflows the useful range of the binomial tail


@dataclass(frozen=True, slots=True)
class OneRunAudit:
    """The result of one audit: eps is not below ``epsilon_lower_bound`` w.p. ``confidence``."""

    epsilon_lower_bound: float
    confidence: float
    delta: float
    canaries: int
    guesses: int
    correct: int


def _check_counts(m: int, r: int, v: int) -> None:
    for name, x in (("canaries", m), ("guesses", r), ("correct", v)):
        if isinstance(x, bool) or not isinstance(x, int | np.integer):
            raise InvalidParameter(f"{name} must be an int")
    if not 0 <= v <= r <= m:
        raise InvalidParameter(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")


def _check_delta(delta: float) -> float:
    if isinstance(delta, bool) or not isinstance(delta, int | float) or not 0 <= delta <= 1:
        raise InvalidParameter(f"delta must be in [0, 1], got {delta!r}")
    return float(delta)


def _check_confidence(confidence: float) -> float:
    ok = isinstance(confidence, int | float) and not isinstance(confidence, bool)
    if not ok or not 0.0 < confidence < 1.0:
        raise InvalidParameter(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


class _Binomial:
    """log pmf of Binomial(r, p) for every k, with log C(r, k) computed once."""

    def __init__(self, r: int) -> None:
        k = np.arange(1, r + 1, dtype=np.float64)
        self.r = r
        self.log_comb: npt.NDArray[np.float64] = np.concatenate(
            ([0.0], np.cumsum(np.log(r - k + 1) - np.log(k)))
        )
        self.k = np.arange(r + 1, dtype=np.float64)

    def pmf(self, log_p: float, log_1mp: float) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = np.exp(
            self.log_comb + self.k * log_p + (self.r - self.k) * log_1mp
        )
        return out


def _p_value(binom: _Binomial, m: int, v: int, eps: float, delta: float) -> float:
    # q = e^eps / (1 + e^eps): the accuracy of eps-DP randomized response.
    log_q = -math.log1p(math.exp(-eps))
    log_1mq = -eps + log_q
    pmf = binom.pmf(log_q, log_1mq)
    tail = float(math.fsum(pmf[v:]))  # P[Binomial(r, q) >= v]
    if delta == 0.0 or v == 0:
        return min(tail, 1.0)
    # Cor. 5.4: + 2 m delta * max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i.
    below = np.cumsum(pmf[v - 1 :: -1])  # i = 1..v: P[v - i <= B < v]
    alpha = float(np.max(below / np.arange(1, v + 1)))
    return min(tail + alpha * delta * 2 * m, 1.0)


def p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float = 0.0) -> float:
    """P[at least ``correct`` of ``guesses`` right] if the training were (epsilon, delta)-DP."""
    _check_counts(canaries, guesses, correct)
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise InvalidParameter("epsilon must be finite and >= 0")
    return _p_value(
        _Binomial(int(guesses)), int(canaries), int(correct), float(epsilon), _check_delta(delta)
    )


def epsilon_lower_bound(
    canaries: int,
    guesses: int,
    correct: int,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """The largest eps rejected at level ``1 - confidence`` (0.0 when none is).

    Bisection keeps its lower end *rejected*, and that end is returned, so the bound never
    rounds up.
    """
    _check_counts(canaries, guesses, correct)
    d = _check_delta(delta)
    beta = 1.0 - _check_confidence(confidence)
    m, r, v = int(canaries), int(guesses), int(correct)
    binom = _Binomial(r)

    def rejected(eps: float) -> bool:
        return _p_value(binom, m, v, eps, d) < beta

    if not rejected(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    while rejected(hi):
        lo, hi = hi, 2.0 * hi
        if hi > _EPS_CAP:
            return lo
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if rejected(mid):
            lo = mid
        else:
            hi = mid
    return lo


def audit_guesses(
    included: Sequence[bool] | npt.ArrayLike,
    guesses: Sequence[int] | npt.ArrayLike,
    *,
    delta: float = 0.0,
    confidence: float = 0.95,
) -> OneRunAudit:
    """Score guesses (+1 in, -1 out, 0 abstain) against the true inclusions; bound eps."""
    s = np.asarray(included)
    t = np.asarray(guesses)
    if s.ndim != 1 or t.shape != s.shape:
        raise InvalidParameter("included and guesses must be 1-D and of equal length")
    if s.dtype != np.bool_:
        if not np.isin(s, (0, 1)).all():
            raise InvalidParameter("included must be booleans (or 0/1)")
        s = s.astype(np.bool_)
    if not np.isin(t, (-1, 0, 1)).all():
        raise InvalidParameter("guesses must be +1 (in), -1 (out) or 0 (abstain)")
    t = t.astype(np.int64)
    truth = np.where(s, 1, -1)
    r = int(np.count_nonzero(t))
    v = int(np.count_nonzero(t == truth))
    m = int(s.size)
    eps = epsilon_lower_bound(m, r, v, delta=delta, confidence=confidence)
    return OneRunAudit(eps, float(confidence), float(delta), m, r, v)


def guesses_from_scores(
    scores: Sequence[float] | npt.ArrayLike, k_pos: int, k_neg: int
) -> npt.NDArray[np.int64]:
    """+1 for the ``k_pos`` highest scores (most member-like), -1 for the ``k_neg`` lowest,
    0 otherwise. Ties are broken by position, deterministically."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise InvalidParameter("scores must be a finite 1-D array")
    if k_pos < 0 or k_neg < 0 or k_pos + k_neg > x.size:
        raise InvalidParameter("need k_pos, k_neg >= 0 and k_pos + k_neg <= len(scores)")
    order = np.argsort(-x, kind="stable")
    out = np.zeros(x.size, dtype=np.int64)
    out[order[:k_pos]] = 1
    if k_neg:
        out[order[x.size - k_neg :]] = -1
    return out
