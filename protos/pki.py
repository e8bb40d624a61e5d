"""The consortium's X.509 material (docs/consortium.md): certificate signing requests made by
the party that holds the key, certificates issued by the administrator's CA, and the checks
each side runs on them. Functions over bytes; files live in :mod:`protos.consortium`.

A member's request is an ordinary CSR (CN ``member-<id>``, signed with its new TLS key) with one
extra, non-critical extension (:data:`IDENTITY_OID`): the member's Ed25519 identity public key
and that identity's signature over the member id and the TLS public key. The CSR's own
signature proves the TLS key, the extension proves the identity key, and both name the same
request, so the administrator registers keys whose owner holds both.

An aggregator's request names its host: the DNS names and IP addresses clients will dial
(``--dns``, ``--ip``), as subjectAltName entries the administrator copies into the certificate.

Security: TLS keys are ECDSA P-256 from the OS CSPRNG (``cryptography``); certificates carry
basicConstraints and an extended key usage for their role, so a member certificate cannot
serve as the aggregator's nor the reverse. No private key is ever part of a request.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from secagg._crypto import ed25519_public, sha256

__all__ = [
    "AGGREGATOR_CN",
    "CA_CN",
    "IDENTITY_OID",
    "KEYHOLDER_CN",
    "CertificateError",
    "MemberRequest",
    "ServerRequest",
    "certificate_names",
    "check_certificate",
    "fingerprint",
    "issue",
    "load_ec_key",
    "load_identity",
    "member_cn",
    "member_csr",
    "member_id_from_cn",
    "new_ca",
    "new_identity",
    "new_tls_key",
    "private_pem",
    "read_member_csr",
    "read_server_csr",
    "server_csr",
    "validate_names",
]

CA_CN = "secagg consortium CA"
AGGREGATOR_CN = "secagg aggregator"
KEYHOLDER_CN = "secagg key holder"
# A UUID-derived OID (ITU-T X.667 arc 2.25), so no registration is needed and none is squatted.
IDENTITY_OID = ObjectIdentifier("2.25.334520848023986311464882658425010580915")
_LABEL_POSSESSION = b"secagg/v1/enrolment"
_MEMBER_PREFIX = "member-"
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MAX_NAMES = 64


class CertificateError(ValueError):
    """A request or certificate is malformed, forged, expired or for another role or key."""


def member_cn(member_id: int) -> str:
    return f"{_MEMBER_PREFIX}{member_id}"


def member_id_from_cn(cn: str) -> int | None:
    """The member id a certificate's common name names, or None."""
    if not cn.startswith(_MEMBER_PREFIX):
        return None
    tail = cn[len(_MEMBER_PREFIX) :]
    if not tail.isdigit() or tail != str(int(tail)):
        return None
    return int(tail) if 0 < int(tail) < 2**32 else None


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def new_identity() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file's mode (0600) protects it."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_ec_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what} is not a PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{what} is not an EC private key")
    return key


def load_identity(pem: bytes, what: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{what} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CertificateError(f"{what} is not an Ed25519 private key")
    return key


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _possession_message(member_id: int, tls_public: ec.EllipticCurvePublicKey) -> bytes:
    return _LABEL_POSSESSION + struct.pack(">I", member_id) + sha256(_spki(tls_public))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(attrs) != 1 or len(name) != 1:
        raise CertificateError("the subject must be exactly one common name")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


# -- requests ------------------------------------------------------------------------------------


def member_csr(
    member_id: int, tls_key: ec.EllipticCurvePrivateKey, identity: Ed25519PrivateKey
) -> bytes:
    """A member's enrolment request (PEM): its TLS public key and Ed25519 identity, each
    proven by a signature of the private key (see the module docstring)."""
    if not 0 < member_id < 2**32:
        raise CertificateError("a member id is in [1, 2^32 - 1]")
    proof = identity.sign(_possession_message(member_id, tls_key.public_key()))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(member_cn(member_id)))
        .add_extension(
            x509.UnrecognizedExtension(IDENTITY_OID, ed25519_public(identity) + proof),
            critical=False,
        )
        .sign(tls_key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def validate_names(dns: Sequence[str], ips: Sequence[str]) -> list[x509.GeneralName]:
    """subjectAltName entries for ``dns`` host names and ``ips`` addresses; CertificateError
    for anything that is not one."""
    names: list[x509.GeneralName] = []
    for d in dns:
        host = d.strip().rstrip(".").lower()
        labels = host.split(".")
        if not host or len(host) > 253 or not all(_DNS_LABEL.match(x) for x in labels):
            raise CertificateError(f"{d!r} is not a DNS host name")
        names.append(x509.DNSName(host))
    for i in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(i.strip())))
        except ValueError:
            raise CertificateError(f"{i!r} is not an IP address") from None
    if not names:
        raise CertificateError("name the host: at least one --dns name or --ip address")
    if len(names) > MAX_NAMES:
        raise CertificateError(f"at most {MAX_NAMES} names")
    if len(set(map(str, names))) != len(names):
        raise CertificateError("a name is listed twice")
    return names


