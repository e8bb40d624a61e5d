"""The key holder's material in a consortium folder: a TLS certificate (CN ``secagg key
holder``, client auth) signed by the consortium CA, and the signature it puts on each round's
public context so that clients know the key came from the key holder, not the aggregator.

Security: without that signature an aggregator could hand clients a public key of its own and
decrypt every upload. The key holder signs :func:`secagg.he.context_digest` (the context bound
to one session and round) with its ECDSA P-256 key; clients check the certificate against the
consortium CA, its common name and validity, then the signature. Issuing the certificate needs
``ca.key``, which stays with whoever ran ``init-consortium``.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aggregator.consortium import _cert, _pem_key, _write_private
from secagg.he import HeError

__all__ = [
    "KEYHOLDER_CN",
    "UntrustedContext",
    "issue_keyholder_cert",
    "keyholder_material",
    "sign_context",
    "verify_context",
]

KEYHOLDER_CN = "secagg key holder"
_LABEL = b"secagg/he/v1/context-signature"
_CA_CN = "secagg consortium CA"


class UntrustedContext(HeError):
    """A public context whose signature, certificate or issuer does not check out."""


def issue_keyholder_cert(
    consortium: Path, *, now: _dt.datetime | None = None, force: bool = False
) -> tuple[Path, Path]:
    """Write ``keyholder.pem`` / ``keyholder.key`` (0600) into ``consortium``, signed by its CA."""
    key_path, cert_path = consortium / "keyholder.key", consortium / "keyholder.pem"
    if cert_path.exists() and not force:
        raise FileExistsError(f"{cert_path} exists (use force to replace it)")
    ca_key = serialization.load_pem_private_key((consortium / "ca.key").read_bytes(), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("ca.key is not an EC key")
    now = now or _dt.datetime.now(_dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(KEYHOLDER_CN, key, _CA_CN, ca_key, ca=False, server=False, now=now)
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def keyholder_material(consortium: Path) -> tuple[bytes, bytes]:
    """``(private key PEM, certificate PEM)`` of the key holder."""
    return (consortium / "keyholder.key").read_bytes(), (consortium / "keyholder.pem").read_bytes()


def sign_context(key_pem: bytes, digest: bytes) -> bytes:
    """The key holder's signature over a :func:`secagg.he.context_digest`."""
    key = serialization.load_pem_private_key(key_pem, None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the key holder's key is not an EC key")
    return key.sign(_LABEL + digest, ec.ECDSA(hashes.SHA256()))


def verify_context(
    ca_pem: bytes,
    cert_pem: bytes,
    digest: bytes,
    signature: bytes,
    *,
    now: _dt.datetime | None = None,
) -> None:
    """Raise :class:`UntrustedContext` unless ``cert_pem`` is the key holder's certificate,
    issued by the consortium CA, valid now, and ``signature`` covers ``digest``."""
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise UntrustedContext(f"the key holder's certificate is not from the CA: {exc}") from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [a.value for a in cns] != [KEYHOLDER_CN]:
        raise UntrustedContext("the certificate does not name the key holder")
    now = now or _dt.datetime.now(_dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise UntrustedContext("the key holder's certificate is not valid now")
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey):
        raise UntrustedContext("the key holder's certificate has no EC key")
    try:
        pub.verify(signature, _LABEL + digest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise UntrustedContext("the public context is not signed by the key holder") from None
