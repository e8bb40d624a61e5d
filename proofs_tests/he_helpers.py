"""Test-only HE fixtures: a registry of deterministic member identities and honest uploads
(tags, signatures) for :mod:`secagg.he` tests."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import DeterministicRandom
from secagg._crypto import ed25519_public, ed25519_sign
from secagg.he import HeClient, HeRoundConfig, HeRoundKeys, HeUpload
from secagg.he.tags import (
    LABEL_HE_UPLOAD,
    TAG_SEED_BYTES,
    seal_tag_seed,
    upload_digest,
    upload_payload,
)

MEMBERS = range(1, 129)


@cache
def identity(u: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(DeterministicRandom(f"he-member/{u}").bytes(32))


REGISTRY = {u: ed25519_public(identity(u)) for u in MEMBERS}


def he_client(cfg: HeRoundConfig, keys: HeRoundKeys, u: int, seed: object = None) -> HeClient:
    """Member ``u``'s client for the round, with a deterministic RNG (tests only)."""
    rng = DeterministicRandom(u if seed is None else f"{seed}/{u}")  # type: ignore[arg-type]
    return HeClient(
        cfg,
        keys.public_context,
        keys.tag_key,
        u,
        identity(u),
        rng=rng,
        allow_deterministic_rng=True,
    )


def he_upload(
    cfg: HeRoundConfig, keys: HeRoundKeys, u: int, x: npt.ArrayLike, seed: object = None
) -> HeUpload:
    return he_client(cfg, keys, u, seed).encrypt(x)


def raw_upload(cfg: HeRoundConfig, keys: HeRoundKeys, u: int, chunks: Sequence[bytes]) -> HeUpload:
    """What a malicious member ``u`` can send: any chunks, with a validly sealed tag seed and
    its own signature over them (so only the chunks themselves are wrong)."""
    return signed_upload(cfg, keys.tag_key, u, identity(u), chunks)


def signed_upload(
    cfg: HeRoundConfig,
    tag_key: bytes,
    u: int,
    ident: Ed25519PrivateKey,
    chunks: Sequence[bytes],
) -> HeUpload:
    """Any chunks, with a fresh tag seed sealed to ``tag_key`` and ``ident``'s signature."""
    rng = DeterministicRandom(f"raw/{u}/{cfg.round}")
    sealed = seal_tag_seed(cfg.digest, u, rng.bytes(TAG_SEED_BYTES), tag_key, rng)
    chunks = tuple(bytes(c) for c in chunks)
    payload = upload_payload(u, sealed, upload_digest(chunks))
    sig = ed25519_sign(ident, LABEL_HE_UPLOAD, cfg.digest, payload)
    assert cfg.session_id is not None
    return HeUpload(cfg.session_id, cfg.round, chunks, u, sealed, sig)
