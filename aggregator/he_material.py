"""The key holder's material in a consortium bundle: a TLS certificate (CN ``secagg key
holder``, client auth) signed by the consortium CA. The signature it puts on each round's
public context, and the check of it, live in :mod:`protos.he_material` (clients check it too).

Issuing the certificate needs the CA key: in a bundle made by ``init-consortium`` that is
``admin/ca.key``; in a deployment only the administrator holds it.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from protos import pki
from protos.consortium import ConsortiumError, write_private, write_public
from protos.he_material import KEYHOLDER_CN, UntrustedContext, sign_context, verify_context

__all__ = [
    "KEYHOLDER_CN",
    "UntrustedContext",
    "issue_keyholder_cert",
    "keyholder_material",
    "sign_context",
    "verify_context",
]


def _ca_key_path(consortium: Path) -> Path:
    for path in (consortium / "admin" / "ca.key", consortium / "ca.key"):
        if path.exists():
            return path
    raise ConsortiumError(f"no CA key in {consortium} (only the administrator holds it)")


def issue_keyholder_cert(
    consortium: Path, *, now: _dt.datetime | None = None, force: bool = False
) -> tuple[Path, Path]:
    """Write ``keyholder.pem`` / ``keyholder.key`` (0600) into ``consortium``, signed by its CA."""
    key_path, cert_path = consortium / "keyholder.key", consortium / "keyholder.pem"
    if cert_path.exists() and not force:
        raise FileExistsError(f"{cert_path} exists (use force to replace it)")
    ca_key = pki.load_ec_key(_ca_key_path(consortium).read_bytes(), "ca.key")
    key = pki.new_tls_key()
    cert = pki.issue(
        key.public_key(), KEYHOLDER_CN, ca_key, server=False, now=now or _dt.datetime.now(_dt.UTC)
    )
    write_private(key_path, pki.private_pem(key))
    write_public(cert_path, cert)
    return key_path, cert_path


def keyholder_material(consortium: Path) -> tuple[bytes, bytes]:
    """``(private key PEM, certificate PEM)`` of the key holder."""
    return (consortium / "keyholder.key").read_bytes(), (consortium / "keyholder.pem").read_bytes()
