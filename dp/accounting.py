"""Privacy accounting: DP events, three accountants over them, and one report that picks a bound.

Events are immutable records of what was released (dp-accounting style); accountants turn a
sequence of events into an (epsilon, delta) bound and validate before they compute.

* ``pld``: privacy loss distributions (Google ``dp-accounting``), pessimistic discretisation.
  The default: tight and sound, up to the library's documented truncation, which it charges
  pessimistically.
* ``prv``: privacy random variables (opacus, Gopi et al. 2021); we use its *upper* estimate.
* ``rdp``: Renyi DP (opacus sampled-Gaussian analysis, Mironov et al. 2019), converted with
  Balle et al. 2020, Thm 21. ``rdp_classic`` is the same curve converted with Mironov 2017,
  Prop. 3 (``eps = rdp + log(1/delta) / (alpha - 1)``), which is how the published figures of
  Abadi et al. 2016 and TF-Privacy were computed; it is sound but looser, kept to reproduce them.

:func:`account` runs several accountants and reports the tightest *sound* bound, and says which
accountant produced it. PLD and PRV are numerical; when both ran and they disagree beyond
:data:`CROSS_CHECK_TOLERANCE`, neither smaller value is trusted: the report then uses
``min(rdp, max(pld, prv))`` (docs/threats.md DP-07). A crashing accountant aborts (``strict=True``).

Distributed DP under secure aggregation (user level, one event per round or per batch of
identical rounds) is accounted with the published RDP bounds of the integer mechanisms, never
as if the noise were a continuous Gaussian:

* distributed discrete Gaussian: Kairouz, Liu, Steinke, ICML 2021 (arXiv 2102.06387), Prop. 14
  with the inflation ``tau`` of Thm 1 for a sum of ``n`` discrete Gaussians;
* distributed Skellam: Agarwal, Kairouz, Liu, NeurIPS 2021 (arXiv 2110.04995), RDP theorem for
  the multi-dimensional Skellam mechanism;
* client sampling with rate ``q < 1``: the general Poisson-subsampled RDP upper bound of Zhu and
  Wang, ICML 2019 (valid for any mechanism, integer orders), min'd with the unamplified curve.

PLD and PRV have no model of these mechanisms, so they report them as unsupported and only
``rdp`` bounds them. What each bound assumes is in :data:`ASSUMPTIONS` and in every report.
No randomness, no clocks: every function here is pure.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from dp._errors import InvalidParameter, PrivacyError

__all__ = [
    "ACCOUNTANTS",
    "ASSUMPTIONS",
    "CROSS_CHECK_TOLERANCE",
    "DEFAULT_ACCOUNTANTS",
    "Accountant",
    "AccountingError",
    "DistributedDiscreteGaussianEvent",
    "DistributedSkellamEvent",
    "DpEvent",
    "DpSgdEvent",
    "EpsilonReport",
    "PldAccountant",
    "PrivacyUnit",
    "PrvAccountant",
    "RdpAccountant",
    "RoundPrivacyLike",
    "UnsupportedEvent",
    "account",
    "ddg_rdp",
    "distributed_event",
    "epsilon",
    "event_from_params",
    "event_to_params",
    "get_accountant",
    "noise_multiplier_for",
    "rdp_to_epsilon",
    "skellam_rdp",
    "subsampled_rdp",
]

FloatArray: TypeAlias = npt.NDArray[np.float64]


class AccountingError(PrivacyError):
    """An accountant failed or returned a value that cannot be a bound (NaN, negative)."""


class UnsupportedEvent(AccountingError):
    """This accountant has no sound model of the event (e.g. PLD for distributed Skellam)."""


class PrivacyUnit(enum.Enum):
    """Whose privacy an event protects: one training record, or one client's whole data."""

    RECORD = "record"
    USER = "user"


def _check_real(name: str, value: object, *, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and low <= v <= high):
        raise InvalidParameter(f"{name}={value!r} is outside [{low}, {high}]")
    return v


def _check_int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise InvalidParameter(f"{name}={value} must be >= {low}")
    return value


