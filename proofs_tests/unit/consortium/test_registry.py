"""The signed registry (secagg/registry.py): canonical bytes, signature, succession rules and a
member's check of its own entry."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg._crypto import ed25519_public
from secagg.registry import (
    ForgedRegistry,
    MalformedRegistry,
    Member,
    Registry,
    RegistryEquivocation,
    RegistryError,
    StaleRegistry,
    WrongEntry,
    check_own_entry,
    check_succession,
    parse_signed,
    sign,
    verify,
)

ADMIN = Ed25519PrivateKey.generate()
ADMIN_PK = ed25519_public(ADMIN)
T0 = "2026-12-03T00:00:00Z"


def _member(i: int) -> Member:
    return Member(i, bytes([i]) * 32, bytes([255 - i]) * 32)


def _registry(n: int = 3, version: int = 1) -> Registry:
    return Registry("test", version, T0, members={i: _member(i) for i in range(1, n + 1)})


def test_sign_verify_round_trip() -> None:
    reg = _registry()
    data = sign(reg, ADMIN)
    back = verify(data, ADMIN_PK)
    assert back == reg and back.canonical() == reg.canonical()
    assert back.identities == {i: bytes([i]) * 32 for i in (1, 2, 3)}
    assert back.policy_fraction == pytest.approx(1 / 3)


def test_another_key_is_refused() -> None:
    other = ed25519_public(Ed25519PrivateKey.generate())
    with pytest.raises(ForgedRegistry, match="not signed by this consortium's administrator"):
        verify(sign(_registry(), ADMIN), other)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_edit_of_a_signed_registry_is_refused(data: st.DataObject) -> None:
    """Flipping any byte, or editing any field of the JSON, never yields a registry that
    verifies with different content."""
    reg = _registry(4, version=7)
    signed = bytearray(sign(reg, ADMIN))
    i = data.draw(st.integers(0, len(signed) - 1))
    bit = data.draw(st.integers(0, 7))
    signed[i] ^= 1 << bit
    try:
        back = verify(bytes(signed), ADMIN_PK)
    except RegistryError:
        return
    # Whitespace or an equivalent JSON spelling may survive; the content may not change.
    assert back.canonical() == reg.canonical()


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["registry"].__setitem__("version", 8),
        lambda d: d["registry"]["members"]["2"].__setitem__("identity", "ab" * 32),
        lambda d: d["registry"]["members"].pop("3"),
        lambda d: d["registry"].__setitem__("corrupt_fraction", [1, 10]),
        lambda d: d["registry"].__setitem__("revoked", [9]),
    ],
)
def test_semantic_edits_are_refused(edit: object) -> None:
    doc = json.loads(sign(_registry(), ADMIN))
    edit(doc)  # type: ignore[operator]
    with pytest.raises(ForgedRegistry):
        verify(json.dumps(doc).encode(), ADMIN_PK)


@pytest.mark.parametrize(
    "text, match",
    [
        (b"", "not a registry file"),
        (b"[]", "must be a JSON object"),
        (b'{"registry": {}, "signature": "00"}', "unexpected fields|must be"),
        (b'{"registry": 1, "signature": 2, "x": 3}', "unexpected fields"),
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"registry": 1.5, "signature": ""}', "no floating-point"),
        (b"\xff\xfe", "not a registry file"),
    ],
)
def test_malformed_files_are_refused_in_one_sentence(text: bytes, match: str) -> None:
    with pytest.raises(MalformedRegistry, match=match):
        parse_signed(text)


def test_field_types_are_strict() -> None:
    doc = json.loads(sign(_registry(), ADMIN))
    for path, value in [
        (("version",), True),
        (("version",), "7"),
        (("members", "1", "identity"), "AB" * 32),
        (("corrupt_fraction",), [2, 6]),  # not reduced
        (("corrupt_fraction",), [1, 0]),
        (("issued_at",), "yesterday"),
        (("consortium",), ""),
    ]:
        bad = json.loads(json.dumps(doc))
        target = bad["registry"]
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value
        with pytest.raises(MalformedRegistry):
            parse_signed(json.dumps(bad).encode())
    bad = json.loads(json.dumps(doc))
    bad["registry"]["members"]["01"] = bad["registry"]["members"].pop("1")
    with pytest.raises(MalformedRegistry, match="decimal id"):
        parse_signed(json.dumps(bad).encode())


def test_dataclass_invariants() -> None:
    with pytest.raises(MalformedRegistry):
        Member(0, bytes(32), bytes(32))
    with pytest.raises(MalformedRegistry):
        Member(1, bytes(31), bytes(32))
    with pytest.raises(MalformedRegistry, match="both listed and revoked"):
        Registry("t", 1, T0, members={1: _member(1)}, revoked=frozenset({1}))
    with pytest.raises(MalformedRegistry, match="corrupt fraction"):
        Registry("t", 1, T0, corrupt_fraction=Fraction(1, 1))
    with pytest.raises(MalformedRegistry, match="does not describe"):
        Registry("t", 1, T0, members={2: _member(1)})


def test_edits_make_the_next_version() -> None:
    reg = _registry(3, version=4)
    grown = reg.with_member(_member(4), T0)
    assert grown.version == 5 and set(grown.members) == {1, 2, 3, 4}
    shrunk = grown.without_member(2, T0)
    assert shrunk.version == 6 and 2 not in shrunk.members and shrunk.revoked == {2}
    with pytest.raises(RegistryError, match="never reissued"):
        shrunk.with_member(_member(2), T0)
    with pytest.raises(RegistryError, match="not in registry"):
        shrunk.without_member(2, T0)


def test_succession() -> None:
    v5, v6 = _registry(3, 5), _registry(4, 6)
    check_succession(v6, v5.seen)
    check_succession(v5, v5.seen)  # the same one again
    check_succession(v5, None)
    with pytest.raises(StaleRegistry, match="older than v6"):
        check_succession(v5, v6.seen)
    with pytest.raises(RegistryEquivocation, match="both claim to be v5"):
        check_succession(_registry(2, 5), v5.seen)
    other = Registry("another", 9, T0)
    with pytest.raises(RegistryError, match="belongs to 'test'"):
        check_succession(other, v5.seen)


def test_own_entry() -> None:
    me = Ed25519PrivateKey.generate()
    cert = bytes(range(32))
    reg = Registry("t", 1, T0, members={3: Member(3, ed25519_public(me), cert)})
    check_own_entry(reg, 3, me, cert)
    with pytest.raises(WrongEntry, match="another identity key"):
        check_own_entry(reg, 3, Ed25519PrivateKey.generate(), cert)
    with pytest.raises(WrongEntry, match="another TLS certificate"):
        check_own_entry(reg, 3, me, bytes(32))
    with pytest.raises(WrongEntry, match="is not a member"):
        check_own_entry(reg, 4, me, cert)
    gone = reg.without_member(3, T0)
    with pytest.raises(WrongEntry, match="was revoked"):
        check_own_entry(gone, 3, me, cert)
