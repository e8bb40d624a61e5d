"""Per-round contribution tags of the HE variant: what lets the key holder check that a sum holds
each claimed contributor's upload exactly once (threat_models/he.md, "Tags").

Each client draws a fresh 32-byte tag seed from the OS CSPRNG per round, expands it into one
value per ciphertext slot (:func:`tag_values`) and adds those values to its plaintext slots
before encrypting: BFV pads *every* slot with a value uniform modulo the plaintext modulus ``t``;
CKKS carries tags only in the ``check_slots`` reserved at the end of every ciphertext. The last
``check_slots`` slots of every ciphertext hold the tag alone (no data), in both schemes.

The seed travels to the key holder only, sealed (X25519 + HKDF + ChaCha20-Poly1305) to the key
holder's per-round tag key, which the key holder signs together with the public context; the
associated data binds the config digest and the client id, and the client signs the sealed seed
with a digest of its chunks under its registered Ed25519 identity. The aggregator relays both but
can open neither. The key holder subtracts (BFV) or compares (CKKS) the sum of the claimed
contributors' tags: a sum that counts some honest upload a number of times other than once, or
that was shifted by anything in a check slot, fails except with probability at most
``2^-check_bits`` per ciphertext (:func:`check_slots`).

Pure: no sockets, no clocks; randomness is injected.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._crypto import (
    aead_open,
    aead_seal,
    hkdf,
    sha256,
    x25519_agree,
    x25519_keypair,
)
from secagg._errors import InvalidShare, KeyAgreementError
from secagg._rng import RandomSource
from secagg.he._errors import ForgedSum
from secagg.he.params import HeParams, HeScheme

__all__ = [
    "CHECK_SECURITY_BITS",
    "LABEL_HE_UPLOAD",
    "SEALED_TAG_BYTES",
    "TAG_SEED_BYTES",
    "check_slots",
    "open_tag_seed",
    "seal_tag_seed",
    "tag_space",
    "tag_values",
    "upload_digest",
    "upload_payload",
]

CHECK_SECURITY_BITS = 128
TAG_SEED_BYTES = 32
SEALED_TAG_BYTES = 32 + 12 + TAG_SEED_BYTES + 16  # ephemeral key, nonce, seed, Poly1305 tag
LABEL_HE_TAG_KEY = b"secagg/he/v2/tag-seal"
LABEL_HE_TAG_AD = b"secagg/he/v2/tag-ad"
LABEL_HE_TAG_PRG = b"secagg/he/v2/tag-prg"
LABEL_HE_UPLOAD = b"secagg/he/v2/upload"
LABEL_HE_CHUNKS = b"secagg/he/v2/chunks"

_U32 = struct.Struct(">I")
I64 = npt.NDArray[np.int64]


def tag_space(params: HeParams, n: int) -> int:
    """How many values one check slot's tag takes, uniformly: ``t`` for BFV (values mod ``t``);
    ``2T + 1`` for CKKS, tags in ``[-T, T]`` with ``n T < 2^(payload - 1)`` so that a sum of
    ``n`` tags stays exact."""
    if params.scheme is HeScheme.BFV:
        return params.plain_modulus
    return 2 * (((1 << (params.payload_bits - 1)) - 1) // n) + 1


def check_slots(params: HeParams, n: int) -> int:
    """Check slots per ciphertext: enough that guessing every one of them (or a multiple of an
    unknown tag in them) succeeds with probability at most ``2^-128``."""
    bits = math.floor(math.log2(tag_space(params, n)))
    return -(-CHECK_SECURITY_BITS // bits)


def _prg_key(seed: bytes, config_digest: bytes, client_id: int) -> bytes:
    return hkdf(seed, LABEL_HE_TAG_PRG + config_digest + _U32.pack(client_id), 16)


def _uniform_below(key: bytes, modulus: int, count: int) -> I64:
    """``count`` values uniform in ``[0, modulus)`` from AES-128-CTR, by rejection sampling on
    ``modulus.bit_length()``-bit words (no modulo bias)."""
    if not 2 <= modulus < 1 << 62:
        raise ValueError("the tag space must fit 62 bits")
    bits = (modulus - 1).bit_length()
    mask = np.uint64((1 << bits) - 1)
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    out = np.empty(0, dtype=np.int64)
    while out.size < count:
        want = (count - out.size) * 2 + 16  # acceptance is at least 1/2
        words = np.frombuffer(enc.update(bytes(8 * want)), dtype="<u8") & mask
        out = np.concatenate([out, words[words < np.uint64(modulus)].astype(np.int64)])
    return out[:count]


def tag_values(
    seed: bytes, config_digest: bytes, client_id: int, params: HeParams, n: int, count: int
) -> I64:
    """The ``count`` tag values of one client for one round: BFV, uniform in ``[0, t)``; CKKS,
    uniform in ``[-T, T]`` (:func:`tag_space`).

    Security: ``seed`` is the client's secret for this round; the values reveal it to nobody
    who sees only ciphertexts or the released sum (BFV tags cancel exactly; CKKS tags live in
    check slots that are never released).
    """
    if len(seed) != TAG_SEED_BYTES:
        raise ValueError(f"a tag seed is {TAG_SEED_BYTES} bytes")
    space = tag_space(params, n)
    vals = _uniform_below(_prg_key(seed, config_digest, client_id), space, count)
    if params.scheme is HeScheme.CKKS:
        vals -= space // 2
    return vals


def _seal_key(
    shared: bytes, config_digest: bytes, client_id: int, eph: bytes, tag_key: bytes
) -> bytes:
    info = LABEL_HE_TAG_KEY + config_digest + _U32.pack(client_id) + eph + tag_key
    return hkdf(shared, info, 32)


def _seal_ad(config_digest: bytes, client_id: int) -> bytes:
    return LABEL_HE_TAG_AD + config_digest + _U32.pack(client_id)


def seal_tag_seed(
    config_digest: bytes, client_id: int, seed: bytes, tag_key: bytes, rng: RandomSource
) -> bytes:
    """``seed`` sealed to the key holder's round tag key: ``eph_pk || nonce || ct``.

    Security: a fresh ephemeral X25519 key per seal; the key and the AEAD's associated data
    bind the round's config digest and the client id, so a sealed seed opens only for this
    client in this round, and only at the key holder.
    """
    eph_sk, eph_pk = x25519_keypair(rng)
    shared = x25519_agree(eph_sk, tag_key)  # refuses a low-order or malformed tag key
    key = _seal_key(shared, config_digest, client_id, eph_pk, tag_key)
    sealed = eph_pk + aead_seal(key, seed, _seal_ad(config_digest, client_id), rng)
    assert len(sealed) == SEALED_TAG_BYTES
    return sealed


def open_tag_seed(
    config_digest: bytes, client_id: int, sealed: bytes, tag_sk: bytes, tag_key: bytes
) -> bytes:
    """The seed inside ``sealed`` (key holder only), or :class:`ForgedSum`."""
    if len(sealed) != SEALED_TAG_BYTES:
        raise ForgedSum(f"client {client_id}'s sealed tag has {len(sealed)} bytes")
    eph = sealed[:32]
    try:
        shared = x25519_agree(tag_sk, eph)
        key = _seal_key(shared, config_digest, client_id, eph, tag_key)
        return aead_open(key, sealed[32:], _seal_ad(config_digest, client_id))
    except (InvalidShare, KeyAgreementError):
        raise ForgedSum(
            f"client {client_id}'s sealed tag does not open for this round and client"
        ) from None


def upload_digest(chunks: Sequence[bytes]) -> bytes:
    """What a client's signature covers of its ciphertexts: every chunk's hash, in order."""
    return sha256(LABEL_HE_CHUNKS, _U32.pack(len(chunks)), *(sha256(bytes(c)) for c in chunks))


def upload_payload(client_id: int, sealed_tag: bytes, digest: bytes) -> bytes:
    """The bytes a client signs (with :data:`LABEL_HE_UPLOAD` and the config digest)."""
    return _U32.pack(client_id) + sealed_tag + digest