@dataclass(frozen=True, slots=True)
class DpSgdEvent:
    """Record-level DP-SGD on one client: ``steps`` Poisson-sampled Gaussian steps.

    ``sample_rate`` is the Poisson inclusion probability of a record (expected batch / dataset
    size, docs/threats.md DP-06); ``noise_multiplier`` is the noise std over the clip norm.
    """

    sample_rate: float
    noise_multiplier: float
    steps: int

    kind: ClassVar[str] = "dp_sgd"
    unit: ClassVar[PrivacyUnit] = PrivacyUnit.RECORD

    def __post_init__(self) -> None:
        _check_real("sample_rate", self.sample_rate, low=0.0, high=1.0)
        _check_real("noise_multiplier", self.noise_multiplier, low=0.0)
        _check_int("steps", self.steps, low=0)

    @property
    def is_noop(self) -> bool:
        return self.steps == 0 or self.sample_rate == 0.0

    @property
    def is_non_private(self) -> bool:
        return not self.is_noop and self.noise_multiplier == 0.0


class _DistributedEvent:
    """What the two distributed (SecAgg) noise events share: checks, no-op test, L1 bound."""

    __slots__ = ()
    local_stddev: float
    survivors: int
    participation_rate: float
    l2_sensitivity: float
    dimension: int
    l1_sensitivity: float | None
    rounds: int
    decoded_survivors: int | None
    assumed_corrupt: int

    def _check_common(self) -> None:
        _check_int("survivors", self.survivors, low=1)
        # How ``survivors`` was derived (docs/threats.md DP-10): the clients in the decoded sum
        # minus the corrupt ones assumed to add no noise. Recorded so an audit can show it.
        _check_int("assumed_corrupt", self.assumed_corrupt, low=0)
        if self.decoded_survivors is not None:
            _check_int("decoded_survivors", self.decoded_survivors, low=1)
            if self.survivors != self.decoded_survivors - self.assumed_corrupt:
                raise InvalidParameter(
                    "survivors must be decoded_survivors - assumed_corrupt (the honest shares)"
                )
        _check_real("participation_rate", self.participation_rate, low=0.0, high=1.0)
        _check_real("l2_sensitivity", self.l2_sensitivity, low=0.0)
        _check_int("dimension", self.dimension, low=1)
        if self.l1_sensitivity is not None:
            _check_real("l1_sensitivity", self.l1_sensitivity, low=0.0)
        _check_int("rounds", self.rounds, low=0)

    @property
    def is_noop(self) -> bool:
        return self.rounds == 0 or self.participation_rate == 0.0 or self.l2_sensitivity == 0.0

    @property
    def is_non_private(self) -> bool:
        return False

    @property
    def l1(self) -> float:
        d2 = self.l2_sensitivity
        return (
            self.l1_sensitivity
            if self.l1_sensitivity is not None
            else d2 * min(math.sqrt(self.dimension), d2)
        )


@dataclass(frozen=True, slots=True)
class DistributedDiscreteGaussianEvent(_DistributedEvent):
    """User-level distributed discrete Gaussian (DDG) over SecAgg, for ``rounds`` rounds.

    All quantities are in the integer lattice the encoder produces (after scaling, rotation and
    conditional randomized rounding): ``local_stddev`` is each client's discrete-Gaussian scale,
    ``l2_sensitivity`` bounds the L2 norm of one client's encoded vector (the post-rounding bound,
    e.g. KLS21 Thm 1 / Prop. 22), ``dimension`` its length after padding. ``survivors`` counts
    the honest clients whose noise share is in the decoded sum; ``participation_rate`` is the
    Poisson client-sampling rate (1.0: no amplification). ``l1_sensitivity`` defaults to
    ``l2 * min(sqrt(d), l2)``, valid for integer vectors. ``decoded_survivors`` and
    ``assumed_corrupt`` record how ``survivors`` was derived (the clients in the sum minus the
    corrupt ones assumed to add no noise); they do not enter the bound.
    """

    local_stddev: float
    survivors: int
    participation_rate: float
    l2_sensitivity: float
    dimension: int
    l1_sensitivity: float | None = None
    rounds: int = 1
    decoded_survivors: int | None = None
    assumed_corrupt: int = 0

    kind: ClassVar[str] = "ddg"
    unit: ClassVar[PrivacyUnit] = PrivacyUnit.USER

    def __post_init__(self) -> None:
        # KLS21 Prop. 14 and Thm 1 are stated for sigma >= 1/2 only.
        _check_real("local_stddev", self.local_stddev, low=0.5)
        self._check_common()


