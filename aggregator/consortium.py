"""A consortium's material: a CA, the aggregator's TLS certificate, and per member a TLS
certificate (CN ``member-<id>``) and an Ed25519 protocol identity; ``registry.json`` lists
every member's identity public key, which clients check signatures against.

Security: private keys are written with mode 0600; the CA key stays with whoever runs
``init-consortium`` (a member never needs it). TLS keys are ECDSA P-256.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secagg._crypto import ed25519_public

__all__ = [
    "Consortium",
    "MemberFiles",
    "init_consortium",
    "load_consortium",
    "member_cn",
    "member_id_from_cn",
]

_VALIDITY = _dt.timedelta(days=365)


def member_cn(member_id: int) -> str:
    return f"member-{member_id}"


def member_id_from_cn(cn: str) -> int | None:
    """The member id a certificate's common name names, or None."""
    if not cn.startswith("member-"):
        return None
    tail = cn[len("member-") :]
    return int(tail) if tail.isdigit() and 0 < int(tail) < 2**32 else None


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject_cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer_cn: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    server: bool,
    now: _dt.datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        import ipaddress

        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def init_consortium(members: int, out: Path, *, now: _dt.datetime | None = None) -> Path:
    """Create the material for ``members`` members (ids 1..members) under ``out``."""
    if not 2 <= members <= 100_000:
        raise ValueError("a consortium has between 2 and 100000 members")
    out.mkdir(parents=True, exist_ok=True)
    if (out / "registry.json").exists():
        raise FileExistsError(f"{out} already holds a consortium")
    now = now or _dt.datetime.now(_dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert(
        "secagg consortium CA",
        ca_key,
        "secagg consortium CA",
        ca_key,
        ca=True,
        server=False,
        now=now,
    )
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "ca.key", _pem_key(ca_key))
    agg_key = ec.generate_private_key(ec.SECP256R1())
    agg = _cert(
        "secagg aggregator", agg_key, "secagg consortium CA", ca_key, ca=False, server=True, now=now
    )
    (out / "aggregator.pem").write_bytes(agg.public_bytes(serialization.Encoding.PEM))
    _write_private(out / "aggregator.key", _pem_key(agg_key))
    mdir = out / "members"
    mdir.mkdir(exist_ok=True)
    registry: dict[str, str] = {}
    for i in range(1, members + 1):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(
            member_cn(i), key, "secagg consortium CA", ca_key, ca=False, server=False, now=now
        )
        (mdir / f"member-{i}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(mdir / f"member-{i}.key", _pem_key(key))
        ident = Ed25519PrivateKey.generate()
        _write_private(mdir / f"member-{i}.identity", _pem_key(ident))
        registry[str(i)] = ed25519_public(ident).hex()
    (out / "registry.json").write_text(
        json.dumps({"version": 1, "members": registry}, indent=1, sort_keys=True)
    )
    return out


@dataclass(frozen=True)
class MemberFiles:
    cert: bytes
    key: bytes
    identity: Ed25519PrivateKey


@dataclass(frozen=True)
class Consortium:
    """Loaded consortium material: the CA, the registry, and file locations."""

    root: Path
    ca: bytes
    registry: dict[int, bytes]

    def member(self, member_id: int) -> MemberFiles:
        m = self.root / "members"
        ident = serialization.load_pem_private_key(
            (m / f"member-{member_id}.identity").read_bytes(), password=None
        )
        if not isinstance(ident, Ed25519PrivateKey):
            raise ValueError("member identity is not an Ed25519 key")
        return MemberFiles(
            (m / f"member-{member_id}.pem").read_bytes(),
            (m / f"member-{member_id}.key").read_bytes(),
            ident,
        )

    def aggregator_cert(self) -> tuple[bytes, bytes]:
        return (
            (self.root / "aggregator.key").read_bytes(),
            (self.root / "aggregator.pem").read_bytes(),
        )


def load_consortium(root: Path) -> Consortium:
    """Load ``registry.json`` and the CA; refuse malformed registries."""
    doc = json.loads((root / "registry.json").read_text())
    if doc.get("version") != 1 or not isinstance(doc.get("members"), dict):
        raise ValueError("registry.json is not a version-1 registry")
    registry: dict[int, bytes] = {}
    for k, v in doc["members"].items():
        pk = bytes.fromhex(v)
        if len(pk) != 32 or not k.isdigit():
            raise ValueError(f"bad registry entry {k!r}")
        registry[int(k)] = pk
    return Consortium(root, (root / "ca.pem").read_bytes(), registry)