def server_csr(
    tls_key: ec.EllipticCurvePrivateKey,
    dns: Sequence[str],
    ips: Sequence[str],
    *,
    cn: str = AGGREGATOR_CN,
) -> bytes:
    """A server's request (PEM) naming the host names and addresses clients will dial."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(cn))
        .add_extension(x509.SubjectAlternativeName(validate_names(dns, ips)), critical=False)
        .sign(tls_key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class MemberRequest:
    """A verified member request: who asks, with which identity key, for which TLS key."""

    member_id: int
    identity: bytes
    csr: x509.CertificateSigningRequest


@dataclass(frozen=True)
class ServerRequest:
    """A verified server request and the names it asks for."""

    cn: str
    names: tuple[x509.GeneralName, ...]
    csr: x509.CertificateSigningRequest


def _load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise CertificateError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise CertificateError("the request's signature does not verify")
    if not isinstance(csr.public_key(), ec.EllipticCurvePublicKey):
        raise CertificateError("the request's key is not an EC key")
    return csr


def read_member_csr(pem: bytes) -> MemberRequest:
    """Parse and check a member request (signature, name, proof of the identity key)."""
    csr = _load_csr(pem)
    mid = member_id_from_cn(_cn(csr.subject))
    if mid is None:
        raise CertificateError("the request does not name a member (CN member-<id>)")
    try:
        ext = csr.extensions.get_extension_for_oid(IDENTITY_OID).value
    except x509.ExtensionNotFound:
        raise CertificateError(
            "the request carries no identity key (not a member request?)"
        ) from None
    raw = ext.value if isinstance(ext, x509.UnrecognizedExtension) else b""
    if len(raw) != 32 + 64:
        raise CertificateError("the request's identity extension is malformed")
    ident, proof = raw[:32], raw[32:]
    tls_public = csr.public_key()
    assert isinstance(tls_public, ec.EllipticCurvePublicKey)
    try:
        Ed25519PublicKey.from_public_bytes(ident).verify(
            proof, _possession_message(mid, tls_public)
        )
    except (InvalidSignature, ValueError):
        raise CertificateError(
            f"member {mid}'s request does not prove it holds the identity key it names"
        ) from None
    others = [e for e in csr.extensions if e.oid != IDENTITY_OID]
    if others:
        raise CertificateError("a member request carries only the identity extension")
    return MemberRequest(mid, ident, csr)


def read_server_csr(pem: bytes, *, cn: str = AGGREGATOR_CN) -> ServerRequest:
    """Parse and check a server request; it must name at least one host."""
    csr = _load_csr(pem)
    if _cn(csr.subject) != cn:
        raise CertificateError(f"the request is not for {cn!r}")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("the request names no host (no --dns / --ip)") from None
    names = tuple(san)
    if not names or any(not isinstance(n, x509.DNSName | x509.IPAddress) for n in names):
        raise CertificateError("the request may name DNS host names and IP addresses only")
    return ServerRequest(cn, names, csr)


# -- issuing -------------------------------------------------------------------------------------


def _builder(
    subject: str, public: ec.EllipticCurvePublicKey, issuer: str, now: _dt.datetime, days: int
) -> x509.CertificateBuilder:
    if not 1 <= days <= 3650:
        raise CertificateError("a certificate is valid for 1 to 3650 days")
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
    )


def new_ca(now: _dt.datetime, *, days: int = 1825) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A fresh consortium CA: its key and self-signed certificate (PEM)."""
    key = new_tls_key()
    cert = (
        _builder(CA_CN, key.public_key(), CA_CN, now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def issue(
    public: ec.EllipticCurvePublicKey,
    subject: str,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    server: bool,
    now: _dt.datetime,
    days: int = 365,
    names: Sequence[x509.GeneralName] = (),
) -> bytes:
    """A certificate (PEM) for ``public`` under the CA: server auth with ``names`` as its
    subjectAltName, or client auth."""
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, public, CA_CN, now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# -- checking ------------------------------------------------------------------------------------


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertificateError(f"{what} is not a PEM certificate: {exc}") from None


def fingerprint(cert_pem: bytes) -> bytes:
    """SHA-256 of the certificate's DER: what the registry pins for a member."""
    return _load_cert(cert_pem, "the certificate").fingerprint(hashes.SHA256())


def certificate_names(cert_pem: bytes) -> list[str]:
    """The DNS names and IP addresses a server certificate holds."""
    cert = _load_cert(cert_pem, "the certificate")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in san if isinstance(n, x509.DNSName | x509.IPAddress)]


def check_certificate(
    cert_pem: bytes,
    ca_pem: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: str,
    now: _dt.datetime,
) -> None:
    """Raise :class:`CertificateError` unless ``cert_pem`` was issued by the CA, names
    ``subject``, is valid at ``now`` and certifies ``key``'s public half."""
    cert = _load_cert(cert_pem, "the certificate")
    ca = _load_cert(ca_pem, "the CA certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError("the certificate was not issued by this consortium's CA") from None
    if _cn(cert.subject) != subject:
        raise CertificateError(f"the certificate is for {_cn(cert.subject)!r}, not {subject!r}")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(
            f"the certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now"
        )
    theirs = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if theirs != _spki(key.public_key()):
        raise CertificateError("the certificate is for another key than this one")
