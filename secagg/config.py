"""Round parameters (docs/protocol.md §2), their digest, and the client's policy floor.

``config_digest`` is bound into every signature and AEAD associated-data string, so clients
holding different views of the round (docs/threats.md SA-06) can never be combined.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, replace
from functools import cached_property

from secagg._crypto import LABEL_CONFIG, sha256
from secagg._errors import ConfigError, PolicyViolation
from secagg.encoding import DEFAULT_LEVEL_BITS, RingEncoding
from secagg.verify_round import MAX_BOUND

__all__ = ["PROTOCOL_VERSION", "ClientPolicy", "RoundConfig", "Stage"]

PROTOCOL_VERSION = 1
MAX_CLIENTS = 2**32 - 1


class Stage(enum.Enum):
    """The stages of docs/protocol.md §4, in order. ``CHECK`` (SPEC.md D12) only runs in a round
    with contribution verification (``RoundConfig.norm_bound``); others skip it."""

    ADVERTISE_KEYS = 0
    SHARE_KEYS = 1
    MASKED_INPUT = 2
    CHECK = 3
    CONSISTENCY = 4
    UNMASK = 5


@dataclass(frozen=True)
class RoundConfig:
    """Everything both sides must agree on for one round (docs/protocol.md §2).

    ``k`` is the number of neighbours each client shares with (SecAgg+); ``None`` or ``n - 1``
    means the complete graph (plain SecAgg). ``bits`` is the ring size ``b``; when ``None`` it is
    chosen from ``n`` and ``level_bits`` so that the sum cannot wrap (docs/protocol.md §5).
    ``session_id`` is 16 fresh random bytes per round; the server (or :func:`secagg.simulate`)
    fills it in with :meth:`with_session`.

    ``norm_bound`` turns on contribution verification (docs/protocol.md §7, SPEC.md D11, D12):
    every client commits to the centred lift of its encoded vector and proves in zero knowledge
    that its squared L2 norm is at most ``norm_bound`` (``0 <= norm_bound < 2^64``) and that
    its masked upload is that vector, masked (the CHECK stage). ``None`` (the default) turns it
    off.
    """

    n: int
    t: int
    d: int
    k: int | None = None
    clip: float = 1.0
    bits: int | None = None
    level_bits: int = DEFAULT_LEVEL_BITS
    session_id: bytes | None = None
    round: int = 0
    model_digest: bytes = bytes(32)
    dp_digest: bytes = bytes(32)
    version: int = PROTOCOL_VERSION
    norm_bound: int | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.n <= MAX_CLIENTS:
            raise ConfigError("n must be in [2, 2^32 - 1]")
        if self.d < 1:
            raise ConfigError("d must be positive")
        if self.k is not None and not 1 <= self.k <= self.n - 1:
            raise ConfigError("k must be in [1, n - 1]")
        if self.k is not None and self.k < self.n - 1 and self.k % 2:
            raise ConfigError("k must be even (k/2 neighbours on each side of the ring) or n - 1")
        if not 1 <= self.t <= self.degree:
            raise ConfigError(f"t must be in [1, k]; got t={self.t}, k={self.degree}")
        if self.session_id is not None and len(self.session_id) != 16:
            raise ConfigError("session_id must be 16 bytes")
        if self.round < 0 or self.round >= 2**64:
            raise ConfigError("round must fit in 64 bits")
        if len(self.model_digest) != 32 or len(self.dp_digest) != 32:
            raise ConfigError("model_digest and dp_digest are 32-byte digests")
        if self.version != PROTOCOL_VERSION:
            raise ConfigError(f"unsupported protocol version {self.version}")
        if not 2 <= self.level_bits <= 31:
            raise ConfigError("level_bits must be in [2, 31]")
        _ = self.encoding  # validates clip and bits
        if self.norm_bound is not None:
            if not isinstance(self.norm_bound, int) or isinstance(self.norm_bound, bool):
                raise ConfigError("norm_bound must be an integer or None")
            if not 0 <= self.norm_bound < MAX_BOUND:
                raise ConfigError("norm_bound must be in [0, 2^64)")

    @property
    def degree(self) -> int:
        """Configured neighbours per client (``n - 1`` for plain SecAgg)."""
        return self.n - 1 if self.k is None else self.k

    @cached_property
    def encoding(self) -> RingEncoding:
        return RingEncoding.choose(self.n, self.clip, self.bits, self.level_bits)

    @property
    def ring_bits(self) -> int:
        return self.encoding.bits

    @property
    def verified(self) -> bool:
        """Whether the round asks for commitments and norm proofs (``norm_bound`` is set)."""
        return self.norm_bound is not None

    @property
    def upload_dim(self) -> int:
        """Length of a masked upload: ``d`` ring elements."""
        return self.d

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages this round runs, in order (``CHECK`` only when verified)."""
        return tuple(s for s in Stage if s is not Stage.CHECK or self.verified)

    def next_stage(self, stage: Stage) -> Stage | None:
        """The stage after ``stage`` in this round, or ``None`` after the last."""
        order = self.stages
        i = order.index(stage)
        return order[i + 1] if i + 1 < len(order) else None

    def with_session(self, session_id: bytes, round_: int | None = None) -> RoundConfig:
        """A copy bound to a session (and optionally a round number)."""
        return replace(self, session_id=session_id, round=self.round if round_ is None else round_)

    def canonical(self) -> bytes:
        """Canonical encoding of every field that both sides must agree on."""
        if self.session_id is None:
            raise ConfigError("the config has no session_id yet")
        enc = self.encoding
        doc = {
            "version": self.version,
            "session_id": self.session_id.hex(),
            "round": self.round,
            "n": self.n,
            "t": self.t,
            "k": self.degree,
            "d": self.d,
            "bits": enc.bits,
            "clip": float(enc.clip).hex(),
            "scale": float(enc.scale).hex(),
            "model_digest": self.model_digest.hex(),
            "dp_digest": self.dp_digest.hex(),
        }
        if self.norm_bound is not None:  # absent when off: unverified digests are unchanged
            doc["norm_bound"] = self.norm_bound
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @cached_property
    def digest(self) -> bytes:
        """``config_digest`` of docs/protocol.md §2."""
        return sha256(LABEL_CONFIG, self.canonical())


