"""Primitives of docs/protocol.md §3: labels, HKDF, X25519, AEAD, Ed25519, commitments.

Everything here is a thin, checked wrapper over ``cryptography``. Checks raise typed errors
(:mod:`secagg._errors`); secrets are compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from secagg._errors import InvalidShare, InvalidSignature, KeyAgreementError
from secagg._rng import RandomSource

__all__ = [
    "LABEL_ADVERTISE",
    "LABEL_B_COMMIT",
    "LABEL_CHECK",
    "LABEL_CONFIG",
    "LABEL_CONSISTENCY",
    "LABEL_CONSISTENCY_SET",
    "LABEL_GRAPH",
    "LABEL_MASKED",
    "LABEL_PAIR_MASK",
    "LABEL_SELF_MASK",
    "LABEL_SHARE_AD",
    "LABEL_SHARE_DIGEST",
    "LABEL_SHARE_KEY",
    "LABEL_SHARE_KEYS",
    "aead_open",
    "aead_seal",
    "b_commitment",
    "ct_equal",
    "ed25519_public",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf",
    "kdf_info",
    "sha256",
    "x25519_agree",
    "x25519_keypair",
    "x25519_public_from_private",
]

# docs/protocol.md §3: labels are distinct ASCII strings beginning "secagg/v1/".
LABEL_CONFIG = b"secagg/v1/config"
LABEL_GRAPH = b"secagg/v1/graph"
LABEL_ADVERTISE = b"secagg/v1/advertise"
LABEL_CHECK = b"secagg/v1/check"
LABEL_SHARE_KEYS = b"secagg/v1/share-keys"
LABEL_SHARE_KEY = b"secagg/v1/share-key"
LABEL_SHARE_AD = b"secagg/v1/share-ad"
LABEL_SHARE_DIGEST = b"secagg/v1/share-digest"
LABEL_PAIR_MASK = b"secagg/v1/pair-mask"
LABEL_SELF_MASK = b"secagg/v1/self-mask"
LABEL_B_COMMIT = b"secagg/v1/b"
LABEL_MASKED = b"secagg/v1/masked-input"
LABEL_CONSISTENCY = b"secagg/v1/consistency"
LABEL_CONSISTENCY_SET = b"secagg/v2/survivor-set"

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# X25519 public keys of small order, and non-canonical encodings (RFC 7748 §6.1, libsodium's
# blocklist). Any of them forces a predictable shared secret (docs/threats.md SA-04).
_P25519 = 2**255 - 19
_LOW_ORDER = frozenset(
    v.to_bytes(32, "little")
    for v in (
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
        _P25519 - 1,
        _P25519,
        _P25519 + 1,
    )
)


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts``."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
    return h.digest()


def ct_equal(a: bytes, b: bytes) -> bool:
    """Constant-time equality for secrets and digests."""
    return hmac.compare_digest(a, b)


def kdf_info(
    label: bytes, session_id: bytes, round_: int, u: int, v: int, pk_u: bytes, pk_v: bytes
) -> bytes:
    """HKDF info of docs/protocol.md §3, extended with both public keys ordered by id
    (SPEC.md D1)."""
    (lo, pk_lo), (hi, pk_hi) = sorted(((u, pk_u), (v, pk_v)))
    return label + session_id + _U64.pack(round_) + _U32.pack(lo) + _U32.pack(hi) + pk_lo + pk_hi


def hkdf(ikm: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 with an empty salt (the inputs are fresh uniform secrets)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(ikm)


def x25519_keypair(rng: RandomSource) -> tuple[bytes, bytes]:
    """A fresh X25519 pair ``(private, public)`` as raw 32-byte strings."""
    sk = rng.bytes(32)
    return sk, x25519_public_from_private(sk)


def x25519_public_from_private(sk: bytes) -> bytes:
    """The raw public key of a raw X25519 private key."""
    return (
        X25519PrivateKey.from_private_bytes(sk)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )


def check_x25519_public(pk: bytes) -> None:
    """Reject malformed, non-canonical and low-order X25519 public keys (docs/threats.md SA-04)."""
    if len(pk) != 32:
        raise KeyAgreementError("X25519 public key must be 32 bytes")
    if pk[31] & 0x80:
        raise KeyAgreementError("X25519 public key has its top bit set (non-canonical)")
    if pk in _LOW_ORDER or int.from_bytes(pk, "little") >= _P25519:
        raise KeyAgreementError("X25519 public key is of low order or non-canonical")


def x25519_agree(sk: bytes | X25519PrivateKey, pk: bytes) -> bytes:
    """X25519 shared secret; raises :class:`KeyAgreementError` on a bad peer key or zero output.

    ``sk`` may be a key object, so a party agreeing with many peers parses its key once.
    """
    check_x25519_public(pk)
    key = sk if isinstance(sk, X25519PrivateKey) else X25519PrivateKey.from_private_bytes(sk)
    try:
        shared = key.exchange(X25519PublicKey.from_public_bytes(pk))
    except ValueError as exc:  # cryptography refuses an all-zero result
        raise KeyAgreementError(f"X25519 agreement failed: {exc}") from exc
    if ct_equal(shared, bytes(32)):
        raise KeyAgreementError("X25519 shared secret is all zero")
    return shared


def aead_seal(key: bytes, plaintext: bytes, ad: bytes, rng: RandomSource) -> bytes:
    """ChaCha20-Poly1305 with a random 96-bit nonce; output is ``nonce || ciphertext``."""
    nonce = rng.bytes(12)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, ad)


def aead_open(key: bytes, sealed: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`aead_seal`; raises :class:`InvalidShare` if authentication fails."""
    if len(sealed) < 12 + 16:
        raise InvalidShare("share ciphertext is truncated")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:12], sealed[12:], ad)
    except InvalidTag as exc:
        raise InvalidShare("share ciphertext fails authentication") from exc


def ed25519_public(sk: Ed25519PrivateKey) -> bytes:
    """Raw 32-byte public key of an identity key."""
    return sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def ed25519_sign(
    sk: Ed25519PrivateKey, label: bytes, config_digest: bytes, payload: bytes
) -> bytes:
    """Ed25519 over ``label || config_digest || SHA-256(payload)`` (docs/protocol.md §3)."""
    return sk.sign(label + config_digest + sha256(payload))


def ed25519_verify(
    pk: bytes, sig: bytes, label: bytes, config_digest: bytes, payload: bytes, *, who: int
) -> None:
    """Verify a signature made by :func:`ed25519_sign`; raises :class:`InvalidSignature`."""
    if len(sig) != 64 or len(pk) != 32:
        raise InvalidSignature(f"malformed signature or key of client {who}", culprit=who)
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, label + config_digest + sha256(payload))
    except (_CryptoInvalidSignature, ValueError) as exc:
        raise InvalidSignature(f"bad signature from client {who}", culprit=who) from exc


def b_commitment(session_id: bytes, u: int, b_u: bytes) -> bytes:
    """``H("secagg/v1/b" || session_id || u || b_u)``: binds the self-mask seed
    (docs/protocol.md §3)."""
    return sha256(LABEL_B_COMMIT, session_id, _U32.pack(u), b_u)
