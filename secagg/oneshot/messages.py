"""What the roles of a one-shot round hand each other (frozen; the transport converts them),
and the byte strings each signature covers (SPEC.md O4, O6)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from secagg._crypto import sha256

__all__ = [
    "LABEL_MEMBER_KEY",
    "LABEL_SET",
    "LABEL_SHARE_AD",
    "LABEL_SHARE_KEY",
    "LABEL_UPLOAD",
    "CheckRequest",
    "MemberKey",
    "OneShotResult",
    "OneShotUpload",
    "ReleaseRequest",
    "SetSignature",
    "ShareForMember",
    "ShareSum",
    "set_payload",
    "upload_payload",
]

LABEL_MEMBER_KEY = b"secagg/oneshot/v1/member-key"
LABEL_UPLOAD = b"secagg/oneshot/v1/upload"
LABEL_SET = b"secagg/oneshot/v1/included-set"
LABEL_SHARE_KEY = b"secagg/oneshot/v1/share-key"
LABEL_SHARE_AD = b"secagg/oneshot/v1/share-ad"

_U32 = struct.Struct(">I")


def upload_payload(
    client_id: int, ephemeral: bytes, masked_digest: bytes, share_digests: bytes
) -> bytes:
    """What a client signs: its id, its ephemeral X25519 key, the hash of its masked chunks and
    the hash of each member's sealed share (committee order)."""
    return _U32.pack(client_id) + ephemeral + masked_digest + share_digests


def set_payload(included: Sequence[int]) -> bytes:
    """What a committee member signs: the sorted included set."""
    return _U32.pack(len(included)) + b"".join(_U32.pack(u) for u in included)


@dataclass(frozen=True, slots=True)
class MemberKey:
    """A committee member's X25519 key for one round, signed with its registered identity."""

    member_id: int
    public_key: bytes
    signature: bytes

    def payload(self) -> bytes:
        return _U32.pack(self.member_id) + self.public_key


@dataclass(frozen=True, slots=True)
class OneShotUpload:
    """A client's single message: the masked chunks (both residues bit-packed), one sealed
    Shamir share of its secret per committee member, its ephemeral key and its signature."""

    session_id: bytes
    round: int
    client_id: int
    masked: bytes
    ephemeral: bytes
    shares: tuple[bytes, ...]
    signature: bytes = b""

    @property
    def nbytes(self) -> int:
        return len(self.masked) + sum(len(s) for s in self.shares) + 32 + 64

    @property
    def share_digests(self) -> bytes:
        return b"".join(sha256(s) for s in self.shares)

    def payload(self) -> bytes:
        return upload_payload(
            self.client_id, self.ephemeral, sha256(self.masked), self.share_digests
        )

    def share_for(self, position: int) -> ShareForMember:
        """What the committee member at ``position`` (1-based) sees of this upload."""
        return ShareForMember(
            self.client_id,
            self.ephemeral,
            sha256(self.masked),
            self.share_digests,
            self.shares[position - 1],
            self.signature,
        )


@dataclass(frozen=True, slots=True)
class ShareForMember:
    """One client's share for one member: never the masked chunks, only their hash, so a
    member's traffic and work do not depend on d."""

    client_id: int
    ephemeral: bytes
    masked_digest: bytes
    share_digests: bytes
    sealed: bytes
    signature: bytes

    def payload(self) -> bytes:
        return upload_payload(
            self.client_id, self.ephemeral, self.masked_digest, self.share_digests
        )


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """The aggregator to one member: the included set and each included client's share."""

    session_id: bytes
    round: int
    included: tuple[int, ...]
    shares: tuple[ShareForMember, ...]


@dataclass(frozen=True, slots=True)
class SetSignature:
    member_id: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """The aggregator to one member: the set and at least t_c members' signatures on it."""

    session_id: bytes
    round: int
    included: tuple[int, ...]
    signatures: tuple[SetSignature, ...]


@dataclass(frozen=True, slots=True)
class ShareSum:
    """A member's answer: its share of the sum of the included clients' secrets (both residues
    bit-packed, ``RING_DIM`` coefficients each)."""

    member_id: int
    session_id: bytes
    round: int
    included: tuple[int, ...]
    residues: bytes


@dataclass(frozen=True)
class OneShotResult:
    """A released sum: ``int_sum`` on the encoding grid (length d), ``aggregate`` its float value,
    within ``error_bound`` per coordinate of the sum of the included clients' clipped inputs."""

    session_id: bytes
    round: int
    included: tuple[int, ...]
    int_sum: npt.NDArray[np.int64] = field(compare=False)
    aggregate: npt.NDArray[np.float64] = field(compare=False)
    error_bound: float
    decryptors: tuple[int, ...]
    rejected: dict[int, str] = field(default_factory=dict, compare=False)
