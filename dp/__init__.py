"""Privacy maths for federated LoRA under secure aggregation.

The names exported here are the integer noise samplers and the distributed-DP encoder/decoder
(clip, rotate, scale, round, noise, wrap into Z_2^b): pure code on numpy and ``cryptography``,
no torch, sockets, clocks or global RNG. Randomness is injected through a
:class:`RandomSource`; production uses :class:`OsRandom`. Accounting, the ledger and the audit
live in their own modules (``dp.accounting``, ``dp.ledger``, ``dp.audit``).
"""

from __future__ import annotations

from dp._errors import (
    InsecureRandomness,
    InsufficientSurvivors,
    InvalidParameter,
    InvalidVector,
    PrivacyError,
    RoundingFailure,
    WrapAroundRisk,
)
from dp._hadamard import (
    next_power_of_two,
    randomized_hadamard,
    randomized_hadamard_inverse,
    rotation_signs,
    walsh_hadamard,
)
from dp._random import OsRandom, RandomSource, SeededRandom, require_csprng
from dp.composed import DistributedDP, DpRound, bind
from dp.distributed import (
    DEFAULT_BETA,
    MAX_BITS,
    WRAP_PROBABILITY,
    DecodedSum,
    DistributedDPConfig,
    Mechanism,
    Rotation,
    RoundPrivacy,
    choose_bits,
    choose_scale,
    clip_l2,
    decode,
    encode,
    round_privacy,
)
from dp.noise import (
    SAMPLER_LOG_PMF_ERROR,
    discrete_gaussian,
    discrete_gaussian_variance,
    poisson,
    skellam,
)

__all__ = [
    "DEFAULT_BETA",
    "MAX_BITS",
    "SAMPLER_LOG_PMF_ERROR",
    "WRAP_PROBABILITY",
    "DecodedSum",
    "DistributedDP",
    "DistributedDPConfig",
    "DpRound",
    "InsecureRandomness",
    "InsufficientSurvivors",
    "InvalidParameter",
    "InvalidVector",
    "Mechanism",
    "OsRandom",
    "PrivacyError",
    "RandomSource",
    "Rotation",
    "RoundPrivacy",
    "RoundingFailure",
    "SeededRandom",
    "WrapAroundRisk",
    "bind",
    "choose_bits",
    "choose_scale",
    "clip_l2",
    "decode",
    "discrete_gaussian",
    "discrete_gaussian_variance",
    "encode",
    "next_power_of_two",
    "poisson",
    "randomized_hadamard",
    "randomized_hadamard_inverse",
    "require_csprng",
    "rotation_signs",
    "round_privacy",
    "skellam",
    "walsh_hadamard",
]
