"""Key and digest derivations shared by the client and the server (docs/protocol.md §3-§4)."""

from __future__ import annotations

import struct

from secagg._crypto import (
    LABEL_CONSISTENCY_SET,
    LABEL_PAIR_MASK,
    LABEL_SELF_MASK,
    LABEL_SHARE_AD,
    LABEL_SHARE_DIGEST,
    LABEL_SHARE_KEY,
    hkdf,
    kdf_info,
    sha256,
)
from secagg.shamir import SHARE_BYTES

_U32 = struct.Struct(">I")
PLAINTEXT_BYTES = 8 + 2 * SHARE_BYTES


def u32(value: int) -> bytes:
    """A big-endian 4-byte id, as every signed payload encodes ids."""
    return _U32.pack(value)


def pair_mask_key(
    shared: bytes, session_id: bytes, round_: int, u: int, v: int, s_pk_u: bytes, s_pk_v: bytes
) -> bytes:
    """AES-128 key of the pairwise mask ``PRG(s_uv)`` (docs/protocol.md §4.3)."""
    return hkdf(shared, kdf_info(LABEL_PAIR_MASK, session_id, round_, u, v, s_pk_u, s_pk_v), 16)


def self_mask_key(b_u: bytes, session_id: bytes, round_: int, u: int) -> bytes:
    """AES-128 key of the self mask ``PRG(b_u)``."""
    return hkdf(b_u, kdf_info(LABEL_SELF_MASK, session_id, round_, u, u, b"", b""), 16)


def channel_key(
    shared: bytes, session_id: bytes, round_: int, u: int, v: int, c_pk_u: bytes, c_pk_v: bytes
) -> bytes:
    """ChaCha20-Poly1305 key for the shares ``u`` sends ``v`` (docs/protocol.md §4.2)."""
    return hkdf(shared, kdf_info(LABEL_SHARE_KEY, session_id, round_, u, v, c_pk_u, c_pk_v), 32)


def share_ad(config_digest: bytes, sender: int, receiver: int) -> bytes:
    """AEAD associated data: ``label || config_digest || sender || receiver``
    (docs/protocol.md §3)."""
    return LABEL_SHARE_AD + config_digest + _U32.pack(sender) + _U32.pack(receiver)


def share_plaintext(owner: int, holder: int, y_s: bytes, y_b: bytes) -> bytes:
    return _U32.pack(owner) + _U32.pack(holder) + y_s + y_b


def parse_share_plaintext(raw: bytes) -> tuple[int, int, bytes, bytes]:
    if len(raw) != PLAINTEXT_BYTES:
        raise ValueError("share plaintext has the wrong length")
    owner = _U32.unpack_from(raw, 0)[0]
    holder = _U32.unpack_from(raw, 4)[0]
    return owner, holder, raw[8 : 8 + SHARE_BYTES], raw[8 + SHARE_BYTES :]


def share_digest(kind: bytes, config_digest: bytes, owner: int, holder: int, y: bytes) -> bytes:
    """Digest of one share (``kind`` is ``b"s"`` or ``b"b"``), signed by its owner."""
    return sha256(LABEL_SHARE_DIGEST, kind, config_digest, _U32.pack(owner), _U32.pack(holder), y)


def consistency_payload(graph_seed: bytes, survivors_bitmap: bytes) -> bytes:
    """What a client signs in §4.4: the graph (hence U1 and its keys) and the survivor set U3
    (its bitmap over the cohort, hashed: SPEC.md D14)."""
    return graph_seed + sha256(LABEL_CONSISTENCY_SET, survivors_bitmap)
