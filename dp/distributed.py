"""Distributed DP encoder and decoder: clip, rotate, scale, round, add an integer noise share, wrap.

The pipeline follows Kairouz, Liu, Steinke 2021 (distributed discrete Gaussian, "DDG") and
Agarwal, Kairouz, Liu 2021 (Skellam), as TensorFlow Federated's ``distributed_dp`` does it:

client  ``x -> clip_L2(x, c) -> pad to 2^k -> H D x -> * scale -> conditional randomized
        rounding -> + integer noise share -> mod 2^b``  (:func:`encode`)
server  ``ring sum -> signed -> / scale -> D H -> unpad``  (:func:`decode`)

Noise is calibrated so that the honest clients among *any* ``min_survivors`` (t) survivors add at
least the target variance: with up to ``max_corrupt`` (c) corrupt survivors, who may add no noise
at all, each client adds ``target / (t - c)``, never ``target / n`` (docs/threats.md DP-10). The
explicit ``calibration="all-survivors"`` keeps the older ``target / t`` share; the privacy then
recorded (:func:`round_privacy`) is the weaker one that ``t - c`` honest shares give. The ring is
sized so that, with all ``n`` clients in the sum, wrap-around has probability below
:data:`WRAP_PROBABILITY` (docs/threats.md DP-11, SA-12; bound in :func:`choose_bits`).

Everything here is pure: no clocks, no I/O, no global RNG. Randomness is injected.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from dp._bounds import (
    ddg_rdp,
    ddg_rho,
    kls_tau,
    log_tail_skellam,
    log_tail_subgaussian,
    rounded_l1_bound,
    rounded_l2_bound,
    skellam_rdp,
    skellam_rho,
)
from dp._errors import (
    InsufficientSurvivors,
    InvalidParameter,
    InvalidVector,
    RoundingFailure,
    WrapAroundRisk,
)
from dp._hadamard import next_power_of_two, randomized_hadamard, randomized_hadamard_inverse
from dp._random import OsRandom, RandomSource, require_csprng, uniform_floats
from dp.noise import discrete_gaussian, discrete_gaussian_variance, skellam

__all__ = [
    "DEFAULT_BETA",
    "MAX_BITS",
    "MAX_ROUNDING_ATTEMPTS",
    "MIN_DISCRETE_GAUSSIAN_SIGMA",
    "WRAP_PROBABILITY",
    "Calibration",
    "DecodedSum",
    "DistributedDPConfig",
    "Mechanism",
    "Rotation",
    "RoundPrivacy",
    "choose_bits",
    "choose_scale",
    "clip_l2",
    "decode",
    "encode",
    "round_privacy",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U32 = npt.NDArray[np.uint32]

Mechanism = Literal["gaussian", "skellam"]
Rotation = Literal["hadamard", "none"]
Calibration = Literal["honest-survivors", "all-survivors"]

DEFAULT_BETA = math.exp(-0.5)
"""KLS21/TFF default for conditional rounding: each rounding attempt fails w.p. <= e^-0.5."""

WRAP_PROBABILITY = 1e-9
"""Largest accepted probability that the noisy sum wraps around the ring in some coordinate."""

MAX_BITS = 32
MAX_ROUNDING_ATTEMPTS = 256  # beta^256 <= e^-128 for the default beta
MIN_DISCRETE_GAUSSIAN_SIGMA = 0.5  # KLS21 assumes sigma >= 1/2 per share
_FLOAT_SLACK = 1e-9  # relative allowance for float error in clipping, rotation and scaling
_SCALE_SEARCH_DEPTH = 300  # choose_scale looks at most 2^300 below the largest possible scale


@dataclass(frozen=True, slots=True)
class DistributedDPConfig:
    """Public parameters of one distributed-DP round; every client and the server share them.

    ``noise_multiplier`` z sets the target central noise: standard deviation ``z * l2_clip`` per
    coordinate (in update units) once any ``min_survivors`` clients are summed. ``scale`` is the
    number of integer steps per update unit (``1 / granularity``); ``bits`` the ring Z_2^b.
    ``allow_seeded_rng`` is a test switch: production configurations leave it False so that
    :func:`encode` refuses a deterministic randomness source (docs/threats.md DP-04).

    ``max_corrupt`` (c) is how many of the survivors may be corrupt and add no noise (set it to
    the client policy's ``corrupt_bound``). ``calibration`` "honest-survivors" (the default)
    gives each client ``target / (t - c)`` so the ``t - c`` honest survivors alone reach the
    target; "all-survivors" gives ``target / t`` (the target holds only if no survivor is
    corrupt) and :func:`round_privacy` reports the weaker guarantee that actually holds.

    Construction validates everything and raises :class:`InvalidParameter` or
    :class:`WrapAroundRisk`; :meth:`calibrated` picks ``scale`` for you.
    """

    l2_clip: float
    noise_multiplier: float
    dim: int
    num_clients: int
    min_survivors: int
    scale: float
    mechanism: Mechanism = "gaussian"
    bits: int = MAX_BITS
    beta: float = DEFAULT_BETA
    rotation: Rotation = "hadamard"
    allow_seeded_rng: bool = False
    max_corrupt: int = 0
    calibration: Calibration = "honest-survivors"

    def __post_init__(self) -> None:
        _check_common(
            l2_clip=self.l2_clip,
            noise_multiplier=self.noise_multiplier,
            dim=self.dim,
            num_clients=self.num_clients,
            min_survivors=self.min_survivors,
            mechanism=self.mechanism,
            beta=self.beta,
            rotation=self.rotation,
        )
        _check_corruption(self.min_survivors, self.max_corrupt, self.calibration)
        _check_scale(self.scale)
        _check_bits(self.bits)
        if not isinstance(self.allow_seeded_rng, bool):
            raise InvalidParameter("allow_seeded_rng must be a bool")
        for name in ("l2_clip", "noise_multiplier", "scale", "beta"):  # one canonical type
            object.__setattr__(self, name, float(getattr(self, name)))
        if _hopeless(self.l2_clip, self.noise_multiplier, self.scale):
            raise WrapAroundRisk(f"scale {self.scale!r} cannot fit any ring of <= {MAX_BITS} bits")
        param = self.local_noise_parameter
        if (
            self.mechanism == "gaussian"
            and param > 0.0
            and math.sqrt(param) < MIN_DISCRETE_GAUSSIAN_SIGMA
        ):
            raise InvalidParameter(
                f"per-client discrete Gaussian sigma {math.sqrt(param):.3g} is below "
                f"{MIN_DISCRETE_GAUSSIAN_SIGMA} integer steps (KLS21 assumption): raise the scale"
            )
        log_p = _log_wrap_bound(
            self.mechanism,
            param,
            self.num_clients,
            self.max_abs_coordinate,
            self.bits,
            self.encoded_dim,
        )
        if not log_p < math.log(WRAP_PROBABILITY):
            raise WrapAroundRisk(
                f"a {self.bits}-bit ring can wrap with probability up to {math.exp(log_p):.3g} "
                f"(limit {WRAP_PROBABILITY:g}): lower the scale or raise the bits"
            )

    @classmethod
    def calibrated(
        cls,
        *,
        l2_clip: float,
        dim: int,
        num_clients: int,
        min_survivors: int,
        noise_multiplier: float | None = None,
        target_stddev: float | None = None,
        mechanism: Mechanism = "gaussian",
        bits: int = MAX_BITS,
        beta: float = DEFAULT_BETA,
        rotation: Rotation = "hadamard",
        allow_seeded_rng: bool = False,
        max_corrupt: int = 0,
        calibration: Calibration = "honest-survivors",
    ) -> DistributedDPConfig:
        """A config with the largest safe ``scale`` for ``bits`` (see :func:`choose_scale`).

        Give exactly one of ``noise_multiplier`` and ``target_stddev`` (the central noise
        standard deviation per coordinate, in update units, ``= noise_multiplier * l2_clip``).
        """
        z = _noise_multiplier(l2_clip, noise_multiplier, target_stddev)
        scale = choose_scale(
            l2_clip=l2_clip,
            noise_multiplier=z,
            dim=dim,
            num_clients=num_clients,
            min_survivors=min_survivors,
            bits=bits,
            mechanism=mechanism,
            beta=beta,
            rotation=rotation,
            max_corrupt=max_corrupt,
            calibration=calibration,
        )
        return cls(
            l2_clip=l2_clip,
            noise_multiplier=z,
            dim=dim,
            num_clients=num_clients,
            min_survivors=min_survivors,
            scale=scale,
            mechanism=mechanism,
            bits=bits,
            beta=beta,
            rotation=rotation,
            allow_seeded_rng=allow_seeded_rng,
            max_corrupt=max_corrupt,
            calibration=calibration,
        )

    @property
    def encoded_dim(self) -> int:
        """Length of the ring vector: ``dim`` padded to a power of two when rotating."""
        return _encoded_dim(self.dim, self.rotation)

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def granularity(self) -> float:
        """Update units per integer step."""
        return 1.0 / self.scale

    @property
    def target_stddev(self) -> float:
        """Central noise standard deviation per coordinate (update units) the honest survivors
        of any t are calibrated to reach (all t of them with ``calibration="all-survivors"``)."""
        return self.noise_multiplier * self.l2_clip

    @property
    def noise_shares(self) -> int:
        """How many shares the target is split into: ``t - c`` (honest-survivors) or ``t``."""
        return _noise_shares(self.min_survivors, self.max_corrupt, self.calibration)

    def honest_shares(self, num_survivors: int) -> int:
        """Noise shares guaranteed in a sum of ``num_survivors``: all but the ``c`` corrupt."""
        return _check_survivors(self, num_survivors) - self.max_corrupt

    @property
    def local_noise_parameter(self) -> float:
        """The sampler parameter of one client's share (integer domain): sigma^2 of N_Z(0,
        sigma^2) for 'gaussian', the variance of the Skellam for 'skellam'."""
        return _local_noise(
            self.mechanism, self.noise_multiplier, self.l2_clip, self.scale, self.noise_shares
        )[0]

    @property
    def local_noise_variance(self) -> float:
        """Actual variance of one client's noise share (integer domain), at least the target
        over :attr:`noise_shares`."""
        return _local_noise(
            self.mechanism, self.noise_multiplier, self.l2_clip, self.scale, self.noise_shares
        )[1]

    @property
    def rounded_l2_bound(self) -> float:
        """L2 bound on one client's rounded integer vector: the L2 sensitivity of the sum."""
        return rounded_l2_bound(self.l2_clip * self.scale, self.beta, self.encoded_dim)

    @property
    def max_abs_coordinate(self) -> int:
        """Largest magnitude of one rounded (pre-noise) coordinate of one client."""
        return _max_abs(self.l2_clip, self.scale, self.beta, self.encoded_dim)

    @property
    def wrap_probability(self) -> float:
        """Upper bound on P(the noisy sum of up to n clients wraps in some coordinate)."""
        return math.exp(
            _log_wrap_bound(
                self.mechanism,
                self.local_noise_parameter,
                self.num_clients,
                self.max_abs_coordinate,
                self.bits,
                self.encoded_dim,
            )
        )

    def noise_stddev(self, num_survivors: int) -> float:
        """Per-coordinate noise standard deviation (update units) in a sum of that many clients,
        if every one of them added its share (what the utility sees)."""
        s = _check_survivors(self, num_survivors)
        return math.sqrt(s * self.local_noise_variance) / self.scale

    def honest_noise_stddev(self, num_survivors: int) -> float:
        """The part of :meth:`noise_stddev` that holds with ``c`` corrupt survivors adding none
        (what the privacy guarantee rests on)."""
        return math.sqrt(self.honest_shares(num_survivors) * self.local_noise_variance) / self.scale

    def rounding_error_bound(self, num_survivors: int) -> float:
        """Worst-case L2 distance (update units, noise excluded) between a decoded sum and the
        sum of the clipped inputs: each coordinate of each client rounds by less than one step
        (``sqrt(encoded_dim)`` per client), plus a ``1e-9`` relative allowance for float error."""
        s = _check_survivors(self, num_survivors)
        return s * (math.sqrt(self.encoded_dim) / self.scale + _FLOAT_SLACK * self.l2_clip)

    def canonical_bytes(self) -> bytes:
        """A canonical, exact encoding of the parameters (for the round's ``config_digest``)."""
        items: dict[str, object] = {"dp_encoding": "dp/v1/distributed"}
        for f in fields(self):
            value = getattr(self, f.name)
            items[f.name] = value.hex() if isinstance(value, float) else value
        return json.dumps(items, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_canonical(cls, raw: bytes) -> DistributedDPConfig:
        """Inverse of :meth:`canonical_bytes`; validates like the constructor (the bytes come
        from the network)."""
        try:
            items = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidParameter(f"DP parameters are not canonical JSON: {exc}") from exc
        if not isinstance(items, dict) or items.pop("dp_encoding", None) != "dp/v1/distributed":
            raise InvalidParameter("not a dp/v1/distributed parameter set")
        names = {f.name: f for f in fields(cls)}
        if set(items) != set(names):
            raise InvalidParameter("DP parameters have missing or unknown fields")
        kwargs: dict[str, Any] = {}
        for name, value in items.items():
            if name in ("l2_clip", "noise_multiplier", "scale", "beta"):
                if not isinstance(value, str):
                    raise InvalidParameter(f"{name} must be a hex float")
                try:
                    kwargs[name] = float.fromhex(value)
                except ValueError as exc:
                    raise InvalidParameter(f"{name} is not a hex float") from exc
            else:
                kwargs[name] = value
        config = cls(**kwargs)
        if config.canonical_bytes() != raw:
            raise InvalidParameter("DP parameters are not in canonical form")
        return config


@dataclass(frozen=True, slots=True, eq=False)
class DecodedSum:
    """The decoded sum of the survivors' clipped updates, with what is known about its error.

    ``noise_stddev``: per-coordinate standard deviation of the DP noise actually present;
    ``rounding_error_bound``: worst-case L2 error from rounding (noise excluded).
    """

    values: F64
    num_survivors: int
    noise_stddev: float
    rounding_error_bound: float

    @property
    def mean(self) -> F64:
        """The average update over the survivors."""
        return self.values / self.num_survivors


@dataclass(frozen=True, slots=True)
class RoundPrivacy:
    """Privacy of one round for one client, given the number of noise shares in the sum.

    Sensitivities are in integer units, for add/remove-one-client ("zero-out") adjacency: one
    client's rounded vector, whose L2 norm conditional rounding bounds by ``l2_sensitivity``.

    ``num_survivors`` counts the *honest* noise shares the bound rests on: the
    ``decoded_survivors`` in the sum minus the ``assumed_corrupt`` ones, who may add no noise.

    Assumptions: at most ``assumed_corrupt`` of the clients in the sum are corrupt and every
    other one added its own share honestly; the server sees only the sum (secure aggregation);
    no amplification by sampling; the float sampler slack of
    :data:`dp.noise.SAMPLER_LOG_PMF_ERROR` is not included.
    """

    mechanism: Mechanism
    num_survivors: int
    dim: int
    l2_sensitivity: float
    l1_sensitivity: float
    local_noise_parameter: float
    decoded_survivors: int | None = None
    assumed_corrupt: int = 0

    @property
    def local_stddev(self) -> float:
        """``sqrt(local_noise_parameter)``: the ``local_stddev`` of the matching distributed-DP
        events in :mod:`dp.accounting` (integer units, like the sensitivities)."""
        return math.sqrt(self.local_noise_parameter)

    @property
    def tau(self) -> float:
        """KLS21's tau (0 for Skellam, whose sums are exactly Skellam)."""
        if self.mechanism == "skellam":
            return 0.0
        return kls_tau(self.local_noise_parameter, self.num_survivors)

    @property
    def rho(self) -> float:
        """zCDP rho: RDP of every order alpha >= 1 is at most alpha * rho (``inf`` if no noise)."""
        if self.mechanism == "skellam":
            var = self.num_survivors * self.local_noise_parameter
            return skellam_rho(self.l2_sensitivity, self.l1_sensitivity, var)
        return ddg_rho(
            self.l2_sensitivity,
            self.l1_sensitivity,
            self.local_noise_parameter,
            self.num_survivors,
            self.dim,
        )

    def rdp(self, order: float) -> float:
        """Renyi DP of the given order (> 1) for this round (KLS21 / AKL21 bounds)."""
        if not order > 1.0:
            raise InvalidParameter(f"RDP order must be > 1, got {order}")
        if self.mechanism == "skellam":
            var = self.num_survivors * self.local_noise_parameter
            return skellam_rdp(order, self.l2_sensitivity, self.l1_sensitivity, var)
        return ddg_rdp(
            order,
            self.l2_sensitivity,
            self.l1_sensitivity,
            self.local_noise_parameter,
            self.num_survivors,
            self.dim,
        )


# --- parameter checks and derived quantities ---------------------------------------------------


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _check_common(
    *,
    l2_clip: float,
    noise_multiplier: float,
    dim: int,
    num_clients: int,
    min_survivors: int,
    mechanism: str,
    beta: float,
    rotation: str,
) -> None:
    if not (_finite(l2_clip) and l2_clip > 0):
        raise InvalidParameter(f"l2_clip must be a positive finite number, got {l2_clip!r}")
    if not (_finite(noise_multiplier) and noise_multiplier >= 0):
        raise InvalidParameter(
            f"noise_multiplier must be finite and >= 0, got {noise_multiplier!r}"
        )
    if not (_is_int(dim) and dim >= 1):
        raise InvalidParameter(f"dim must be a positive int, got {dim!r}")
    if not (_is_int(num_clients) and num_clients >= 1):
        raise InvalidParameter(f"num_clients must be a positive int, got {num_clients!r}")
    if not (_is_int(min_survivors) and 1 <= min_survivors <= num_clients):
        raise InvalidParameter(
            f"min_survivors must be an int in [1, num_clients={num_clients}], got {min_survivors!r}"
        )
    if mechanism not in get_args(Mechanism):
        raise InvalidParameter(f"mechanism must be one of {get_args(Mechanism)}, got {mechanism!r}")
    if not (_finite(beta) and 0.0 <= beta < 1.0):
        raise InvalidParameter(f"beta must be in [0, 1), got {beta!r}")
    if rotation not in get_args(Rotation):
        raise InvalidParameter(f"rotation must be one of {get_args(Rotation)}, got {rotation!r}")


def _check_corruption(min_survivors: int, max_corrupt: int, calibration: str) -> None:
    if not (_is_int(max_corrupt) and 0 <= max_corrupt < min_survivors):
        raise InvalidParameter(
            f"max_corrupt must be an int in [0, min_survivors={min_survivors}), got {max_corrupt!r}"
        )
    if calibration not in get_args(Calibration):
        raise InvalidParameter(
            f"calibration must be one of {get_args(Calibration)}, got {calibration!r}"
        )


def _noise_shares(min_survivors: int, max_corrupt: int, calibration: str) -> int:
    """The honest-survivors calibration splits the target over the ``t - c`` honest shares."""
    return min_survivors - max_corrupt if calibration == "honest-survivors" else min_survivors


def _check_scale(scale: float) -> None:
    if not (_finite(scale) and scale > 0):
        raise InvalidParameter(f"scale must be a positive finite number, got {scale!r}")


def _check_bits(bits: int) -> None:
    if not (_is_int(bits) and 2 <= bits <= MAX_BITS):
        raise InvalidParameter(f"bits must be an int in [2, {MAX_BITS}], got {bits!r}")


def _check_survivors(config: DistributedDPConfig, num_survivors: int) -> int:
    if not _is_int(num_survivors):
        raise InvalidParameter(f"num_survivors must be an int, got {num_survivors!r}")
    if num_survivors < config.min_survivors:
        raise InsufficientSurvivors(
            f"{num_survivors} survivors < min_survivors={config.min_survivors}: the noise was "
            "calibrated for at least that many shares, so this sum is under-noised"
        )
    if num_survivors > config.num_clients:
        raise InvalidParameter(f"{num_survivors} survivors > num_clients={config.num_clients}")
    return num_survivors


def _noise_multiplier(
    l2_clip: float, noise_multiplier: float | None, target_stddev: float | None
) -> float:
    if (noise_multiplier is None) == (target_stddev is None):
        raise InvalidParameter("give exactly one of noise_multiplier and target_stddev")
    if noise_multiplier is not None:
        return noise_multiplier
    assert target_stddev is not None
    if not (_finite(l2_clip) and l2_clip > 0 and _finite(target_stddev) and target_stddev >= 0):
        raise InvalidParameter("l2_clip must be positive and target_stddev finite and >= 0")
    return target_stddev / l2_clip


def _encoded_dim(dim: int, rotation: str) -> int:
    return next_power_of_two(dim) if rotation == "hadamard" else dim


def _local_noise(
    mechanism: str, noise_multiplier: float, l2_clip: float, scale: float, shares: int
) -> tuple[float, float]:
    """(sampler parameter, actual variance) of one client's share, so that any ``shares``
    shares carry at least the target variance ``(z c scale)^2``."""
    target = (noise_multiplier * l2_clip * scale) ** 2 / shares
    if target == 0.0 or mechanism == "skellam":
        return target, target  # Skellam: variance is the parameter, sums are exact
    # N_Z(0, s^2) has variance slightly below s^2 for small s: raise s^2 until it is enough.
    hi = target
    while discrete_gaussian_variance(hi) < target:
        hi *= 2.0
    lo = target
    if hi > target:
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            if discrete_gaussian_variance(mid) >= target:
                hi = mid
            else:
                lo = mid
    return hi, discrete_gaussian_variance(hi)


def _max_abs(l2_clip: float, scale: float, beta: float, encoded_dim: int) -> int:
    """Bound on ``|r_j|`` for one client's rounded vector ``r``: a coordinate of a vector of
    norm <= c*scale rounds to at most floor(c*scale) + 1, and |r_j| <= ||r||_2 <= the rounded
    norm bound."""
    c_s = l2_clip * scale
    return min(
        math.floor(c_s * (1.0 + _FLOAT_SLACK)) + 1,
        math.floor(rounded_l2_bound(c_s, beta, encoded_dim)),
    )


def _log_wrap_bound(
    mechanism: str, local_param: float, num_clients: int, max_abs: int, bits: int, d: int
) -> float:
    """log of an upper bound on P(some coordinate of the noisy sum leaves [-2^(b-1), 2^(b-1))).

    With ``n`` clients, signal ``|sum_i r_ij| <= n M`` deterministically (M from
    :func:`_max_abs`, valid for adversarial inputs too), so coordinate j wraps only if the noise
    ``|N_j| >= a = 2^(b-1) - n M``. A union bound over the ``d`` coordinates and both signs:
    ``P(wrap) <= 2 d P(N_j >= a)``, with ``P(N_j >= a) <= exp(-a^2 / (2 n sigma^2))`` for the
    discrete Gaussian (n sigma^2-subgaussian) and the Chernoff bound
    ``exp(-(a asinh(a/V) - V (sqrt(1 + (a/V)^2) - 1)))``, ``V = n * variance``, for Skellam.
    The sum over fewer survivors has less signal and less noise, so n is the worst case.
    """
    a = (1 << (bits - 1)) - num_clients * max_abs
    if a <= 0:
        return 0.0
    total = num_clients * local_param
    if mechanism == "skellam":
        log_tail = log_tail_skellam(float(a), total)
    else:
        log_tail = log_tail_subgaussian(float(a), total)
    return min(0.0, math.log(2.0 * d) + log_tail)


def _hopeless(l2_clip: float, noise_multiplier: float, scale: float) -> bool:
    """True when one clipped input (>= 2^31 steps) or the noise (std >= 2^40 steps) cannot fit
    a 32-bit ring at all; checked first so that huge scales never overflow the maths below."""
    return l2_clip * scale >= 2.0**31 or noise_multiplier * l2_clip * scale >= 2.0**40


def _wrap_ok(
    *,
    l2_clip: float,
    noise_multiplier: float,
    num_clients: int,
    min_survivors: int,
    scale: float,
    mechanism: str,
    bits: int,
    beta: float,
    encoded_dim: int,
    shares: int,
) -> bool:
    if _hopeless(l2_clip, noise_multiplier, scale):
        return False
    param = _local_noise(mechanism, noise_multiplier, l2_clip, scale, shares)[0]
    max_abs = _max_abs(l2_clip, scale, beta, encoded_dim)
    log_p = _log_wrap_bound(mechanism, param, num_clients, max_abs, bits, encoded_dim)
    return log_p < math.log(WRAP_PROBABILITY)


def choose_bits(
    *,
    l2_clip: float,
    noise_multiplier: float,
    dim: int,
    num_clients: int,
    min_survivors: int,
    scale: float,
    mechanism: Mechanism = "gaussian",
    beta: float = DEFAULT_BETA,
    rotation: Rotation = "hadamard",
    max_corrupt: int = 0,
    calibration: Calibration = "honest-survivors",
) -> int:
    """Smallest ring bits ``b`` for which the noisy sum wraps with probability < 1e-9.

    Tail bound (see ``_log_wrap_bound``): with all n clients summed, each rounded coordinate
    ``|r_ij| <= M = min(floor(c*scale) + 1, floor(rounded L2 bound))``, so coordinate j can wrap
    only if its noise reaches ``a = 2^(b-1) - n M``; over ``d`` coordinates
    ``P(wrap) <= 2 d exp(-a^2 / (2 n sigma^2))`` (discrete Gaussian, sub-Gaussian) or the
    Skellam Chernoff bound. Raises :class:`WrapAroundRisk` if even 32 bits are not enough.
    """
    _check_common(
        l2_clip=l2_clip,
        noise_multiplier=noise_multiplier,
        dim=dim,
        num_clients=num_clients,
        min_survivors=min_survivors,
        mechanism=mechanism,
        beta=beta,
        rotation=rotation,
    )
    _check_scale(scale)
    _check_corruption(min_survivors, max_corrupt, calibration)
    shares = _noise_shares(min_survivors, max_corrupt, calibration)
    for bits in range(2, MAX_BITS + 1):
        if _wrap_ok(
            l2_clip=l2_clip,
            noise_multiplier=noise_multiplier,
            num_clients=num_clients,
            min_survivors=min_survivors,
            scale=scale,
            mechanism=mechanism,
            bits=bits,
            beta=beta,
            encoded_dim=_encoded_dim(dim, rotation),
            shares=shares,
        ):
            return bits
    raise WrapAroundRisk(
        f"no ring of at most {MAX_BITS} bits keeps P(wrap) < {WRAP_PROBABILITY:g} at scale "
        f"{scale!r}: lower the scale"
    )


def choose_scale(
    *,
    l2_clip: float,
    noise_multiplier: float,
    dim: int,
    num_clients: int,
    min_survivors: int,
    bits: int = MAX_BITS,
    mechanism: Mechanism = "gaussian",
    beta: float = DEFAULT_BETA,
    rotation: Rotation = "hadamard",
    max_corrupt: int = 0,
    calibration: Calibration = "honest-survivors",
) -> float:
    """Largest power-of-two scale for which a ``bits``-bit ring wraps with probability < 1e-9.

    Same tail bound as :func:`choose_bits`, which grows with the scale (signal and noise both
    scale), so a binary search over exponents finds the largest safe one. A power of two makes
    scaling and unscaling exact in floating point. Raises :class:`WrapAroundRisk` when no scale
    both fits and leaves each discrete Gaussian share with sigma >= 1/2 integer steps.
    """
    _check_common(
        l2_clip=l2_clip,
        noise_multiplier=noise_multiplier,
        dim=dim,
        num_clients=num_clients,
        min_survivors=min_survivors,
        mechanism=mechanism,
        beta=beta,
        rotation=rotation,
    )
    _check_bits(bits)
    _check_corruption(min_survivors, max_corrupt, calibration)
    shares = _noise_shares(min_survivors, max_corrupt, calibration)
    d = _encoded_dim(dim, rotation)

    def ok(exponent: int) -> bool:
        return _wrap_ok(
            l2_clip=l2_clip,
            noise_multiplier=noise_multiplier,
            num_clients=num_clients,
            min_survivors=min_survivors,
            scale=math.ldexp(1.0, exponent),
            mechanism=mechanism,
            bits=bits,
            beta=beta,
            encoded_dim=d,
            shares=shares,
        )

    hi = 32 - math.frexp(l2_clip)[1]  # c * 2^hi >= 2^31: one input alone overflows the ring
    lo = hi - _SCALE_SEARCH_DEPTH
    if not ok(lo):
        raise WrapAroundRisk(f"no scale fits a {bits}-bit ring for {num_clients} clients")
    while hi - lo > 1:  # invariant: ok(lo) and not ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    scale = math.ldexp(1.0, lo)
    param = _local_noise(mechanism, noise_multiplier, l2_clip, scale, shares)[0]
    if mechanism == "gaussian" and 0.0 < param < MIN_DISCRETE_GAUSSIAN_SIGMA**2:
        raise WrapAroundRisk(
            f"a {bits}-bit ring is too small: at the largest safe scale each client's discrete "
            f"Gaussian share has sigma {math.sqrt(param):.3g} < {MIN_DISCRETE_GAUSSIAN_SIGMA}"
        )
    return scale


def round_privacy(config: DistributedDPConfig, num_survivors: int | None = None) -> RoundPrivacy:
    """Sensitivities and zCDP/RDP of one round; defaults to the worst case, ``min_survivors``.

    The guarantee rests on the honest shares only: ``num_survivors - max_corrupt`` of them
    (docs/threats.md DP-10). With the default calibration that is the target at ``t`` survivors;
    with "all-survivors" it is ``(t - c) / t`` of the target variance, and so is what is charged.

    Discrete Gaussian: KLS21 (sum of ``s`` N_Z(0, sigma^2) shares). Skellam: AKL21 with total
    variance ``s * variance``. Sensitivity: ``Delta_2`` = the conditional-rounding bound of
    :attr:`DistributedDPConfig.rounded_l2_bound`, ``Delta_1 = Delta_2 min(sqrt d, Delta_2)``,
    with ``d`` the padded dimension. See :class:`RoundPrivacy` for what is assumed.
    """
    s = config.min_survivors if num_survivors is None else _check_survivors(config, num_survivors)
    l2 = config.rounded_l2_bound
    return RoundPrivacy(
        mechanism=config.mechanism,
        num_survivors=config.honest_shares(s),
        dim=config.encoded_dim,
        l2_sensitivity=l2,
        l1_sensitivity=rounded_l1_bound(l2, config.encoded_dim),
        local_noise_parameter=config.local_noise_parameter,
        decoded_survivors=s,
        assumed_corrupt=config.max_corrupt,
    )


# --- encode / decode ------------------------------------------------------------------------------


def clip_l2(vector: npt.ArrayLike, l2_clip: float) -> F64:
    """``vector`` scaled down to L2 norm ``l2_clip`` if it is longer (a float64 copy).

    The norm is computed on ``vector / max|vector|`` so huge finite inputs do not overflow.
    """
    try:
        x = np.array(vector, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise InvalidVector(f"vector is not a real array: {exc}") from exc
    if not np.all(np.isfinite(x)):
        raise InvalidVector("vector contains NaN or Inf (docs/threats.md IV-02)")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak == 0.0:
        return x
    norm = peak * float(np.sqrt(np.sum(np.square(x / peak))))
    if norm > l2_clip:
        x *= l2_clip / norm
    return x


def _as_update(vector: npt.ArrayLike, dim: int) -> F64:
    try:
        x = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidVector(f"vector is not a real array: {exc}") from exc
    if x.shape != (dim,):
        raise InvalidVector(f"expected a vector of shape ({dim},), got {x.shape}")
    return x


def _sum_squares(r: I64) -> int:
    """Exact ``sum(r**2)`` for ``|r| < 2^31``, summed in 31-bit halves so int64 cannot overflow."""
    sq = r * r
    lo = int(np.sum(sq & ((1 << 31) - 1)))
    hi = int(np.sum(sq >> 31))
    return (hi << 31) + lo


def _conditional_round(y: F64, max_sq: int, rng: RandomSource) -> I64:
    """Unbiased randomized rounding, redrawn until ``||r||^2 <= max_sq`` (KLS21 Theorem 1).

    Security: the number of attempts depends on the input; keep encoding off timed paths.
    """
    base = np.floor(y)
    frac = y - base
    floor_int = base.astype(np.int64)
    for _ in range(MAX_ROUNDING_ATTEMPTS):
        r = floor_int + (uniform_floats(rng, y.size) < frac)
        if _sum_squares(r) <= max_sq:
            return r
    raise RoundingFailure(
        f"randomized rounding exceeded its norm bound {MAX_ROUNDING_ATTEMPTS} times in a row"
    )


def encode(
    vector: npt.ArrayLike,
    config: DistributedDPConfig,
    round_seed: bytes,
    rng: RandomSource | None = None,
) -> U32:
    """One client's update as a ring vector in Z_2^b (dtype uint32, length ``encoded_dim``).

    ``round_seed`` is the round's public seed (>= 16 bytes, the same for every client) from which
    the rotation signs are derived. ``rng`` defaults to the OS CSPRNG.

    Security: the rounding coins and the noise share come from ``rng``; a deterministic source is
    refused unless ``config.allow_seeded_rng`` (test mode). The output is noised, but only the
    *sum* over at least ``min_survivors`` clients carries the target noise: send it masked.
    """
    source: RandomSource = OsRandom() if rng is None else rng
    require_csprng(source, allow_seeded=config.allow_seeded_rng)
    x = clip_l2(_as_update(vector, config.dim), config.l2_clip)
    d = config.encoded_dim
    if config.rotation == "hadamard":
        padded = np.zeros(d, dtype=np.float64)
        padded[: config.dim] = x
        y = randomized_hadamard(padded, round_seed)
    else:
        y = x
    y = y * config.scale
    bound = config.rounded_l2_bound
    r = _conditional_round(y, math.floor(bound * bound * (1.0 - 2.0**-40)), source)
    if r.size and int(np.max(np.abs(r))) > config.max_abs_coordinate:  # cannot happen; be sure
        raise InvalidVector("a rounded coordinate exceeds the ring's per-client bound")
    param = config.local_noise_parameter
    if config.mechanism == "skellam":
        noise = skellam(param, d, source)
    else:
        noise = discrete_gaussian(param, d, source)
    return ((r + noise) & (config.modulus - 1)).astype(np.uint32)


def _as_ring_vector(ring_sum: npt.ArrayLike, config: DistributedDPConfig) -> I64:
    arr = np.asarray(ring_sum)
    if arr.dtype.kind not in "ui":
        raise InvalidVector(f"ring vector must have an integer dtype, got {arr.dtype}")
    if arr.shape != (config.encoded_dim,):
        raise InvalidVector(
            f"expected a ring vector of shape ({config.encoded_dim},), got {arr.shape}"
        )
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        if np.any(arr >= np.uint64(config.modulus)):
            raise InvalidVector(f"ring vector has entries >= 2^{config.bits}")
        return arr.astype(np.int64)
    ints = arr.astype(np.int64)
    if np.any(ints < 0) or np.any(ints >= config.modulus):
        raise InvalidVector(f"ring vector has entries outside [0, 2^{config.bits})")
    return ints


def decode(
    ring_sum: npt.ArrayLike,
    config: DistributedDPConfig,
    round_seed: bytes,
    num_survivors: int,
) -> DecodedSum:
    """The sum of ``num_survivors`` clients' clipped updates from their ring sum (mod 2^b).

    Raises :class:`InsufficientSurvivors` if fewer than ``min_survivors`` contributed: their
    noise shares alone do not reach the target (docs/threats.md DP-10).
    """
    s = _check_survivors(config, num_survivors)
    u = _as_ring_vector(ring_sum, config)
    signed = np.where(u >= config.modulus // 2, u - config.modulus, u)
    y = signed.astype(np.float64) / config.scale
    if config.rotation == "hadamard":
        x = randomized_hadamard_inverse(y, round_seed)[: config.dim]
    else:
        x = y
    return DecodedSum(
        values=np.ascontiguousarray(x),
        num_survivors=s,
        noise_stddev=config.noise_stddev(s),
        rounding_error_bound=config.rounding_error_bound(s),
    )
