"""Known-answer tests for the PRG, the KDF labels, Shamir and the X25519 blocklist.

Each vector carries its source in ``secagg_v1.json``; the KDF cases are recomputed here with the
standard library's ``hmac`` (RFC 5869 by hand) so the implementation is checked, not echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from secagg import InvalidShare, KeyAgreementError
from secagg._crypto import hkdf, kdf_info, x25519_agree, x25519_keypair
from secagg._derive import channel_key, pair_mask_key, self_mask_key
from secagg._rng import DeterministicRandom
from secagg.prg import prg_slice
from secagg.shamir import PRIME, reconstruct

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "secagg_v1.json").read_text())


def _num(s: str) -> int:
    special = {"p": PRIME, "p-1": PRIME - 1}
    return special[s] if s in special else int(s)


def _rfc5869(ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()  # empty salt = HashLen zeros
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


@pytest.mark.parametrize("case", VECTORS["prg"], ids=lambda c: c["name"])
def test_prg_known_answers(case: dict[str, Any]) -> None:
    got = prg_slice(bytes.fromhex(case["key"]), case["start"], len(case["elements_u32"]))
    assert [int(x) for x in got] == case["elements_u32"]


@pytest.mark.parametrize("case", VECTORS["hkdf"], ids=lambda c: c["name"])
def test_hkdf_rfc5869(case: dict[str, Any]) -> None:
    ikm, info = bytes.fromhex(case["ikm"]), bytes.fromhex(case["info"])
    assert hkdf(ikm, info, case["length"]).hex() == case["okm"]
    assert _rfc5869(ikm, info, case["length"]).hex() == case["okm"]


@pytest.mark.parametrize("case", VECTORS["kdf_labels"]["cases"], ids=lambda c: c["what"])
def test_kdf_labels_and_layout(case: dict[str, Any]) -> None:
    meta = VECTORS["kdf_labels"]
    sess, rnd = bytes.fromhex(meta["session_id"]), meta["round"]
    u, v = case["u"], case["v"]
    pk_u, pk_v = bytes.fromhex(case["pk_u"]), bytes.fromhex(case["pk_v"])
    ikm = bytes.fromhex(case["ikm"])
    (lo, pk_lo), (hi, pk_hi) = sorted(((u, pk_u), (v, pk_v)))
    info = case["label"].encode() + sess + struct.pack(">QII", rnd, lo, hi) + pk_lo + pk_hi
    assert info == kdf_info(case["label"].encode(), sess, rnd, u, v, pk_u, pk_v)
    assert _rfc5869(ikm, info, case["length"]).hex() == case["okm"]
    impl = {
        "pair-mask": lambda: pair_mask_key(ikm, sess, rnd, u, v, pk_u, pk_v),
        "self-mask": lambda: self_mask_key(ikm, sess, rnd, u),
        "share-channel": lambda: channel_key(ikm, sess, rnd, u, v, pk_u, pk_v),
    }[case["what"]]
    assert impl().hex() == case["okm"]


def test_kdf_is_symmetric_in_the_pair() -> None:
    sess = bytes(16)
    a, b = bytes([1]) * 32, bytes([2]) * 32
    assert pair_mask_key(b"k" * 32, sess, 1, 4, 9, a, b) == pair_mask_key(
        b"k" * 32, sess, 1, 9, 4, b, a
    )
    assert pair_mask_key(b"k" * 32, sess, 1, 4, 9, a, b) != pair_mask_key(
        b"k" * 32, sess, 2, 4, 9, a, b
    )


@pytest.mark.parametrize("case", VECTORS["shamir"]["good"], ids=lambda c: str(c["shares"]))
def test_shamir_known_answers(case: dict[str, Any]) -> None:
    shares = {x: _num(y) for x, y in case["shares"]}
    assert reconstruct(shares, case["t"]) == _num(case["secret"])


@pytest.mark.parametrize("case", VECTORS["shamir"]["bad"], ids=lambda c: c["why"])
def test_shamir_bad_cases(case: dict[str, Any]) -> None:
    with pytest.raises(InvalidShare):
        reconstruct([(x, _num(y)) for x, y in case["shares"]], case["t"])


@pytest.mark.parametrize("point", VECTORS["x25519_low_order"]["points"])
def test_x25519_low_order_points_refused(point: str) -> None:
    sk, _ = x25519_keypair(DeterministicRandom(1))
    with pytest.raises(KeyAgreementError):
        x25519_agree(sk, bytes.fromhex(point))
