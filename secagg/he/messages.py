"""What the roles of an HE round hand each other (frozen; the transport converts them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg._crypto import sha256
from secagg.he.config import HeRoundConfig
from secagg.he.tags import upload_digest

__all__ = [
    "HeContribution",
    "HeRelease",
    "HeRoundKeys",
    "HeSumMessage",
    "HeUpload",
    "context_digest",
]

LABEL_HE_CONTEXT = b"secagg/he/v2/public-context"


def context_digest(config: HeRoundConfig, public_context: bytes, tag_key: bytes) -> bytes:
    """What the key holder signs: the public context and its round tag key (X25519) bound to
    one session and round, so an aggregator can substitute neither its own encryption key nor
    its own tag key, nor replay another round's."""
    return sha256(LABEL_HE_CONTEXT, config.digest, sha256(public_context), sha256(tag_key))


@dataclass(frozen=True, slots=True)
class HeRoundKeys:
    """Issued by the key holder for one round: the clients' encrypt-only context, the
    aggregator's parameters-only context (no key at all), and the X25519 key clients seal their
    tag seeds to (:mod:`secagg.he.tags`)."""

    config: HeRoundConfig
    public_context: bytes
    parameters_context: bytes
    tag_key: bytes

    @property
    def digest(self) -> bytes:
        return context_digest(self.config, self.public_context, self.tag_key)


@dataclass(frozen=True, slots=True)
class HeContribution:
    """What the key holder learns of one contributor: its id, its sealed tag seed, the digest
    of its chunks and its Ed25519 signature over the three (never the ciphertexts)."""

    client_id: int
    sealed_tag: bytes
    upload_digest: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class HeUpload:
    """One client's encrypted update: ``layout.chunks`` serialized ciphertexts, its sealed tag
    seed and its signature over both (:func:`secagg.he.tags.upload_payload`)."""

    session_id: bytes
    round: int
    chunks: tuple[bytes, ...]
    client_id: int = 0
    sealed_tag: bytes = b""
    signature: bytes = b""

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def digest(self) -> bytes:
        return upload_digest(self.chunks)

    def contribution(self) -> HeContribution:
        return HeContribution(self.client_id, self.sealed_tag, self.digest, self.signature)


@dataclass(frozen=True, slots=True)
class HeSumMessage:
    """The only thing the key holder decrypts: one running sum per chunk for a round, who the
    aggregator says is in it, and each of those contributors' signed tag (same order)."""

    session_id: bytes
    round: int
    chunks: tuple[bytes, ...]
    included: tuple[int, ...]
    contributions: tuple[HeContribution, ...] = ()


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