@dataclass(frozen=True, slots=True)
class DistributedSkellamEvent(_DistributedEvent):
    """User-level distributed Skellam over SecAgg, for ``rounds`` rounds.

    Each of ``survivors`` honest clients adds symmetric Skellam noise of variance
    ``local_stddev**2`` per coordinate (``Sk(l, l)`` with ``l = local_stddev**2 / 2``); the sum is
    Skellam with variance ``survivors * local_stddev**2``. Units and the other fields are as in
    :class:`DistributedDiscreteGaussianEvent`.
    """

    local_stddev: float
    survivors: int
    participation_rate: float
    l2_sensitivity: float
    dimension: int
    l1_sensitivity: float | None = None
    rounds: int = 1
    decoded_survivors: int | None = None
    assumed_corrupt: int = 0

    kind: ClassVar[str] = "skellam"
    unit: ClassVar[PrivacyUnit] = PrivacyUnit.USER

    def __post_init__(self) -> None:
        _check_real("local_stddev", self.local_stddev, low=0.0)
        if self.local_stddev == 0.0:
            raise InvalidParameter("local_stddev must be > 0 for the Skellam mechanism")
        self._check_common()


DpEvent: TypeAlias = DpSgdEvent | DistributedDiscreteGaussianEvent | DistributedSkellamEvent

_EVENT_TYPES: Final[dict[str, type[DpEvent]]] = {
    cls.kind: cls for cls in (DpSgdEvent, DistributedDiscreteGaussianEvent, DistributedSkellamEvent)
}

ASSUMPTIONS: Final[Mapping[str, str]] = {
    "dp_sgd": (
        "Record-level, add/remove-one neighbouring datasets. Records are Poisson-sampled with "
        "the stated rate (opacus DPDataLoader; a shuffled fixed-size loader is NOT covered, "
        "docs/threats.md DP-05), each per-example gradient is clipped to C and Gaussian noise of "
        "std noise_multiplier*C is added to the sum. Floating-point noise is idealised as a "
        "real Gaussian (docs/threats.md DP-02)."
    ),
    "ddg": (
        "User-level, add/remove-one client. The decoded sum contains the independent discrete "
        "Gaussian shares of `survivors` honest clients: `decoded_survivors` were summed and up "
        "to `assumed_corrupt` of them (the client policy's tolerance) may have added no noise, "
        "so `survivors = decoded_survivors - assumed_corrupt` (docs/threats.md DP-10); "
        "sensitivities are of one client's encoded integer vector after rounding, no modular "
        "wrap-around occurs (docs/threats.md DP-11), and SecAgg reveals only the sum. Bound: "
        "Kairouz-Liu-Steinke 2021 Prop. 14 with tau from Thm 1, as RDP at integer orders."
    ),
    "skellam": (
        "User-level, add/remove-one client. The decoded sum contains the independent Skellam "
        "shares of `survivors` honest clients: `decoded_survivors` were summed and up to "
        "`assumed_corrupt` of them may have added no noise (docs/threats.md DP-10); "
        "sensitivities are of one client's encoded integer vector after rounding, no modular "
        "wrap-around occurs, and SecAgg reveals only the sum. Bound: Agarwal-Kairouz-Liu 2021 "
        "(Skellam RDP theorem) at integer orders."
    ),
    "participation": (
        "A participation_rate q < 1 claims amplification by Poisson client sampling (Zhu-Wang "
        "2019 general bound): clients must be sampled independently with probability q, and "
        "the adversary must not learn who took part. The aggregator does learn it, so against "
        "the aggregator account with q = 1. With q < 1 every client of the population is "
        "charged every round, sampled or not."
    ),
}

# |pld - prv| <= abs + rel * max(pld, prv). Measured differences are ~0.01 (PRV's eps_error);
# a larger gap means one numerical accountant is broken for these parameters.
CROSS_CHECK_TOLERANCE: Final[tuple[float, float]] = (0.05, 0.02)

DEFAULT_ACCOUNTANTS: Final[tuple[str, ...]] = ("pld", "prv", "rdp")


