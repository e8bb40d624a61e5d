"""Unit tests of the primitives: PRG seeking and chunking, AEAD, signatures, encoding, packing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import (
    ConfigError,
    DeterministicRandom,
    EncodingError,
    InvalidShare,
    InvalidSignature,
    RingEncoding,
    SystemRandom,
    pack_bits,
    unpack_bits,
)
from secagg._crypto import aead_open, aead_seal, ed25519_public, ed25519_sign, ed25519_verify
from secagg.graph import (
    LABEL_KEY_TREE,
    bitmap_members,
    cohort_bitmap,
    graph_seed,
    key_leaf,
    neighbour_graph,
    neighbours_of,
)
from secagg.merkle import MerkleTree
from secagg.prg import apply_masks, prg_slice


@pytest.mark.parametrize("start,count", [(0, 1), (1, 7), (3, 100), (1000, 33), (4095, 4098)])
def test_prg_is_seekable(start: int, count: int) -> None:
    key = os.urandom(16)
    full = prg_slice(key, 0, start + count)
    assert np.array_equal(prg_slice(key, start, count), full[start:])


@pytest.mark.parametrize("chunk", [4, 12, 1000, 1 << 14])
def test_apply_masks_matches_direct_sum(chunk: int) -> None:
    d = 5003
    keys = [os.urandom(16) for _ in range(5)]
    target = np.arange(d, dtype=np.uint32)
    expected = target.astype(np.uint64)
    for k in keys[:3]:
        expected += prg_slice(k, 7, d)
    for k in keys[3:]:
        expected -= prg_slice(k, 7, d).astype(np.uint64)
    apply_masks(target, keys[:3], keys[3:], start=7, chunk=chunk)
    assert np.array_equal(target, (expected % 2**32).astype(np.uint32))


def test_apply_masks_refuses_non_uint32() -> None:
    with pytest.raises(ValueError):
        apply_masks(np.zeros(4, dtype=np.int64), [bytes(16)])  # type: ignore[arg-type]


def test_aead_binds_associated_data() -> None:
    rng = SystemRandom()
    key = os.urandom(32)
    sealed = aead_seal(key, b"share", b"ad-1", rng)
    assert aead_open(key, sealed, b"ad-1") == b"share"
    with pytest.raises(InvalidShare):
        aead_open(key, sealed, b"ad-2")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(InvalidShare):
        aead_open(key, bytes(flipped), b"ad-1")
    with pytest.raises(InvalidShare):
        aead_open(key, sealed[:20], b"ad-1")


def test_signature_binds_label_and_config() -> None:
    sk = Ed25519PrivateKey.generate()
    pk = ed25519_public(sk)
    sig = ed25519_sign(sk, b"secagg/v1/x", b"c" * 32, b"payload")
    ed25519_verify(pk, sig, b"secagg/v1/x", b"c" * 32, b"payload", who=1)
    for label, cfg, payload in [
        (b"secagg/v1/y", b"c" * 32, b"payload"),
        (b"secagg/v1/x", b"d" * 32, b"payload"),
        (b"secagg/v1/x", b"c" * 32, b"payloaD"),
    ]:
        with pytest.raises(InvalidSignature):
            ed25519_verify(pk, sig, label, cfg, payload, who=1)
    with pytest.raises(InvalidSignature):
        ed25519_verify(pk, sig[:63], b"secagg/v1/x", b"c" * 32, b"payload", who=1)


def test_deterministic_rng_is_reproducible_and_flagged() -> None:
    assert DeterministicRandom(5).bytes(40) == DeterministicRandom(5).bytes(40)
    assert DeterministicRandom(5).bytes(40) != DeterministicRandom(6).bytes(40)
    assert DeterministicRandom(5).deterministic and not SystemRandom().deterministic


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 11, 16, 17, 24, 31, 32])
def test_pack_roundtrip_and_size(bits: int) -> None:
    for count in (0, 1, 7, 8, 9, 40001):
        v = np.frombuffer(os.urandom(4 * count), dtype=np.uint32) & np.uint32((1 << bits) - 1)
        raw = pack_bits(v, bits)
        assert len(raw) == (count * bits + 7) // 8
        assert np.array_equal(unpack_bits(raw, bits, count), v)


def test_pack_refuses_out_of_range_and_unpack_refuses_bad_lengths() -> None:
    with pytest.raises(EncodingError):
        pack_bits(np.array([8], dtype=np.uint32), 3)
    raw = pack_bits(np.array([1, 2, 3], dtype=np.uint32), 5)
    with pytest.raises(EncodingError):
        unpack_bits(raw + b"\x00", 5, 3)
    with pytest.raises(EncodingError):
        unpack_bits(raw[:-1], 5, 3)
    with pytest.raises(EncodingError):
        unpack_bits(raw[:-1] + bytes([raw[-1] | 0x80]), 5, 3)  # non-zero padding


def test_encoding_refuses_nan_inf_and_shapes() -> None:
    enc = RingEncoding.choose(10, 1.0)
    rng = SystemRandom()
    for bad in ([np.nan], [np.inf], [[1.0]], ["a"]):
        with pytest.raises(EncodingError):
            enc.encode(np.array(bad), rng)


def test_encoding_chooses_a_ring_that_cannot_wrap() -> None:
    for n in (2, 3, 10, 100, 1000, 100_000):
        enc = RingEncoding.choose(n, 0.5)
        assert n * enc.max_abs < 2 ** (enc.bits - 1)
        assert enc.bits <= 32
    with pytest.raises(ConfigError):
        RingEncoding(bits=8, clip=1.0, scale=100.0, n=3)  # 3 * 100 >= 128
    with pytest.raises(ConfigError):
        RingEncoding.choose(2**31, 1.0, bits=32)


def test_encoding_refuses_a_level_count_outside_its_range() -> None:
    """Found by the one-shot wire fuzzer: a config with level_bits = 0 reached a negative
    shift (ValueError) instead of a ConfigError; every config that picks a ring goes through
    RingEncoding.choose, so the range is checked there."""
    for bad in (-1, 0, 1, 32):
        with pytest.raises(ConfigError, match="level_bits"):
            RingEncoding.choose(10, 1.0, level_bits=bad)
    assert RingEncoding.choose(2, 1.0, level_bits=31).bits == 32  # the largest accepted


def test_randomized_rounding_is_unbiased() -> None:
    enc = RingEncoding(bits=16, clip=1.0, scale=4.0, n=2)
    x = np.full(200_000, 0.3)  # 1.2 levels: rounds to 1 w.p. 0.8, 2 w.p. 0.2
    mean = enc.decode(enc.encode(x, DeterministicRandom(3))).mean()
    assert abs(mean - 0.3) < 0.003  # std of the mean ~ 0.1 / sqrt(2e5) * 1 = 2.2e-4 * 4


def test_graph_is_deterministic_regular_and_order_free() -> None:
    """SPEC.md D14: the seed binds the config, the U1 bitmap and the key root; the ring is a
    function of the seed and the set of ids only."""
    cohort = list(range(1, 41))
    entries = [(u, os.urandom(32), os.urandom(32)) for u in cohort]
    bitmap = cohort_bitmap(cohort, cohort)
    root = MerkleTree(LABEL_KEY_TREE, [key_leaf(u, c, s_, bytes(64)) for u, c, s_ in entries]).root
    seed = graph_seed(b"c" * 32, bitmap, root)
    assert seed != graph_seed(b"d" * 32, bitmap, root)
    assert seed != graph_seed(b"c" * 32, cohort_bitmap(cohort, cohort[1:]), root)
    assert seed != graph_seed(b"c" * 32, bitmap, bytes(32))
    assert bitmap_members(cohort, bitmap) == cohort
    g = neighbour_graph([u for u, _, _ in entries], 8, seed)
    assert all(len(nb) == 8 and u not in nb for u, nb in g.items())
    assert all(u in g[v] for u, nb in g.items() for v in nb)  # symmetric
    g2 = neighbour_graph([u for u, _, _ in reversed(entries)], 8, seed)
    assert g == g2
    assert all(neighbours_of(g, 8, seed, u) == g[u] for u in g)
    full = neighbour_graph(range(1, 6), 10, seed)
    assert neighbours_of(range(1, 6), 10, seed, 3) == full[3]
    assert all(nb == frozenset(range(1, 6)) - {u} for u, nb in full.items())


def test_masked_input_signs_a_domain_separated_digest() -> None:
    """SPEC.md D5: the upload's signed payload is one SHA-256 over a label, the sender, the
    length-prefixed commitment and the vector: 32 bytes, changed by any of them, and never
    equal to another message's payload for the same bytes."""
    import hashlib

    from secagg.messages import LABEL_MASKED_DIGEST, MaskedInput

    vec = np.arange(1000, dtype=np.uint32)
    base = MaskedInput(7, vec, b"", b"")
    p = base.signed_payload()
    raw = (7).to_bytes(4, "big") + vec.astype("<u4").tobytes()
    assert p == hashlib.sha256(LABEL_MASKED_DIGEST + raw).digest()
    assert len(p) == 32 and p != hashlib.sha256(raw).digest()
    assert MaskedInput(8, vec, b"", b"").signed_payload() != p
    bumped = vec.copy()
    bumped[999] += 1
    assert MaskedInput(7, bumped, b"", b"").signed_payload() != p
    assert MaskedInput(7, vec, b"", b"c").signed_payload() != p


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(0, 3000), chunk=st.sampled_from([4, 64, 1000, 1 << 16]), bits=st.integers(1, 32)
)
def test_fused_masking_digest_equals_mask_then_reduce_then_hash(
    d: int, chunk: int, bits: int
) -> None:
    """SPEC.md D5: masking with the in-cache reduction and the (overlapped) digest gives the
    same vector and the same signed digest as the three passes done one after the other."""
    from secagg.messages import MaskedInput, masked_digest

    rng = np.random.default_rng(d * 31 + chunk + bits)
    x = rng.integers(0, 2**32, size=d, dtype=np.uint64).astype(np.uint32)
    plus, minus = [os.urandom(16) for _ in range(3)], [os.urandom(16) for _ in range(2)]
    mask = (1 << bits) - 1
    ref = x.copy()
    apply_masks(ref, plus, minus)
    np.bitwise_and(ref, np.uint32(mask), out=ref)
    got = x.copy()
    h = masked_digest(9, b"commit")
    apply_masks(got, plus, minus, chunk=chunk, reduce_mask=mask, digest=h)
    assert np.array_equal(got, ref)
    assert h.digest() == MaskedInput(9, ref, b"", b"commit").signed_payload()


def test_fused_masking_reraises_a_digest_failure_and_leaves_no_thread() -> None:
    """The overlapped digest's failure reaches the caller, and its worker thread is gone."""
    import threading

    class Broken:
        def update(self, data: memoryview, /) -> None:
            raise RuntimeError("hash failed")

    before = threading.active_count()
    y = np.zeros(1000, dtype=np.uint32)
    with pytest.raises(RuntimeError, match="hash failed"):
        apply_masks(y, [os.urandom(16)], chunk=4, digest=Broken())
    assert threading.active_count() == before
