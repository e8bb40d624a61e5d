"""The consortium registry: who the members are, which keys are theirs, signed by the
administrator (docs/consortium.md).

A registry binds each member id to the member's Ed25519 protocol identity and to the SHA-256
fingerprint of its current TLS certificate, and carries the consortium's corruption assumption
(the fraction of any neighbourhood that may collude with the aggregator), from which every
client builds its :class:`~secagg.ClientPolicy` and the aggregator chooses ``(k, t)``: one
number, in one signed place. Every change (enrolment, rotation, revocation) issues a new
``version``; a reader refuses a registry older than the newest it has seen.

Pure: bytes in, bytes or typed errors out. Loading and saving files lives in
``protos/consortium.py``.

Security: the administrator's signature is what a member trusts, not the relay that handed
the file over (the aggregator relays it and cannot forge it). What the administrator itself
could do (register a key of its own for a member id) each member can detect for its own entry
(:func:`check_own_entry`); the rest is trusted (threat_models/malicious-aggregator.md).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from secagg._crypto import ct_equal, ed25519_public, sha256
from secagg._errors import SecAggError

__all__ = [
    "DEFAULT_CORRUPT_FRACTION",
    "FORMAT",
    "LABEL_REGISTRY",
    "MAX_MEMBERS",
    "MAX_REGISTRY_BYTES",
    "ForgedRegistry",
    "MalformedRegistry",
    "Member",
    "Registry",
    "RegistryEquivocation",
    "RegistryError",
    "Seen",
    "StaleRegistry",
    "WrongEntry",
    "check_own_entry",
    "check_succession",
    "parse_signed",
    "sign",
    "verify",
]

FORMAT = "secagg-registry/v1"
LABEL_REGISTRY = b"secagg/v1/registry"
MAX_MEMBERS = 100_000
# A registry of MAX_MEMBERS entries is about 17 MB; anything far larger is not a registry.
MAX_REGISTRY_BYTES = 32 << 20
# Fewer than a third of any neighbourhood colludes with the aggregator: the default of
# ClientPolicy, and what `secagg-admin init` writes unless told otherwise.
DEFAULT_CORRUPT_FRACTION = Fraction(1, 3)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,127}$")
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class RegistryError(SecAggError):
    """A registry cannot be used; the message says why in one sentence."""


class MalformedRegistry(RegistryError, ValueError):
    """The bytes are not a registry of this format (wrong type, field, size or encoding)."""


class ForgedRegistry(RegistryError):
    """The registry's signature does not verify under the administrator's public key."""


class StaleRegistry(RegistryError):
    """The registry is older than one already seen (a replayed or withheld update)."""


class RegistryEquivocation(RegistryError):
    """Two different registries carry the same consortium and version."""


class WrongEntry(RegistryError):
    """The registry's entry for this member is absent or names keys the member does not hold."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member: its id, raw Ed25519 identity public key, and the SHA-256 of the DER of
    its current TLS certificate (the aggregator admits that certificate and no other)."""

    id: int
    identity: bytes
    certificate_sha256: bytes

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or not 0 < self.id < 2**32:
            raise MalformedRegistry(f"member id {self.id!r} is not in [1, 2^32 - 1]")
        if len(self.identity) != 32:
            raise MalformedRegistry(f"member {self.id}: the identity key is not 32 bytes")
        if len(self.certificate_sha256) != 32:
            raise MalformedRegistry(f"member {self.id}: the certificate digest is not 32 bytes")


@dataclass(frozen=True, slots=True)
class Seen:
    """What a reader remembers of the newest registry it accepted."""

    consortium: str
    version: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class Registry:
    """One version of a consortium's membership (see the module docstring).

    ``issued_at`` is an ISO 8601 UTC time (``YYYY-MM-DDTHH:MM:SSZ``) given by the caller: this
    module never reads a clock. ``revoked`` lists ids removed for good (they are never issued
    again, so an id means one party across the whole history of a ledger).
    """

    consortium: str
    version: int
    issued_at: str
    corrupt_fraction: Fraction = DEFAULT_CORRUPT_FRACTION
    members: Mapping[int, Member] = field(default_factory=dict)
    revoked: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if not isinstance(self.consortium, str) or not _NAME.match(self.consortium):
            raise MalformedRegistry(
                "the consortium name must be 1-128 letters, digits, spaces or ._:-"
            )
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise MalformedRegistry("the registry version must be an integer")
        if not 1 <= self.version < 2**63:
            raise MalformedRegistry("the registry version must be in [1, 2^63)")
        if not isinstance(self.issued_at, str) or not _TIME.match(self.issued_at):
            raise MalformedRegistry("issued_at must be a UTC time YYYY-MM-DDTHH:MM:SSZ")
        f = self.corrupt_fraction
        if not isinstance(f, Fraction) or not 0 <= f < 1 or f.denominator > 1000:
            raise MalformedRegistry(
                "the corrupt fraction must be a fraction in [0, 1) with a denominator <= 1000"
            )
        if len(self.members) > MAX_MEMBERS:
            raise MalformedRegistry(f"a registry holds at most {MAX_MEMBERS} members")
        for k, m in self.members.items():
            if not isinstance(m, Member) or m.id != k:
                raise MalformedRegistry(f"registry entry {k!r} does not describe member {k!r}")
        if any(
            isinstance(r, bool) or not isinstance(r, int) or not 0 < r < 2**32 for r in self.revoked
        ):
            raise MalformedRegistry("revoked ids must be in [1, 2^32 - 1]")
        both = set(self.members) & set(self.revoked)
        if both:
            raise MalformedRegistry(f"members {sorted(both)} are both listed and revoked")
        object.__setattr__(self, "members", dict(sorted(self.members.items())))
        object.__setattr__(self, "revoked", frozenset(self.revoked))

    # -- views --------------------------------------------------------------------------------

    @property
    def identities(self) -> dict[int, bytes]:
        """id -> raw Ed25519 public key: what :class:`~secagg.SecAggClient` and
        :class:`~secagg.SecAggServer` take as ``registry``."""
        return {i: m.identity for i, m in self.members.items()}

    @property
    def policy_fraction(self) -> float:
        """The corrupt fraction as :class:`~secagg.ClientPolicy` takes it."""
        return float(self.corrupt_fraction)

    def canonical(self) -> bytes:
        """The bytes the administrator signs: sorted-key JSON, no whitespace, ASCII only."""
        doc = {
            "format": FORMAT,
            "consortium": self.consortium,
            "version": self.version,
            "issued_at": self.issued_at,
            "corrupt_fraction": [
                self.corrupt_fraction.numerator,
                self.corrupt_fraction.denominator,
            ],
            "members": {
                str(i): {
                    "identity": m.identity.hex(),
                    "certificate_sha256": m.certificate_sha256.hex(),
                }
                for i, m in self.members.items()
            },
            "revoked": sorted(self.revoked),
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @property
    def digest(self) -> bytes:
        return sha256(LABEL_REGISTRY, self.canonical())

    @property
    def seen(self) -> Seen:
        return Seen(self.consortium, self.version, self.digest)

    # -- the administrator's edits (each one is the next version) ------------------------------

    def with_member(self, member: Member, issued_at: str) -> Registry:
        """The next version with ``member`` added, or its keys replaced (a rotation)."""
        if member.id in self.revoked:
            raise RegistryError(f"member {member.id} was revoked; its id is never reissued")
        members = dict(self.members)
        members[member.id] = member
        return replace(self, version=self.version + 1, issued_at=issued_at, members=members)

    def without_member(self, member_id: int, issued_at: str) -> Registry:
        """The next version with ``member_id`` removed and listed as revoked."""
        if member_id not in self.members:
            raise RegistryError(f"member {member_id} is not in registry v{self.version}")
        members = {i: m for i, m in self.members.items() if i != member_id}
        return replace(
            self,
            version=self.version + 1,
            issued_at=issued_at,
            members=members,
            revoked=self.revoked | {member_id},
        )


def sign(registry: Registry, key: Ed25519PrivateKey) -> bytes:
    """The signed registry file: ``{"registry": {...}, "signature": hex}`` (UTF-8 JSON).

    Security: the signature covers ``LABEL_REGISTRY || canonical()``, so it cannot be
    confused with any other Ed25519 signature of the project (protocol labels differ)."""
    sig = key.sign(LABEL_REGISTRY + registry.canonical())
    body = json.loads(registry.canonical())
    return (
        json.dumps({"registry": body, "signature": sig.hex()}, indent=1, sort_keys=True) + "\n"
    ).encode()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise MalformedRegistry(f"duplicate key {k!r}")
        out[k] = v
    return out


def _no_floats(text: str) -> Any:
    raise MalformedRegistry("a registry holds no floating-point numbers")


def _int(x: object, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise MalformedRegistry(f"{what} must be an integer")
    return x


def _hex(x: object, what: str, length: int) -> bytes:
    if not isinstance(x, str) or len(x) != 2 * length or not re.fullmatch(r"[0-9a-f]*", x):
        raise MalformedRegistry(f"{what} must be {length} bytes of lower-case hex")
    return bytes.fromhex(x)


def _keys(doc: object, want: Iterable[str], what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise MalformedRegistry(f"{what} must be a JSON object")
    want = set(want)
    if set(doc) != want:
        extra, missing = sorted(set(doc) - want), sorted(want - set(doc))
        raise MalformedRegistry(f"{what}: unexpected fields {extra}, missing fields {missing}")
    return doc


def _from_doc(doc: object) -> Registry:
    d = _keys(
        doc,
        ("format", "consortium", "version", "issued_at", "corrupt_fraction", "members", "revoked"),
        "the registry",
    )
    if d["format"] != FORMAT:
        raise MalformedRegistry(f"not a {FORMAT} registry (format {d['format']!r})")
    frac = d["corrupt_fraction"]
    if not isinstance(frac, list) or len(frac) != 2:
        raise MalformedRegistry("corrupt_fraction must be [numerator, denominator]")
    num, den = _int(frac[0], "the numerator"), _int(frac[1], "the denominator")
    if den <= 0 or math.gcd(num, den) != 1:
        raise MalformedRegistry(
            "corrupt_fraction must be a reduced fraction with a positive denominator"
        )
    members_doc = d["members"]
    if not isinstance(members_doc, dict):
        raise MalformedRegistry("members must be a JSON object")
    if len(members_doc) > MAX_MEMBERS:
        raise MalformedRegistry(f"a registry holds at most {MAX_MEMBERS} members")
    members: dict[int, Member] = {}
    for k, v in members_doc.items():
        if not isinstance(k, str) or not re.fullmatch(r"[1-9][0-9]{0,9}", k):
            raise MalformedRegistry(f"member key {k!r} is not a decimal id")
        e = _keys(v, ("identity", "certificate_sha256"), f"member {k}")
        mid = int(k)
        members[mid] = Member(
            mid,
            _hex(e["identity"], f"member {k}'s identity", 32),
            _hex(e["certificate_sha256"], f"member {k}'s certificate digest", 32),
        )
    revoked = d["revoked"]
    if not isinstance(revoked, list) or len(revoked) > MAX_MEMBERS:
        raise MalformedRegistry("revoked must be a list of ids")
    if not isinstance(d["consortium"], str) or not isinstance(d["issued_at"], str):
        raise MalformedRegistry("consortium and issued_at must be strings")
    return Registry(
        consortium=d["consortium"],
        version=_int(d["version"], "the version"),
        issued_at=d["issued_at"],
        corrupt_fraction=Fraction(num, den),
        members=members,
        revoked=frozenset(_int(r, "a revoked id") for r in revoked),
    )


def parse_signed(data: bytes) -> tuple[Registry, bytes]:
    """Parse a signed registry file into the registry and its 64-byte signature, without
    checking the signature (:func:`verify` does both)."""
    if len(data) > MAX_REGISTRY_BYTES:
        raise MalformedRegistry(f"a registry file is at most {MAX_REGISTRY_BYTES} bytes")
    try:
        doc = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_float=_no_floats,
            parse_constant=_no_floats,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise MalformedRegistry(f"not a registry file: {exc}") from None
    top = _keys(doc, ("registry", "signature"), "the signed registry")
    return _from_doc(top["registry"]), _hex(top["signature"], "the signature", 64)


def verify(data: bytes, administrator: bytes) -> Registry:
    """The registry in ``data`` if the administrator (raw Ed25519 public key) signed it;
    raises :class:`MalformedRegistry` or :class:`ForgedRegistry` otherwise."""
    registry, sig = parse_signed(data)
    if len(administrator) != 32:
        raise ForgedRegistry("the administrator's public key is not a 32-byte Ed25519 key")
    try:
        Ed25519PublicKey.from_public_bytes(administrator).verify(
            sig, LABEL_REGISTRY + registry.canonical()
        )
    except (_CryptoInvalidSignature, ValueError):
        raise ForgedRegistry(
            f"registry v{registry.version} of {registry.consortium!r} is not signed by this "
            "consortium's administrator"
        ) from None
    return registry


def check_succession(new: Registry, seen: Seen | None) -> None:
    """Raise unless ``new`` may replace the newest registry seen: same consortium, and a newer
    version, or the same version with the same content."""
    if seen is None:
        return
    if new.consortium != seen.consortium:
        raise RegistryError(
            f"registry of consortium {new.consortium!r}, but this party belongs to "
            f"{seen.consortium!r}"
        )
    if new.version < seen.version:
        raise StaleRegistry(
            f"registry v{new.version} is older than v{seen.version}, already seen: refusing it"
        )
    if new.version == seen.version and not ct_equal(new.digest, seen.digest):
        raise RegistryEquivocation(
            f"two different registries both claim to be v{new.version}: refusing the second"
        )


def check_own_entry(
    registry: Registry, member_id: int, identity: Ed25519PrivateKey, certificate_sha256: bytes
) -> None:
    """Raise :class:`WrongEntry` unless the registry lists ``member_id`` with this identity
    key and this certificate: a member refuses a registry that would let someone else speak
    for it."""
    entry = registry.members.get(member_id)
    if entry is None:
        why = "was revoked" if member_id in registry.revoked else "is not a member"
        raise WrongEntry(f"member {member_id} {why} in registry v{registry.version}")
    if not ct_equal(entry.identity, ed25519_public(identity)):
        raise WrongEntry(
            f"registry v{registry.version} lists another identity key for member {member_id}"
        )
    if not ct_equal(entry.certificate_sha256, certificate_sha256):
        raise WrongEntry(
            f"registry v{registry.version} lists another TLS certificate for member {member_id}"
        )
