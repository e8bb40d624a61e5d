"""Round parameters of the one-shot variant and how they are chosen (SPEC.md O2, O3).

The ring dimension is N = 2048, where the Homomorphic Encryption Standard's 128-bit table
(ternary secret, error sigma ~ 3.2) allows log2 q <= 54. The modulus is the smallest product of
two NTT primes that holds, for the round's largest cohort ``n``:

* the plaintext: the ring encoding of pairwise masking (``secagg.RingEncoding``), so the sum of
  ``n`` encoded inputs lies in (-2^(b-1), 2^(b-1)) and ``q >= 2^b * delta`` cannot wrap;
* the errors: the sum of ``n`` CBD(21) errors is CBD(21 n); Hoeffding bounds it by
  ``E(n) = sqrt(21 n ln(2^161))`` except with probability 2^-160 per coefficient, and
  ``delta >= 4 (2 E + 1)`` leaves it below delta / 2 (two spare bits make the check that a
  coefficient is near a multiple of delta meaningful, SPEC.md O5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import cached_property

from secagg._crypto import sha256
from secagg._errors import ConfigError, PolicyViolation
from secagg.encoding import DEFAULT_LEVEL_BITS, RingEncoding
from secagg.oneshot.ring import CBD_ETA, RingParams, ntt_prime_below

__all__ = [
    "HE_STANDARD_128",
    "ONESHOT_PROTOCOL_VERSION",
    "RING_DIM",
    "OneShotConfig",
    "OneShotPolicy",
    "error_bound",
    "plaintext_bits_for",
]

ONESHOT_PROTOCOL_VERSION = 1
RING_DIM = 2048
# Homomorphic Encryption Standard (2018), Table 1, 128-bit classical security, ternary secret,
# error sigma = 8 / sqrt(2 pi) ~ 3.2: the largest log2 q per ring dimension.
HE_STANDARD_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
FAILURE_BITS = 160  # per coefficient: 2^-160, so below 2^-128 over any round we accept
SPARE_BITS = 2
MAX_D = 1 << 28
MAX_COMMITTEE = 64
LABEL_ONESHOT_CONFIG = b"secagg/oneshot/v1/config"


def error_bound(n: int) -> int:
    """A bound on the sum of ``n`` CBD(21) errors that fails with probability <= 2^-160."""
    hoeffding = math.ceil(math.sqrt(CBD_ETA * n * (FAILURE_BITS + 1) * math.log(2)))
    return min(CBD_ETA * n, hoeffding)


def plaintext_bits_for(n: int, ring_bits: int) -> int:
    """The smallest one-shot ``bits`` whose per-client bound holds any centred value of a
    ``ring_bits``-bit ring vector (a distributed-DP encoding) for ``n`` clients."""
    for b in range(2, 33):
        if ((1 << (b - 1)) - 1) // n - 1 >= 1 << (ring_bits - 1):
            return b
    raise ConfigError(f"{n} clients of {ring_bits}-bit vectors do not fit 32 bits")


def choose_ring(n: int, plaintext_bits: int) -> RingParams:
    """The two primes and delta for ``n`` clients and a ``plaintext_bits``-bit sum."""
    delta_min = (2 * error_bound(n) + 1) << SPARE_BITS
    need = (1 << plaintext_bits) * delta_min
    bits = need.bit_length()
    b1 = max(16, (bits + 1) // 2)
    b2 = max(16, bits - b1 + 1)
    p1 = ntt_prime_below(b1, 2 * RING_DIM)
    p2 = ntt_prime_below(b2, 2 * RING_DIM, 1 if b2 == b1 else 0)
    while p1 * p2 < need:
        b2 += 1
        p2 = ntt_prime_below(b2, 2 * RING_DIM, 1 if b2 == b1 else 0)
    q = p1 * p2
    if q.bit_length() > HE_STANDARD_128[RING_DIM]:
        raise ConfigError(
            f"{n} clients need log2 q = {q.bit_length()} > {HE_STANDARD_128[RING_DIM]}, beyond "
            f"the 128-bit bound for N = {RING_DIM}: lower level_bits"
        )
    delta = q >> plaintext_bits
    return RingParams.make(RING_DIM, (p1, p2), delta)


@dataclass(frozen=True)
class OneShotConfig:
    """Everything the parties of one one-shot round agree on (the analogue of
    :class:`secagg.RoundConfig`).

    ``n`` is the most clients whose sum must not wrap (the registry's size); ``committee`` the
    member ids (sorted) holding shares of the secrets, ``threshold`` (t_c > c / 2) of them
    decrypt; ``min_cohort`` the fewest clients a released sum may hold. ``task_digest`` and
    ``model_digest`` (SHA-256, all zero for a statistics round) name the job a task round
    computes, e.g. federated DP-LoRA: bound into :attr:`digest`, so every member's key and
    every client's upload is for the same job (SPEC.md O9).
    """

    n: int
    d: int
    committee: tuple[int, ...]
    threshold: int
    min_cohort: int = 3
    clip: float = 1.0
    bits: int | None = None
    level_bits: int = DEFAULT_LEVEL_BITS
    session_id: bytes | None = None
    round: int = 0
    version: int = ONESHOT_PROTOCOL_VERSION
    task_digest: bytes = bytes(32)
    model_digest: bytes = bytes(32)

    def __post_init__(self) -> None:
        if not 2 <= self.n < 2**32:
            raise ConfigError("n must be in [2, 2^32)")
        if not 1 <= self.d <= MAX_D:
            raise ConfigError(f"d must be in [1, {MAX_D}]")
        c = len(self.committee)
        if not 1 <= c <= MAX_COMMITTEE:
            raise ConfigError(f"the committee must have 1 to {MAX_COMMITTEE} members")
        if tuple(sorted(set(self.committee))) != tuple(self.committee):
            raise ConfigError("committee ids must be distinct and sorted")
        if any(not 1 <= m < 2**32 for m in self.committee):
            raise ConfigError("committee ids must be in [1, 2^32)")
        if not c / 2 < self.threshold <= c:
            raise ConfigError(f"the committee threshold must satisfy c/2 < t_c <= c (c = {c})")
        if not 2 <= self.min_cohort <= self.n:
            raise ConfigError("min_cohort must be in [2, n]")
        if self.session_id is not None and len(self.session_id) != 16:
            raise ConfigError("session_id must be 16 bytes")
        if not 0 <= self.round < 2**64:
            raise ConfigError("round must fit in 64 bits")
        if len(self.task_digest) != 32 or len(self.model_digest) != 32:
            raise ConfigError("task_digest and model_digest must be 32 bytes")
        if self.task_digest == bytes(32) and self.model_digest != bytes(32):
            raise ConfigError("a round with a model must have a task")
        if self.version != ONESHOT_PROTOCOL_VERSION:
            raise ConfigError(f"unsupported one-shot protocol version {self.version}")
        _ = self.ring  # ConfigError when the cohort cannot fit under the 128-bit bound

    @cached_property
    def encoding(self) -> RingEncoding:
        return RingEncoding.choose(self.n, self.clip, self.bits, self.level_bits)

    @cached_property
    def ring(self) -> RingParams:
        return choose_ring(self.n, self.encoding.bits)

    @property
    def chunks(self) -> int:
        """Ring elements per upload: ceil(d / N)."""
        return -(-self.d // self.ring.n)

    @property
    def masked_bytes(self) -> int:
        """Bytes of the masked chunks (both residues, bit-packed)."""
        count = self.chunks * self.ring.n
        return sum((count * b + 7) // 8 for b in self.ring.residue_bits)

    @property
    def share_plain_bytes(self) -> int:
        """Bytes of one member's share of one client's secret, before encryption."""
        return sum((self.ring.n * b + 7) // 8 for b in self.ring.residue_bits)

    def position(self, member: int) -> int:
        """A member's Shamir x-coordinate: its 1-based place in the committee."""
        try:
            return self.committee.index(member) + 1
        except ValueError:
            raise ConfigError(f"{member} is not on this round's committee") from None

    def error_bound(self, included: int) -> float:
        """Worst-case absolute error per coordinate of the released sum (rounding only: the
        lattice errors are removed exactly)."""
        return self.encoding.error_bound(included)

    def with_session(self, session_id: bytes, round_: int | None = None) -> OneShotConfig:
        return replace(self, session_id=session_id, round=self.round if round_ is None else round_)

    def canonical(self) -> bytes:
        if self.session_id is None:
            raise ConfigError("the config has no session_id yet")
        enc, ring = self.encoding, self.ring
        doc = {
            "version": self.version,
            "mode": "oneshot",
            "session_id": self.session_id.hex(),
            "round": self.round,
            "n": self.n,
            "d": self.d,
            "committee": list(self.committee),
            "threshold": self.threshold,
            "min_cohort": self.min_cohort,
            "bits": enc.bits,
            "clip": float(enc.clip).hex(),
            "scale": float(enc.scale).hex(),
            "ring_dim": ring.n,
            "primes": list(ring.primes),
            "delta": ring.delta,
            "error": f"cbd{CBD_ETA}",
            "secret": "ternary",
        }
        if self.task_digest != bytes(32):  # statistics rounds keep their earlier digest
            doc["task_digest"] = self.task_digest.hex()
            doc["model_digest"] = self.model_digest.hex()
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @cached_property
    def digest(self) -> bytes:
        """Bound into every signature, AEAD associated data and the public ``a_k``."""
        return sha256(LABEL_ONESHOT_CONFIG, self.canonical())

    def describe(self) -> str:
        ring = self.ring
        return (
            f"one-shot RLWE N={ring.n}, log2 q={ring.log_q:.1f}, {self.chunks} chunks for "
            f"d={self.d}, committee {len(self.committee)} (t_c={self.threshold})"
        )


@dataclass(frozen=True)
class OneShotPolicy:
    """A client's floor: the smallest committee, committee threshold and cohort it accepts, and
    how many corrupt committee members it wants tolerated: ``2 t_c - c > max_corrupt_members``
    (SPEC.md O7; 0, the default, is ``t_c > c / 2``)."""

    min_committee: int = 3
    min_threshold: int = 2
    min_cohort: int = 3
    max_corrupt_members: int = 0

    def check(self, cfg: OneShotConfig, registered: set[int] | frozenset[int]) -> None:
        c = len(cfg.committee)
        if 2 * cfg.threshold - c <= self.max_corrupt_members:
            raise PolicyViolation(
                f"t_c = {cfg.threshold} of c = {c} tolerates {2 * cfg.threshold - c - 1} corrupt "
                f"members, this client wants {self.max_corrupt_members}"
            )
        if c < self.min_committee:
            raise PolicyViolation(f"a committee of {c} is below this client's floor")
        if cfg.threshold < self.min_threshold:
            raise PolicyViolation(f"a committee threshold of {cfg.threshold} is too low")
        if cfg.min_cohort < self.min_cohort:
            raise PolicyViolation(f"a minimum cohort of {cfg.min_cohort} is too low")
        missing = set(cfg.committee) - set(registered)
        if missing:
            raise PolicyViolation(f"committee members {sorted(missing)} are not registered")
