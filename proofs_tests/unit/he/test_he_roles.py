"""Roles hold separate key material (threats.md HE-01): the aggregator's context cannot decrypt
or even encrypt, and a client's context cannot decrypt another client's ciphertext."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts  # type: ignore[import-untyped]

from proofs_tests.he_helpers import REGISTRY, he_upload, identity
from secagg.he import HeClient, HeKeyHolder, HeRoundConfig, HeRoundKeys, InvalidCiphertext
from secagg.he._ops import ContextKind, load_context, serialize_public

SESSION = bytes(range(16))
TAG_KEY = bytes([9]) + bytes(31)  # the X25519 base point: a well-formed tag key


def _round(params: str = "bfv-4096") -> tuple[HeRoundConfig, HeRoundKeys, HeKeyHolder]:
    cfg = HeRoundConfig(n=4, d=5000, params=params, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY)
    return cfg, holder.open_round(cfg), holder


def _upload(cfg: HeRoundConfig, keys: HeRoundKeys, seed: int) -> bytes:
    return he_upload(cfg, keys, seed, np.full(cfg.d, 0.25)).chunks[0]


@pytest.mark.parametrize("params", ["bfv-4096", "ckks-4096"])
def test_aggregator_context_has_no_key_and_cannot_decrypt(params: str) -> None:
    cfg, keys, _ = _round(params)
    assert len(keys.parameters_context) <= 128  # parameters only (~90 bytes)
    ctx = load_context(keys.parameters_context, cfg.he_params, ContextKind.PARAMETERS)
    assert not ctx.has_secret_key() and not ctx.is_private()
    assert not ctx.has_public_key() and not ctx.has_relin_keys() and not ctx.has_galois_keys()
    loader = ts.bfv_vector_from if params.startswith("bfv") else ts.ckks_vector_from
    vec = loader(ctx, _upload(cfg, keys, 1))
    total = vec + vec  # it can add ...
    with pytest.raises(ValueError, match="secret"):
        total.decrypt()  # ... and nothing else
    with pytest.raises(ValueError):
        ts.bfv_vector(ctx, [1, 2, 3])


def test_public_context_is_encrypt_only_and_cannot_read_another_client() -> None:
    cfg, keys, _ = _round()
    ctx = load_context(keys.public_context, cfg.he_params, ContextKind.PUBLIC)
    assert ctx.is_public() and not ctx.has_secret_key()
    assert not ctx.has_relin_keys() and not ctx.has_galois_keys()
    other = ts.bfv_vector_from(ctx, _upload(cfg, keys, 2))  # client 2's ciphertext
    with pytest.raises(ValueError, match="secret"):
        other.decrypt()


def test_a_context_carrying_the_secret_key_is_refused() -> None:
    """NVFlare's pattern (every client gets the secret key) is refused outright."""
    cfg, _, _ = _round()
    from secagg.he._ops import new_context

    ctx = new_context(cfg.he_params)
    leaky = ctx.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    with pytest.raises(InvalidCiphertext):  # too big for a public context: not even parsed
        HeClient(cfg, leaky, TAG_KEY, 1, identity(1))
    secret_only = ctx.serialize(
        save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
    )
    with pytest.raises(InvalidCiphertext, match="secret key"):
        HeClient(cfg, secret_only, TAG_KEY, 1, identity(1))
    with_relin = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True
    )
    with pytest.raises(InvalidCiphertext):
        HeClient(cfg, with_relin, TAG_KEY, 1, identity(1))


def test_public_context_ships_once_and_is_not_in_a_ciphertext() -> None:
    cfg, keys, _ = _round()
    chunk = _upload(cfg, keys, 3)
    lo, hi = cfg.he_params.chunk_bounds()
    assert lo <= len(chunk) <= hi
    assert len(chunk) < len(keys.public_context)
    assert serialize_public(load_context(keys.public_context, cfg.he_params, ContextKind.PUBLIC))
