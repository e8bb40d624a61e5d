"""Parameter guidance for SecAgg+ (Bell et al., CCS 2020) on the ring graph of :mod:`secagg.graph`.

:func:`choose_parameters` picks the neighbour degree ``k`` and the Shamir threshold ``t`` for a
cohort of ``n`` clients, a per-client dropout probability and a fraction of corrupt clients
(colluding with the server). Pure: no I/O, no randomness.

The model (threat_models/parameters.md has the derivation and a table):

* The graph is the one :func:`secagg.graph.neighbour_graph` builds: a uniformly random ring
  order of the ``n`` clients, each joined to the ``k/2`` nearest on each side. Marginally, the
  ``k`` neighbours of a client are a uniform ``k``-subset of the other ``n - 1`` clients, and
  any ``k/2`` consecutive ring positions hold a uniform ``k/2``-subset of all ``n``. The corrupt
  set (``C = ceil(corrupt_fraction * n)`` clients) is fixed before the ring order is drawn.
  The ring is over the whole cohort; who is left out of U1 is an adversarial dropout.
* **Grinding** (SPEC.md D14): the ring's seed hashes every honest client's fresh keys, so it
  cannot be computed before the round, but within the ADVERTISE window the server and its
  colluders can try seeds, one per choice of U1 and of the colluders' keys. Each try is a fresh
  uniformly random ring (up to :func:`secagg.graph.ring_model_gap_log2`, added to every
  privacy figure: a tie of the sorted ring's keys, or the swap-or-not shuffle's distance
  from a uniform permutation on the points each event reads); with at most ``2^g`` tries
  (``grinding_bits=g``, default :data:`GRINDING_BITS`) the union bound multiplies the ring's
  privacy failure by ``2^g``, which is what every figure below includes. The complete graph
  has no seed to grind.
* Each client drops (at any stage) independently with probability ``dropout_rate``.
* The client policy tolerates ``c = 2t - k - 1`` corrupt neighbours, the largest ``c`` with
  ``t > (k + c) / 2`` (``ClientPolicy(max_corrupt=c)`` accepts ``(k, t)``).

Events, each bounded exactly per neighbourhood (binomial / hypergeometric tails) and then by a
union bound over clients:

* **failure** (the round aborts): some client has fewer than ``t`` surviving neighbours,
  ``n * P[Bin(k, 1 - dropout) < t]``. With the complete graph the exact value is
  ``P[Bin(n, 1 - dropout) <= t]`` (a round needs ``t + 1`` survivors, SPEC.md D2).
* **privacy failure** (the server, with its colluders, learns more than the sum of the honest
  survivors):

  - an honest client has ``2t - k`` or more corrupt neighbours. Then either the colluders alone
    hold ``t`` shares of both its secrets (``2t - k <= t``), or the server can split the honest
    neighbours between "alive" and "dropped" and collect ``t`` shares of each kind (SA-01: it
    needs ``2(t - c') <= k - c'``, i.e. ``c' >= 2t - k`` corrupt neighbours):
    ``(n - C) * P[Hyp(n - 1, C, k) >= 2t - k]``;
  - the honest survivors' graph splits in two (Bell et al. require it to stay connected): a
    cut of the ring is ``k/2`` consecutive positions that are all corrupt or excluded from U3,
    and the honest client just past it still needs ``t`` neighbours in U3, so the window holds
    at least ``t - k/2`` corrupt clients. Two disjoint such windows are needed; the corrupt
    positions are negatively associated, so ``<= C(n, 2) * P[Hyp(n, C, k/2) >= t - k/2]^2``.

``k`` is the smallest even degree below ``n - 1`` for which some ``t`` keeps failure below
``2^-eta`` and privacy failure below ``2^-sigma``; among those ``t`` the one with the largest
smaller margin (in bits) wins, the larger ``t`` on ties. If no ring degree works the complete
graph (plain SecAgg, ``k = n - 1``) is used, where the corrupt count is exact: privacy holds iff
``C < 2t - k``. If even that fails, :class:`~secagg.ConfigError` is raised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secagg._errors import ConfigError
from secagg.config import ClientPolicy
from secagg.graph import ring_model_gap_log2

__all__ = [
    "GRINDING_BITS",
    "ParameterChoice",
    "binomial_cdf",
    "choose_parameters",
    "evaluate",
    "hypergeometric_sf",
    "parameters_for_policy",
    "policy_corrupt_count",
]

_LN2 = math.log(2.0)

# Seeds a server with its colluders can try within one ADVERTISE window: 2^40 ring evaluations
# (each an SHA-256 of the bitmap and key root plus n AES blocks) is about 10^5 cores for ten
# minutes at n = 10^4. SPEC.md D14 has the argument; lower it only with a shorter deadline.
GRINDING_BITS = 40.0


@dataclass(frozen=True, slots=True)
class ParameterChoice:
    """The chosen degree and threshold, and the bounds they were chosen under.

    ``k`` is ``n - 1`` for the complete graph (pass ``k=None`` or ``k=n - 1`` to
    :class:`~secagg.RoundConfig`). ``c`` is the corrupt-neighbour bound to configure the
    client policy with (``ClientPolicy(max_corrupt=c)``); ``corrupt`` the number of corrupt
    clients assumed in the cohort. Probabilities are upper bounds (union bounds).
    """

    k: int
    t: int
    failure_probability: float
    privacy_failure_probability: float
    c: int
    corrupt: int
    complete_graph: bool
    # False when no (k, t) met the failure target and the choice is the most dropout-tolerant
    # one that still keeps privacy (parameters_for_policy on a small cohort).
    meets_targets: bool = True
    # The seeds a grinding server was assumed to try (2^grinding_bits), already included in
    # privacy_failure_probability for a ring (SPEC.md D14).
    grinding_bits: float = GRINDING_BITS


def _log_choose(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def _log_add(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == -math.inf:
        return a
    return a + math.log1p(math.exp(b - a))


def _binomial_log_pmf(m: int, p: float) -> list[float]:
    if p <= 0.0:
        return [0.0] + [-math.inf] * m
    if p >= 1.0:
        return [-math.inf] * m + [0.0]
    lp, lq = math.log(p), math.log1p(-p)
    return [_log_choose(m, x) + x * lp + (m - x) * lq for x in range(m + 1)]


def _hypergeometric_log_pmf(population: int, marked: int, draws: int) -> list[float]:
    base = _log_choose(population, draws)
    out = [-math.inf] * (draws + 1)
    for x in range(max(0, draws - (population - marked)), min(draws, marked) + 1):
        out[x] = _log_choose(marked, x) + _log_choose(population - marked, draws - x) - base
    return out


def _log_cdf(log_pmf: list[float]) -> list[float]:
    """``out[j] = log P[X <= j]``."""
    out, acc = [], -math.inf
    for x in log_pmf:
        acc = _log_add(acc, x)
        out.append(min(acc, 0.0))
    return out


def _log_sf(log_pmf: list[float]) -> list[float]:
    """``out[j] = log P[X >= j]``."""
    return _log_cdf(log_pmf[::-1])[::-1]


def binomial_cdf(m: int, p: float, upto: int) -> float:
    """``P[Bin(m, p) <= upto]``, accurate in relative terms far into the tail."""
    if upto < 0:
        return 0.0
    if upto >= m:
        return 1.0
    return math.exp(_log_cdf(_binomial_log_pmf(m, p))[upto])


def hypergeometric_sf(population: int, marked: int, draws: int, atleast: int) -> float:
    """``P[X >= atleast]`` for ``X`` the marked items among ``draws`` taken without replacement
    from ``population`` items of which ``marked`` are marked."""
    if atleast <= 0:
        return 1.0
    if atleast > draws:
        return 0.0
    return math.exp(_log_sf(_hypergeometric_log_pmf(population, marked, draws))[atleast])


def _corrupt_count(n: int, corrupt_fraction: float) -> int:
    return min(n, math.ceil(corrupt_fraction * n - 1e-9))


def _ring_bounds(
    n: int, k: int, dropout_rate: float, corrupt: int, grinding_bits: float
) -> list[tuple[int, float, float]]:
    """``(t, failure, privacy failure)`` for every ``t`` in ``(k/2, k]`` on a ring of degree k,
    the privacy failure over ``2^grinding_bits`` seeds."""
    half = k // 2
    fail_cdf = _log_cdf(_binomial_log_pmf(k, 1.0 - dropout_rate))
    split_sf = _log_sf(_hypergeometric_log_pmf(n - 1, corrupt, k))
    window_sf = _log_sf(_hypergeometric_log_pmf(n, corrupt, half))
    log_n, log_honest = math.log(n), math.log(max(n - corrupt, 1))
    log_pairs = math.log(n * (n - 1) / 2) + grinding_bits * _LN2
    log_honest += grinding_bits * _LN2
    # How far the ring of secagg.graph is from a uniformly random one, over the same events
    # and seeds (SPEC.md D14): at most 2^-100 per seed, so it matters only past 2^60 tries.
    # No colluder, no event, whatever the order.
    gap = (ring_model_gap_log2(n, k) + grinding_bits) * _LN2 if corrupt else -math.inf
    out = []
    for t in range(half + 1, k + 1):
        failure = math.exp(min(0.0, log_n + fail_cdf[t - 1]))
        split = log_honest + split_sf[2 * t - k]
        partition = log_pairs + 2 * window_sf[t - half]
        privacy = _log_add(_log_add(split, partition), gap)
        out.append((t, failure, math.exp(min(0.0, privacy))))
    return out


def _complete_bounds(n: int, dropout_rate: float, corrupt: int) -> list[tuple[int, float, float]]:
    k = n - 1
    fail_cdf = _log_cdf(_binomial_log_pmf(n, 1.0 - dropout_rate))
    return [
        (t, math.exp(fail_cdf[t]), 0.0 if corrupt < 2 * t - k else 1.0)
        for t in range(k // 2 + 1, k + 1)
    ]


def evaluate(
    n: int,
    k: int,
    t: int,
    dropout_rate: float,
    corrupt_fraction: float,
    *,
    grinding_bits: float = GRINDING_BITS,
) -> tuple[float, float]:
    """``(failure, privacy failure)`` bounds of the model of :mod:`secagg.params` for
    ``(k, t)``; ``k >= n - 1`` means the complete graph. ``t <= k/2`` is always a privacy
    failure (the server splits the honest neighbours, SA-03)."""
    _check_inputs(n, dropout_rate, corrupt_fraction)
    _check_grinding(grinding_bits)
    k = min(k, n - 1)
    if not 1 <= t <= k:
        raise ConfigError(f"t must be in [1, min(k, n - 1)]; got t={t}, k={k}")
    if k < n - 1 and (k < 2 or k % 2):
        raise ConfigError("a ring degree k must be even and at least 2")
    if 2 * t <= k:
        return (0.0 if dropout_rate == 0 else math.nan), 1.0
    corrupt = _corrupt_count(n, corrupt_fraction)
    rows = (
        _complete_bounds(n, dropout_rate, corrupt)
        if k == n - 1
        else _ring_bounds(n, k, dropout_rate, corrupt, grinding_bits)
    )
    _, failure, privacy = rows[t - (k // 2 + 1)]
    return failure, privacy


def _check_inputs(n: int, dropout_rate: float, corrupt_fraction: float) -> None:
    if not 2 <= n <= 2**32 - 1:
        raise ConfigError("n must be in [2, 2^32 - 1]")
    if not 0.0 <= dropout_rate < 1.0:
        raise ConfigError("dropout_rate must be in [0, 1)")
    if not 0.0 <= corrupt_fraction < 1.0:
        raise ConfigError("corrupt_fraction must be in [0, 1)")


def _check_grinding(grinding_bits: float) -> None:
    if not (0.0 <= grinding_bits <= 128.0):
        raise ConfigError("grinding_bits must be in [0, 128]")


def _margin(p: float, target_bits: float) -> float:
    """How many bits below ``2^-target_bits`` the probability ``p`` is (negative: above)."""
    if p <= 0.0:
        return math.inf
    return -math.log(p) / _LN2 - target_bits


def _best(
    rows: list[tuple[int, float, float]], sigma: float, eta: float
) -> tuple[int, float, float] | None:
    best: tuple[float, int, float, float] | None = None
    for t, failure, privacy in rows:
        slack = min(_margin(failure, eta), _margin(privacy, sigma))
        if slack >= 0 and (best is None or slack >= best[0]):
            best = (slack, t, failure, privacy)
    return None if best is None else (best[1], best[2], best[3])


def choose_parameters(
    n: int,
    dropout_rate: float,
    corrupt_fraction: float,
    *,
    sigma: float = 40,
    eta: float = 30,
    grinding_bits: float = GRINDING_BITS,
) -> ParameterChoice:
    """Smallest even SecAgg+ degree ``k`` and a threshold ``t`` (see the module docstring).

    Guarantees: ``failure_probability <= 2^-eta``, ``privacy_failure_probability <=
    2^-sigma`` against a server that tries ``2^grinding_bits`` ring seeds, and
    ``ClientPolicy(max_corrupt=c)`` accepts ``(k, t)``. Raises :class:`~secagg.ConfigError`
    when even the complete graph cannot meet both targets."""
    _check_inputs(n, dropout_rate, corrupt_fraction)
    _check_grinding(grinding_bits)
    if not (sigma > 0 and eta > 0 and math.isfinite(sigma) and math.isfinite(eta)):
        raise ConfigError("sigma and eta must be positive and finite")
    corrupt = _corrupt_count(n, corrupt_fraction)
    complete = _best(_complete_bounds(n, dropout_rate, corrupt), sigma, eta)
    if complete is None:
        raise ConfigError(
            f"no (k, t) meets 2^-{eta} failure and 2^-{sigma} privacy failure for n={n}, "
            f"dropout_rate={dropout_rate}, corrupt_fraction={corrupt_fraction}"
        )
    for k in range(2, n - 1, 2):
        found = _best(_ring_bounds(n, k, dropout_rate, corrupt, grinding_bits), sigma, eta)
        if found is not None:
            t, failure, privacy = found
            return ParameterChoice(
                k, t, failure, privacy, 2 * t - k - 1, corrupt, False, True, grinding_bits
            )
    k = n - 1
    t, failure, privacy = complete
    return ParameterChoice(
        k, t, failure, privacy, 2 * t - k - 1, corrupt, True, True, grinding_bits
    )


def policy_corrupt_count(n: int, policy: ClientPolicy) -> int:
    """How many of ``n`` members may be corrupt under ``policy``'s assumption: fewer than
    ``max_corrupt_fraction * n`` (``max_corrupt`` when the policy fixes a count)."""
    if policy.max_corrupt is not None:
        return min(n, policy.max_corrupt)
    return max(0, math.ceil(policy.max_corrupt_fraction * n) - 1)


def parameters_for_policy(
    n: int,
    dropout_rate: float,
    policy: ClientPolicy | None = None,
    *,
    k: int | None = None,
    sigma: float = 40,
    eta: float = 30,
    grinding_bits: float = GRINDING_BITS,
) -> ParameterChoice:
    """The ``(k, t)`` an aggregator picks by itself for clients that hold ``policy`` (the
    default :class:`~secagg.ClientPolicy` if None): every choice passes ``policy.check``.

    One corruption assumption serves both sides: the cohort holds
    :func:`policy_corrupt_count` corrupt members (what the model of this module bounds), and
    ``t`` is never below ``policy.min_threshold(k)`` (what each client checks). Among the
    ``(k, t)`` that meet both targets, the smallest ring degree wins as in
    :func:`choose_parameters` (``k`` fixed if given). A cohort too small for the failure
    target (a handful of members) gets the complete graph with the smallest ``t`` that keeps
    the privacy target, and ``meets_targets=False``: privacy is never traded, only liveness.
    Raises :class:`~secagg.ConfigError` when ``n`` is below the policy's cohort floor or no
    ``t`` keeps privacy."""
    policy = policy if policy is not None else ClientPolicy()
    _check_inputs(n, dropout_rate, 0.0)
    _check_grinding(grinding_bits)
    if not (sigma > 0 and eta > 0 and math.isfinite(sigma) and math.isfinite(eta)):
        raise ConfigError("sigma and eta must be positive and finite")
    if n < max(3, policy.min_cohort):
        raise ConfigError(
            f"a consortium of {n} members is below the smallest cohort clients accept "
            f"({max(3, policy.min_cohort)})"
        )
    corrupt = policy_corrupt_count(n, policy)

    def allowed(
        rows: list[tuple[int, float, float]], degree: int
    ) -> list[tuple[int, float, float]]:
        floor = policy.min_threshold(degree)
        return [r for r in rows if r[0] >= floor]

    def choice(deg: int, row: tuple[int, float, float], *, meets: bool) -> ParameterChoice:
        t, failure, privacy = row
        return ParameterChoice(
            deg,
            t,
            failure,
            privacy,
            policy.corrupt_bound(deg),
            corrupt,
            deg == n - 1,
            meets,
            grinding_bits,
        )

    if k is not None and k < n - 1:
        if k < max(2, policy.min_degree) or k % 2:
            raise ConfigError(
                f"a ring degree must be even and at least {max(2, policy.min_degree)}"
            )
        rows = allowed(_ring_bounds(n, k, dropout_rate, corrupt, grinding_bits), k)
        found = _best(rows, sigma, eta)
        if found is None:
            raise ConfigError(
                f"no threshold meets 2^-{eta} failure and 2^-{sigma} privacy failure for n={n}, "
                f"k={k} under the clients' policy; use a larger k or the complete graph"
            )
        return choice(k, found, meets=True)
    complete_rows = allowed(_complete_bounds(n, dropout_rate, corrupt), n - 1)
    if k is None:
        for deg in range(max(2, policy.min_degree + policy.min_degree % 2), n - 1, 2):
            rows = _ring_bounds(n, deg, dropout_rate, corrupt, grinding_bits)
            found = _best(allowed(rows, deg), sigma, eta)
            if found is not None:
                return choice(deg, found, meets=True)
    found = _best(complete_rows, sigma, eta)
    if found is not None:
        return choice(n - 1, found, meets=True)
    private = [r for r in complete_rows if _margin(r[2], sigma) >= 0]
    if not private:
        raise ConfigError(f"no threshold keeps privacy for n={n} with {corrupt} corrupt members")
    return choice(n - 1, private[0], meets=False)  # the smallest such t: most dropouts survived
