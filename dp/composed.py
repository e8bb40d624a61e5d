"""Distributed DP inside secure aggregation, composed: one object for the simulator, the gRPC
client and the aggregator, with the ring, the encoded dimension and the seed matched here.

A caller says how much to clip and how much noise (:class:`DistributedDP`); everything the two
layers must agree on follows from the round (``n``, ``t``, the degree) and the vector length:

* :meth:`DistributedDP.resolve` picks the smallest ring whose grid is fine against both the
  signal and the noise (at most 32 bits), and the noise share for ``c`` corrupt survivors
  (``max_corrupt``, else what the default :class:`secagg.ClientPolicy` tolerates);
* :func:`bind` returns the :class:`secagg.RoundConfig` to run (``d`` = the encoded dimension,
  ``bits`` = the DP ring, ``dp_digest`` = a hash of the DP parameters, so every signature
  commits to them) and a :class:`DpRound` that encodes and decodes;
* the rotation seed is derived from the round's public session id and number
  (:func:`rotation_seed`): nothing extra to distribute, fresh every round.

With a fully specified :class:`~dp.distributed.DistributedDPConfig` instead, it is checked
against the round rather than chosen.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import get_args

import numpy as np
import numpy.typing as npt

from dp._errors import InvalidParameter, WrapAroundRisk
from dp._random import RandomSource
from dp.distributed import (
    Calibration,
    DecodedSum,
    DistributedDPConfig,
    Mechanism,
    decode,
    encode,
)
from secagg import ClientPolicy, RoundConfig

__all__ = ["DistributedDP", "DpRound", "bind", "rotation_seed"]

_SEED_LABEL = b"secagg-dplora/dp-rotation-seed/v1\x00"


@dataclass(frozen=True, slots=True)
class DistributedDP:
    """User-level distributed DP for a secure sum: per-client L2 clip and central noise.

    ``noise_multiplier`` z: the decoded sum of any ``t`` survivors carries noise of standard
    deviation ``z * l2_clip`` per coordinate (for the ``t - c`` honest ones alone, with the
    default calibration). ``max_corrupt`` c: ``None`` takes the default client policy's bound
    for the round's degree (what every client checks anyway).
    """

    l2_clip: float = 1.0
    noise_multiplier: float = 1.0
    mechanism: Mechanism = "gaussian"
    max_corrupt: int | None = None
    calibration: Calibration = "honest-survivors"
    allow_seeded_rng: bool = False  # tests only (docs/threats.md DP-04)

    def corrupt(self, degree: int) -> int:
        """``c`` for a round whose clients have ``degree`` neighbours."""
        if self.max_corrupt is not None:
            return self.max_corrupt
        return ClientPolicy().corrupt_bound(degree)

    def resolve(self, dim: int, n: int, t: int, degree: int | None = None) -> DistributedDPConfig:
        """The full parameters for ``dim``-long updates from ``n`` clients, threshold ``t``.

        The smallest ring (12..32 bits) whose grid is 64 times finer than the per-coordinate
        signal after rotation (``l2_clip / sqrt(dim)``) or than the noise, when larger; else
        the widest that fits. Deterministic: every party computes the same one.
        """
        c = self.corrupt(n - 1 if degree is None else degree)
        if not 0 <= c < t or self.calibration not in get_args(Calibration):
            raise InvalidParameter(
                f"the DP noise cannot withstand c={c} corrupt of t={t} survivors "
                f"with calibration {self.calibration!r}: need 0 <= c < t"
            )
        signal = self.l2_clip / math.sqrt(max(dim, 1))
        want = max(signal, self.noise_multiplier * self.l2_clip) / 64.0
        last: DistributedDPConfig | None = None
        for bits in range(12, 33):
            try:
                cfg = DistributedDPConfig.calibrated(
                    l2_clip=self.l2_clip,
                    dim=dim,
                    num_clients=n,
                    min_survivors=t,
                    noise_multiplier=self.noise_multiplier,
                    mechanism=self.mechanism,
                    bits=bits,
                    max_corrupt=c,
                    calibration=self.calibration,
                    allow_seeded_rng=self.allow_seeded_rng,
                )
            except (ValueError, WrapAroundRisk):  # this ring is too small: try a wider one
                continue
            last = cfg
            if cfg.granularity <= want:
                return cfg
        if last is None:
            raise InvalidParameter("no ring of at most 32 bits fits these DP parameters")
        return last


def rotation_seed(config: RoundConfig, dp_config: DistributedDPConfig) -> bytes:
    """The round's public rotation seed: SHA-256 of the session id, round and DP parameters."""
    if config.session_id is None:
        raise InvalidParameter("the round has no session id yet (RoundConfig.with_session)")
    return hashlib.sha256(
        _SEED_LABEL
        + config.session_id
        + config.round.to_bytes(8, "big")
        + dp_config.canonical_bytes()
    ).digest()