class RoundPrivacyLike(Protocol):
    """The fields of :class:`dp.distributed.RoundPrivacy` that accounting needs."""

    @property
    def mechanism(self) -> str: ...

    @property
    def num_survivors(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def l2_sensitivity(self) -> float: ...

    @property
    def l1_sensitivity(self) -> float: ...

    @property
    def local_noise_parameter(self) -> float: ...


def distributed_event(
    round_privacy: RoundPrivacyLike, *, participation_rate: float = 1.0, rounds: int = 1
) -> DistributedDiscreteGaussianEvent | DistributedSkellamEvent:
    """The DP event of ``rounds`` rounds described by the encoder's ``round_privacy``; its
    ``num_survivors`` are the honest shares (the decoded survivors less the assumed corrupt).

    ``local_noise_parameter`` is each client's noise variance (sigma^2 of N_Z(0, sigma^2), or
    the Skellam variance); mechanism ``"gaussian"`` is the distributed discrete Gaussian.
    """
    mech = round_privacy.mechanism
    cls: type[DistributedDiscreteGaussianEvent] | type[DistributedSkellamEvent]
    if mech == "gaussian":
        cls = DistributedDiscreteGaussianEvent
    elif mech == "skellam":
        cls = DistributedSkellamEvent
    else:
        raise InvalidParameter(f"unknown distributed mechanism {mech!r}")
    variance = _check_real("local_noise_parameter", round_privacy.local_noise_parameter, low=0.0)
    return cls(
        local_stddev=math.sqrt(variance),
        survivors=round_privacy.num_survivors,
        participation_rate=participation_rate,
        l2_sensitivity=round_privacy.l2_sensitivity,
        dimension=round_privacy.dim,
        l1_sensitivity=round_privacy.l1_sensitivity,
        rounds=rounds,
        decoded_survivors=getattr(round_privacy, "decoded_survivors", None),
        assumed_corrupt=getattr(round_privacy, "assumed_corrupt", 0),
    )


def event_to_params(event: DpEvent) -> dict[str, Any]:
    """The event's fields as a JSON-ready dict (``kind`` travels separately)."""
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def event_from_params(kind: str, params: Mapping[str, Any]) -> DpEvent:
    """Rebuild (and re-validate) an event from :func:`event_to_params` output."""
    try:
        cls = _EVENT_TYPES[kind]
    except KeyError:
        raise InvalidParameter(f"unknown DP event kind {kind!r}") from None
    names = {f.name for f in dataclasses.fields(cls)}
    if set(params) - names:
        raise InvalidParameter(f"unexpected fields for {kind}: {sorted(set(params) - names)}")
    return cls(**params)


# --------------------------------------------------------------------------------------------
# RDP maths (pure, numpy only)
# --------------------------------------------------------------------------------------------

# Orders for the sampled Gaussian: opacus' default grid plus large orders for small epsilons.
_GAUSSIAN_ORDERS: Final[tuple[float, ...]] = (
    tuple(1 + x / 10.0 for x in range(1, 100))
    + tuple(float(a) for a in range(12, 64))
    + (64.0, 80.0, 96.0, 128.0, 160.0, 192.0, 256.0, 384.0, 512.0, 1024.0, 2048.0)
)
# Zhu-Wang's general subsampling bound needs integer orders; so does the Skellam theorem.
_INT_ORDERS: Final[tuple[int, ...]] = (*range(2, 129), 160, 192, 256)


def rdp_to_epsilon(
    orders: Sequence[float],
    rdp: Sequence[float] | FloatArray,
    delta: float,
    *,
    classic: bool = False,
) -> tuple[float, float]:
    """Smallest epsilon over ``orders`` and the order achieving it.

    ``classic=False``: Balle et al. 2020, Thm 21 (what opacus uses);
    ``classic=True``: Mironov 2017, Prop. 3, the conversion behind the published DP-SGD figures.
    """
    _check_real("delta", delta, low=0.0, high=1.0)
    if not 0.0 < delta < 1.0:
        raise InvalidParameter("delta must be in (0, 1)")
    a = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    if a.shape != r.shape or a.ndim != 1 or np.any(a <= 1.0):
        raise InvalidParameter("orders and rdp must be equal-length 1-D, with every order > 1")
    if classic:
        eps = r + math.log(1.0 / delta) / (a - 1.0)
    else:
        eps = r + np.log1p(-1.0 / a) - (math.log(delta) + np.log(a)) / (a - 1.0)
    eps = np.where(np.isnan(eps), np.inf, eps)
    i = int(np.argmin(eps))
    return max(float(eps[i]), 0.0), float(a[i])


def _logsumexp(x: FloatArray) -> float:
    m = float(np.max(x))
    if not math.isfinite(m):
        return m
    return m + math.log(float(np.sum(np.exp(x - m))))


def subsampled_rdp(
    curve: Callable[[int], float], q: float, orders: Sequence[int] = _INT_ORDERS
) -> FloatArray:
    """RDP of any mechanism with RDP ``curve`` under Poisson sampling with rate ``q``.

    Zhu and Wang, "Poisson Subsampled Renyi Differential Privacy", ICML 2019, general upper
    bound (the one with the factor 3 on the terms of order >= 3), for integer orders >= 2; each
    order is min'd with the unamplified value, which is always valid.
    """
    _check_real("q", q, low=0.0, high=1.0)
    ints = [int(a) for a in orders]
    if any(a < 2 or a != b for a, b in zip(ints, orders, strict=True)):
        raise InvalidParameter("the general subsampling bound needs integer orders >= 2")
    base = np.array([curve(a) for a in ints], dtype=np.float64)
    if q == 1.0:
        return base
    if q == 0.0:
        return np.zeros_like(base)
    top = max(ints)
    eps_l = np.array([0.0, 0.0] + [curve(order) for order in range(2, top + 1)])
    # log k! for k = 0..top, so log C(a, l) = lf[a] - lf[l] - lf[a - l].
    lf = np.array([math.lgamma(k + 1) for k in range(top + 1)], dtype=np.float64)
    log_q, log_1mq = math.log(q), math.log1p(-q)
    out = np.empty(len(ints), dtype=np.float64)
    for j, a in enumerate(ints):
        terms = [(a - 1) * log_1mq + math.log(a * q - q + 1)]
        li = np.arange(2, a + 1)
        ls = li.astype(np.float64)
        t = (
            lf[a]
            - lf[li]
            - lf[a - li]
            + ls * log_q
            + (a - ls) * log_1mq
            + (ls - 1) * eps_l[2 : a + 1]
        )
        t[1:] += math.log(3.0)  # orders l >= 3 carry the factor 3
        lse = _logsumexp(np.concatenate([np.array(terms), t]))
        out[j] = max(0.0, min(lse / (a - 1), base[j]))  # an RDP value is never negative
    return out


def ddg_rdp(
    event: DistributedDiscreteGaussianEvent, orders: Sequence[int] = _INT_ORDERS
) -> FloatArray:
    """RDP of ``event`` (all its rounds) at integer ``orders``: KLS21 Prop. 14 + Zhu-Wang.

    The sum of ``n`` shares is the sum of any ``k <= n`` of them plus independent noise, i.e. a
    post-processing of the ``k``-share mechanism, so the bound for every ``k`` holds and we take
    the pointwise minimum. This matters when local noise is small: ``tau`` grows with ``k``.
    """
    n, sigma, d = event.survivors, event.local_stddev, event.dimension
    ks = np.arange(1, n + 1, dtype=np.float64)
    # KLS21 Thm 1: tau_k = 10 * sum_{j=1}^{k-1} exp(-2 pi^2 sigma^2 j / (j+1)).
    j = ks[:-1]
    tau = 10.0 * np.concatenate(
        ([0.0], np.cumsum(np.exp(-2.0 * math.pi**2 * sigma**2 * j / (j + 1))))
    )
    s2 = event.l2_sensitivity / (np.sqrt(ks) * sigma)
    s1 = event.l1 / (np.sqrt(ks) * sigma)
    sq_d = math.sqrt(d)

    def curve(alpha: int) -> float:
        # Prop. 14: three valid bounds on D_alpha for the sum of k discrete Gaussians.
        half = alpha / 2.0
        bound = np.minimum(
            np.minimum(half * s2 * s2 + tau * d, half * (s2 * s2 + 2.0 * s1 * tau + tau * tau * d)),
            half * (s2 + sq_d * tau) ** 2,
        )
        return float(np.min(bound))

    return subsampled_rdp(curve, event.participation_rate, orders) * event.rounds


def skellam_rdp(event: DistributedSkellamEvent, orders: Sequence[int] = _INT_ORDERS) -> FloatArray:
    """RDP of ``event`` (all its rounds) at integer ``orders``: AKL21 Skellam RDP + Zhu-Wang."""
    mu = event.survivors * event.local_stddev**2  # variance of the summed Skellam noise
    d2, d1 = event.l2_sensitivity, event.l1

    def curve(alpha: int) -> float:
        return alpha * d2 * d2 / (2.0 * mu) + min(
            ((2 * alpha - 1) * d2 * d2 + 6.0 * d1) / (4.0 * mu * mu), 3.0 * d1 / (2.0 * mu)
        )

    return subsampled_rdp(curve, event.participation_rate, orders) * event.rounds


@functools.lru_cache(maxsize=4096)
def _gaussian_rdp_per_step(q: float, sigma: float, integer_orders: bool) -> tuple[float, ...]:
    from opacus.accountants.analysis import rdp as opacus_rdp  # type: ignore[import-untyped,unused-ignore]

    orders = list(_INT_ORDERS) if integer_orders else list(_GAUSSIAN_ORDERS)
    values = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=orders)
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64))