@dataclass(frozen=True, slots=True)
class ClientPolicy:
    """The client's own floor (docs/protocol.md §2): it never trusts the server's t, k, n.

    ``t`` must exceed ``(k + c) / 2`` where ``c`` is the number of corrupt neighbours tolerated:
    ``max_corrupt`` if given, else the largest count below ``max_corrupt_fraction * k``. With the
    default (fewer than k/3 corrupt) this refuses every ``t <= k/2`` and accepts every
    ``t >= floor(2k/3) + 1`` (docs/threats.md SA-03).

    ``require_norm_bound`` refuses rounds without contribution verification (docs/protocol.md §7):
    a client that wants every other contribution norm-bounded and checked against the sum.
    """

    max_corrupt_fraction: float = 1 / 3
    max_corrupt: int | None = None
    min_cohort: int = 3
    min_degree: int = 2
    max_d: int = 1 << 28
    expected_model_digest: bytes | None = None
    expected_dp_digest: bytes | None = None
    allow_deterministic_rng: bool = False
    require_norm_bound: bool = False

    def corrupt_bound(self, degree: int) -> int:
        """How many corrupt neighbours (out of ``degree``) the threshold must withstand."""
        if self.max_corrupt is not None:
            return self.max_corrupt
        return max(0, math.ceil(self.max_corrupt_fraction * degree) - 1)

    def min_threshold(self, degree: int) -> int:
        """Smallest ``t`` this policy accepts for ``degree`` neighbours."""
        c = self.corrupt_bound(degree)
        return max((degree + c) // 2 + 1, c + 1)

    def check(self, config: RoundConfig) -> None:
        """Raise :class:`PolicyViolation` if the round is below this client's floor."""
        deg = config.degree
        c = self.corrupt_bound(deg)
        if 2 * config.t <= deg + c or config.t <= c:
            raise PolicyViolation(
                f"threshold t={config.t} too low for k={deg} with {c} corrupt neighbours: "
                f"need t >= {self.min_threshold(deg)} (docs/threats.md SA-03)"
            )
        if config.n < self.min_cohort:
            raise PolicyViolation(f"cohort n={config.n} below the minimum {self.min_cohort}")
        if deg < self.min_degree:
            raise PolicyViolation(f"k={deg} neighbours below the minimum {self.min_degree}")
        if config.d > self.max_d:
            raise PolicyViolation(f"vector length d={config.d} above the maximum {self.max_d}")
        enc = config.encoding
        if config.n * enc.max_abs >= 2 ** (enc.bits - 1):  # docs/protocol.md §2: no wrap-around
            raise PolicyViolation("ring too small: the sum could wrap around")
        if self.expected_model_digest is not None and self.expected_model_digest != (
            config.model_digest
        ):
            raise PolicyViolation("the round's model digest is not the one this client expects")
        if self.expected_dp_digest is not None and self.expected_dp_digest != config.dp_digest:
            raise PolicyViolation("the round's DP parameters are not the ones this client expects")
        if self.require_norm_bound and config.norm_bound is None:
            raise PolicyViolation("the round does not verify contributions; the policy requires it")