def dp_digest(dp_config: DistributedDPConfig) -> bytes:
    """What :func:`bind` puts in ``RoundConfig.dp_digest``."""
    return hashlib.sha256(b"secagg-dplora/dp-config/v1\x00" + dp_config.canonical_bytes()).digest()


@dataclass(frozen=True)
class DpRound:
    """One round's DP and SecAgg parameters, matched. ``config`` is what the SecAgg parties run;
    :meth:`encode` gives a client's ring vector, :meth:`decode` the noisy sum."""

    config: RoundConfig
    dp: DistributedDPConfig

    @property
    def seed(self) -> bytes:
        return rotation_seed(self.config, self.dp)

    def check(self, config: RoundConfig) -> None:
        """Refuse a round whose SecAgg parameters do not carry these DP parameters."""
        if (
            config.d != self.dp.encoded_dim
            or config.ring_bits != self.dp.bits
            or config.n != self.dp.num_clients
            or config.t > self.dp.min_survivors
            or config.dp_digest != dp_digest(self.dp)
        ):
            raise InvalidParameter("the round's configuration does not match its DP parameters")

    def encode(self, x: npt.ArrayLike, rng: RandomSource | None = None) -> npt.NDArray[np.uint32]:
        """Clip, rotate, scale, round and noise one client's update into the round's ring."""
        return encode(x, self.dp, self.seed, rng)

    def decode(self, ring_sum: npt.ArrayLike, num_survivors: int) -> DecodedSum:
        """The noisy sum of ``num_survivors`` clients' clipped updates."""
        return decode(ring_sum, self.dp, self.seed, num_survivors)


def bind(
    config: RoundConfig, dp: DistributedDP | DistributedDPConfig, dim: int | None = None
) -> DpRound:
    """Match ``config`` (``n``, ``t``, ``k``, session, round; ``d`` is the update length unless
    ``dim`` is given) with ``dp``. Returns the :class:`DpRound` whose ``config`` to run."""
    length = config.d if dim is None else dim
    if isinstance(dp, DistributedDP):
        dp_config = dp.resolve(length, config.n, config.t, config.degree)
    elif isinstance(dp, DistributedDPConfig):
        dp_config = dp
        if dp_config.dim != length or dp_config.num_clients != config.n:
            raise InvalidParameter(
                f"DP parameters for dim={dp_config.dim}, n={dp_config.num_clients} do not fit "
                f"a round of {length}-long updates from {config.n} clients"
            )
        if dp_config.min_survivors < config.t:
            raise InvalidParameter("the DP noise assumes fewer survivors than the threshold t")
    else:
        raise InvalidParameter(f"dp must be DistributedDP or DistributedDPConfig, not {dp!r}")
    if config.bits is not None and config.bits != dp_config.bits:
        raise InvalidParameter(
            f"the round asks for {config.bits} ring bits, DP for {dp_config.bits}"
        )
    bound = replace(
        config, d=dp_config.encoded_dim, bits=dp_config.bits, dp_digest=dp_digest(dp_config)
    )
    return DpRound(bound, dp_config)
