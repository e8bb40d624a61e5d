"""What the roles of an HE round hand each other (frozen; the transport converts them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg._crypto import sha256
from secagg.he.config import HeRoundConfig

__all__ = ["HeRelease", "HeRoundKeys", "HeSumMessage", "HeUpload", "context_digest"]

LABEL_HE_CONTEXT = b"secagg/he/v1/public-context"


def context_digest(config: HeRoundConfig, public_context: bytes) -> bytes:
    """What the key holder signs: the public context bound to one session and round, so an
    aggregator can neither substitute its own key nor replay another round's."""
    return sha256(LABEL_HE_CONTEXT, config.digest, sha256(public_context))


@dataclass(frozen=True, slots=True)
class HeRoundKeys:
    """Issued by the key holder for one round: the clients' encrypt-only context and the
    aggregator's parameters-only context (no key at all)."""

    config: HeRoundConfig
    public_context: bytes
    parameters_context: bytes

    @property
    def digest(self) -> bytes:
        return context_digest(self.config, self.public_context)


@dataclass(frozen=True, slots=True)
class HeUpload:
    """One client's encrypted update: ``layout.chunks`` serialized ciphertexts."""

    session_id: bytes
    round: int
    chunks: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)


@dataclass(frozen=True, slots=True)
class HeSumMessage:
    """The only thing the key holder decrypts: one running sum per chunk for a round, and who
    the aggregator says is in it."""

    session_id: bytes
    round: int
    chunks: tuple[bytes, ...]
    included: tuple[int, ...]


@dataclass(frozen=True)
class HeRelease:
    """A released sum: ``int_sum`` on the encoding grid (flooded for CKKS), ``aggregate`` its
    float value, within ``error_bound`` per coordinate of the sum of the clipped inputs."""

    session_id: bytes
    round: int
    count: int
    int_sum: npt.NDArray[np.int64] = field(compare=False)
    aggregate: npt.NDArray[np.float64] = field(compare=False)
    error_bound: float
    flood: int
