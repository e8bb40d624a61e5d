"""The key holder's signature on each round's public context (HE variant), checked by clients
and the aggregator alike: below both, since both check it.

Security: without that signature an aggregator could hand clients a public key of its own and
decrypt every upload. The key holder signs :func:`secagg.he.context_digest` (the context bound
to one session and round) with its ECDSA P-256 key; a reader checks the certificate against
the consortium CA, its common name and validity, then the signature.
"""

from __future__ import annotations

import datetime as _dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protos.pki import KEYHOLDER_CN
from secagg.he import HeError

__all__ = ["KEYHOLDER_CN", "UntrustedContext", "sign_context", "verify_context"]

_LABEL = b"secagg/he/v1/context-signature"


class UntrustedContext(HeError):
    """A public context whose signature, certificate or issuer does not check out."""


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