@functools.lru_cache(maxsize=4096)
def _distributed_rdp_cached(
    event: DistributedDiscreteGaussianEvent | DistributedSkellamEvent,
) -> tuple[float, ...]:
    arr = (
        ddg_rdp(event)
        if isinstance(event, DistributedDiscreteGaussianEvent)
        else skellam_rdp(event)
    )
    return tuple(float(v) for v in arr)


# --------------------------------------------------------------------------------------------
# Accountants
# --------------------------------------------------------------------------------------------


class Accountant(Protocol):
    """Turns a sequence of events of one privacy unit into an epsilon at ``delta``."""

    @property
    def name(self) -> str: ...

    def supports(self, event: DpEvent) -> bool: ...

    def epsilon(self, events: Sequence[DpEvent], delta: float) -> float: ...


def _grouped_sgd(events: Iterable[DpEvent]) -> list[tuple[float, float, int]]:
    """(q, sigma, total steps) per distinct (q, sigma), in first-seen order."""
    groups: dict[tuple[float, float], int] = {}
    for e in events:
        if not isinstance(e, DpSgdEvent):
            raise UnsupportedEvent(f"{type(e).__name__} is not a DP-SGD event")
        if e.is_noop:
            continue
        key = (float(e.sample_rate), float(e.noise_multiplier))
        groups[key] = groups.get(key, 0) + e.steps
    return [(q, s, t) for (q, s), t in groups.items()]


@dataclass(frozen=True, slots=True)
class PldAccountant:
    """dp-accounting's PLD accountant (add/remove-one), pessimistic estimate."""

    value_discretization_interval: float = 1e-4
    name: str = "pld"

    def supports(self, event: DpEvent) -> bool:
        return isinstance(event, DpSgdEvent)

    def epsilon(self, events: Sequence[DpEvent], delta: float) -> float:
        groups = _grouped_sgd(events)
        if not groups:
            return 0.0
        if any(s == 0.0 for _, s, _ in groups):
            return math.inf
        import dp_accounting  # type: ignore[import-untyped,unused-ignore]

        acc = dp_accounting.pld.PLDAccountant(
            value_discretization_interval=self.value_discretization_interval
        )
        for q, s, steps in groups:
            acc.compose(
                dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(s)), steps
            )
        return float(acc.get_epsilon(delta))


@dataclass(frozen=True, slots=True)
class PrvAccountant:
    """opacus' PRV accountant; the upper end of its error interval is what we report."""

    eps_error: float = 0.01
    name: str = "prv"

    def supports(self, event: DpEvent) -> bool:
        return isinstance(event, DpSgdEvent)

    def epsilon(self, events: Sequence[DpEvent], delta: float) -> float:
        groups = _grouped_sgd(events)
        if not groups:
            return 0.0
        if any(s == 0.0 for _, s, _ in groups):
            return math.inf
        from opacus.accountants import PRVAccountant  # type: ignore[import-untyped,unused-ignore]

        acc = PRVAccountant()
        acc.history = [(s, q, steps) for q, s, steps in groups]
        with warnings.catch_warnings():
            # q = 1 makes its pdf evaluate log(0) on a branch that np.where then discards, and
            # its domain sizing calls the RDP accountant, which warns about its alpha grid.
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            return float(acc.get_epsilon(delta, eps_error=self.eps_error))


@dataclass(frozen=True, slots=True)
class RdpAccountant:
    """RDP: opacus' sampled-Gaussian curve, or the published distributed-DP bounds."""

    classic: bool = False
    name: str = "rdp"

    def supports(self, event: DpEvent) -> bool:
        return True

    def curve(self, events: Sequence[DpEvent]) -> tuple[tuple[float, ...], FloatArray]:
        """(orders, composed RDP) of ``events``; integer orders once any distributed event."""
        live = [e for e in events if not e.is_noop]
        integer = any(not isinstance(e, DpSgdEvent) for e in live)
        orders: tuple[float, ...] = (
            tuple(float(a) for a in _INT_ORDERS) if integer else _GAUSSIAN_ORDERS
        )
        total = np.zeros(len(orders), dtype=np.float64)
        for e in live:
            if isinstance(e, DpSgdEvent):
                if e.noise_multiplier == 0.0:
                    return orders, np.full(len(orders), np.inf)
                per_step = _gaussian_rdp_per_step(
                    float(e.sample_rate), float(e.noise_multiplier), integer
                )
                total += np.asarray(per_step) * e.steps
            else:
                total += np.asarray(_distributed_rdp_cached(e))
        return orders, total

    def epsilon(self, events: Sequence[DpEvent], delta: float) -> float:
        if all(e.is_noop for e in events):
            return 0.0
        orders, rdp = self.curve(events)
        eps, _ = rdp_to_epsilon(orders, rdp, delta, classic=self.classic)
        return eps


ACCOUNTANTS: Final[Mapping[str, Accountant]] = {
    "pld": PldAccountant(),
    "prv": PrvAccountant(),
    "rdp": RdpAccountant(),
    "rdp_classic": RdpAccountant(classic=True, name="rdp_classic"),
}
_NUMERICAL: Final[frozenset[str]] = frozenset({"pld", "prv"})


def get_accountant(name: str) -> Accountant:
    """The registered accountant called ``name`` (``pld``, ``prv``, ``rdp``, ``rdp_classic``)."""
    try:
        return ACCOUNTANTS[name]
    except KeyError:
        raise InvalidParameter(
            f"unknown accountant {name!r}; known: {sorted(ACCOUNTANTS)}"
        ) from None


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EpsilonReport:
    """An (epsilon, delta) bound, which accountant gave it, and everything that was compared.

    ``bounds`` and ``skipped`` are sorted ``(accountant, value)`` / ``(accountant, reason)``
    pairs; ``cross_check`` is ``"agree"``, ``"disagree"`` or ``"not run"``.
    """

    epsilon: float
    delta: float
    accountant: str
    unit: PrivacyUnit | None
    bounds: tuple[tuple[str, float], ...]
    skipped: tuple[tuple[str, str], ...]
    cross_check: str
    assumptions: tuple[str, ...]

    def bound(self, name: str) -> float:
        """The value accountant ``name`` gave (KeyError if it did not run)."""
        return dict(self.bounds)[name]


def _within_tolerance(a: float, b: float) -> bool:
    abs_tol, rel_tol = CROSS_CHECK_TOLERANCE
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= abs_tol + rel_tol * max(a, b)


def account(
    events: Sequence[DpEvent],
    delta: float,
    accountants: Sequence[str] = DEFAULT_ACCOUNTANTS,
    *,
    strict: bool = True,
) -> EpsilonReport:
    """Compose ``events`` (all of one :class:`PrivacyUnit`) and report the tightest sound bound.

    ``strict``: an accountant that supports the events but raises, or returns NaN or a negative
    value, aborts with :class:`AccountingError` (docs/threats.md DP-07); otherwise it is skipped and
    named in ``skipped``.
    """
    _check_real("delta", delta, low=0.0, high=1.0)
    if not 0.0 < delta < 1.0:
        raise InvalidParameter("delta must be in (0, 1)")
    if not accountants:
        raise InvalidParameter("at least one accountant is needed")
    units = {e.unit for e in events}
    if len(units) > 1:
        raise InvalidParameter(
            "record-level and user-level events protect different units and are reported "
            "separately; account them in two calls"
        )
    unit = next(iter(units)) if units else None
    kinds = sorted({e.kind for e in events})
    assumptions = tuple(ASSUMPTIONS[k] for k in kinds)
    if any(
        not isinstance(e, DpSgdEvent) and e.participation_rate < 1.0 and not e.is_noop
        for e in events
    ):
        assumptions += (ASSUMPTIONS["participation"],)

    live = [e for e in events if not e.is_noop]
    if not live:
        return EpsilonReport(0.0, delta, "none", unit, (), (), "not run", assumptions)
    if any(e.is_non_private for e in live):
        return EpsilonReport(
            math.inf,
            delta,
            "none",
            unit,
            (),
            (("all", "a non-private event"),),
            "not run",
            assumptions,
        )

    bounds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for name in accountants:
        acc = get_accountant(name)
        unsupported = [e.kind for e in live if not acc.supports(e)]
        if unsupported:
            skipped[name] = f"no sound model of {sorted(set(unsupported))}"
            continue
        try:
            value = float(acc.epsilon(live, delta))
            if math.isnan(value) or value < 0.0:
                raise AccountingError(f"{name} returned an impossible epsilon {value!r}")
        except Exception as exc:
            if strict:
                raise AccountingError(f"accountant {name!r} failed: {exc}") from exc
            skipped[name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        bounds[name] = value
    if not bounds:
        why = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise AccountingError(f"no accountant could bound these events ({why})")

    candidates = dict(bounds)
    cross_check = "not run"
    if bounds.keys() >= _NUMERICAL:
        if _within_tolerance(bounds["pld"], bounds["prv"]):
            cross_check = "agree"
        else:
            # One numerical accountant is wrong here and we cannot tell which: keep the larger.
            cross_check = "disagree"
            worst = max(bounds["pld"], bounds["prv"])
            candidates = {k: v for k, v in bounds.items() if k not in _NUMERICAL}
            candidates["pld" if bounds["pld"] >= bounds["prv"] else "prv"] = worst
    chosen = min(candidates, key=lambda k: (candidates[k], k))
    return EpsilonReport(
        epsilon=candidates[chosen],
        delta=delta,
        accountant=chosen,
        unit=unit,
        bounds=tuple(sorted(bounds.items())),
        skipped=tuple(sorted(skipped.items())),
        cross_check=cross_check,
        assumptions=assumptions,
    )


# --------------------------------------------------------------------------------------------
# The two public shortcuts
# --------------------------------------------------------------------------------------------


def epsilon(
    sample_rate: float,
    noise_multiplier: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
) -> float:
    """Epsilon of ``steps`` DP-SGD steps at ``delta``.

    ``accountant``: ``pld`` (default), ``prv``, ``rdp``, ``rdp_classic``, or ``best`` (the
    tightest sound bound of pld, prv and rdp, as :func:`account` picks it).
    """
    event = DpSgdEvent(sample_rate, noise_multiplier, steps)
    if accountant == "best":
        return account([event], delta).epsilon
    return account([event], delta, (accountant,)).epsilon


_MAX_NOISE_MULTIPLIER: Final = 1e6


def noise_multiplier_for(
    target_epsilon: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "pld",
    *,
    rel_precision: float = 1e-3,
) -> float:
    """The smallest noise multiplier found whose epsilon is at most ``target_epsilon``.

    Conservative by construction (opacus #346 overshoots): every search keeps an upper end whose
    epsilon was *computed* to be ``<= target_epsilon`` and returns such a point, never an
    interpolation, so ``epsilon(sample_rate, sigma, steps, delta, accountant) <= target_epsilon``
    for the returned sigma. For ``pld`` the search runs on a 10x coarser (still pessimistic)
    discretisation and the result is then verified, and nudged up if needed, at full precision;
    the answer is within about ``rel_precision`` plus 0.5% of the exact smallest sigma.
    """
    target = _check_real("target_epsilon", target_epsilon, low=0.0)
    if target == 0.0:
        raise InvalidParameter("target_epsilon must be > 0")
    _check_real("rel_precision", rel_precision, low=1e-9, high=0.5)
    DpSgdEvent(sample_rate, 1.0, steps)  # validates the arguments before any search
    if steps == 0 or sample_rate == 0.0:
        return 0.0
    final = get_accountant(accountant)
    if not final.supports(DpSgdEvent(sample_rate, 1.0, steps)):
        raise InvalidParameter(f"accountant {accountant!r} cannot bound DP-SGD")

    def fits_with(acc: Accountant) -> Callable[[float], bool]:
        def fits(sigma: float) -> bool:
            return acc.epsilon([DpSgdEvent(sample_rate, sigma, steps)], delta) <= target

        return fits

    # Bracket with RDP (cheap; looser, so its answer is usually already an upper end).
    rdp = ACCOUNTANTS["rdp"]
    sigma = _bisect_sigma(fits_with(rdp), 1.0, 0.05 if final is not rdp else rel_precision)
    if final is rdp:
        return sigma
    search: Accountant = final
    if isinstance(final, PldAccountant):
        search = PldAccountant(
            value_discretization_interval=final.value_discretization_interval * 10.0
        )
    if search is not final:
        sigma = _bisect_sigma(fits_with(search), sigma, rel_precision)
    fits = fits_with(final)
    if search is not final:
        for _ in range(50):
            if fits(sigma):
                return sigma
            sigma *= 1.0 + max(rel_precision, 1e-3)
        raise AccountingError("calibration could not verify a noise multiplier")  # pragma: no cover
    return _bisect_sigma(fits, sigma, rel_precision)


def _bisect_sigma(fits: Callable[[float], bool], start: float, rel_precision: float) -> float:
    """Smallest-found sigma with ``fits(sigma)``; only ever returns a point where it was True."""
    hi = start
    while not fits(hi):
        hi *= 1.25
        if hi > _MAX_NOISE_MULTIPLIER:
            raise AccountingError(
                f"no noise multiplier up to {_MAX_NOISE_MULTIPLIER:g} reaches the target epsilon"
            )
    lo = hi * 0.8
    while fits(lo):
        hi, lo = lo, lo * 0.8
        if lo < 1e-6:
            return hi
    # Invariant: fits(hi) was computed True, fits(lo) computed False.
    while hi - lo > rel_precision * hi:
        mid = (lo + hi) / 2.0
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi
