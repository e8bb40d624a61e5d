"""The consortium administrator (``secagg-admin``): a role of its own, separate from the
aggregator operator. It holds the CA key and the registry signing key, signs the requests
members and the aggregator send, and publishes the signed registry (docs/consortium.md).

It never sees a member's private key: a member makes its keys and sends a certificate signing
request (``secagg-client enrol``); the administrator checks it, issues the certificate, and
issues the next registry version. Rotation replaces a member's keys; revocation removes the
member (the next version lists it as revoked and the aggregator refuses it from then on).

Security: ``ca.key`` and ``registry.key`` never leave the administrator's folder (mode 0600);
whoever holds them decides who is a member, so they are the consortium's root of trust. Edits
take a lock on the folder, so two runs cannot issue the same version twice.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protos import pki
from protos.consortium import (
    PUBLIC_FILES,
    ConsortiumError,
    admin_public_key,
    exclusive,
    read_registry,
    remember_registry,
    utc_now,
    utc_stamp,
    write_private,
    write_public,
)
from secagg import registry as reg

__all__ = ["AdminFolder", "main"]


class AdminFolder:
    """The administrator's folder; ``public/`` inside it is what to publish."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def public(self) -> Path:
        return self.path / "public"

    def init(
        self,
        consortium: str,
        *,
        corrupt_fraction: Fraction = reg.DEFAULT_CORRUPT_FRACTION,
        now: _dt.datetime | None = None,
        ca_days: int = 1825,
    ) -> reg.Registry:
        """A new CA, a registry signing key and registry v1 (no members yet)."""
        now = now or utc_now()
        if (self.path / "ca.key").exists() or (self.path / "registry.key").exists():
            raise ConsortiumError(f"{self.path} already holds an administrator's keys")
        with exclusive(self.path, "administrator"):
            ca_key, ca_pem = pki.new_ca(now, days=ca_days)
            signer = pki.new_identity()
            first = reg.Registry(consortium, 1, utc_stamp(now), corrupt_fraction)
            write_private(self.path / "ca.key", pki.private_pem(ca_key))
            write_private(self.path / "registry.key", pki.private_pem(signer))
            write_public(self.path / "ca.pem", ca_pem)
            write_public(
                self.path / "registry.pub",
                signer.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                ),
            )
            self._publish(first, signer)
        return first

    # -- the signing keys ---------------------------------------------------------------------

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        return pki.load_ec_key(_private(self.path / "ca.key"), "ca.key")

    def _signer(self) -> Ed25519PrivateKey:
        return pki.load_identity(_private(self.path / "registry.key"), "registry.key")

    def registry(self) -> reg.Registry:
        return read_registry(self.path)

    def _publish(self, registry: reg.Registry, signer: Ed25519PrivateKey) -> None:
        data = reg.sign(registry, signer)
        admin_raw = admin_public_key((self.path / "registry.pub").read_bytes())
        reg.verify(data, admin_raw)  # never publish what a member would refuse
        write_public(self.path / "registry.json", data)
        remember_registry(self.path, registry)
        self.public.mkdir(parents=True, exist_ok=True)
        for name in PUBLIC_FILES:
            write_public(self.public / name, (self.path / name).read_bytes())

    def _record(self, name: str, cert: bytes) -> None:
        write_public(self.path / "issued" / name, cert)

    # -- members ------------------------------------------------------------------------------

    def enrol(
        self, csr_pem: bytes, *, days: int = 365, now: _dt.datetime | None = None
    ) -> tuple[int, bytes, reg.Registry]:
        """Admit the member a request names: ``(id, certificate PEM, new registry)``."""
        return self._admit(csr_pem, rotation=False, days=days, now=now)

    def rotate(
        self, csr_pem: bytes, *, days: int = 365, now: _dt.datetime | None = None
    ) -> tuple[int, bytes, reg.Registry]:
        """Replace an existing member's keys with the ones its new request names."""
        return self._admit(csr_pem, rotation=True, days=days, now=now)

    def _admit(
        self, csr_pem: bytes, *, rotation: bool, days: int, now: _dt.datetime | None
    ) -> tuple[int, bytes, reg.Registry]:
        now = now or utc_now()
        request = pki.read_member_csr(csr_pem)
        mid = request.member_id
        with exclusive(self.path, "administrator"):
            current = self.registry()
            if mid in current.revoked:
                raise ConsortiumError(f"member {mid} was revoked; its id is never reissued")
            if rotation and mid not in current.members:
                raise ConsortiumError(f"member {mid} is not enrolled: use `enrol`")
            if not rotation and mid in current.members:
                raise ConsortiumError(
                    f"member {mid} is already enrolled: use `rotate` for new keys"
                )
            if any(m.identity == request.identity for m in current.members.values()):
                raise ConsortiumError("that identity key is already registered (a reused request?)")
            public = request.csr.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            cert = pki.issue(
                public, pki.member_cn(mid), self._ca_key(), server=False, now=now, days=days
            )
            member = reg.Member(mid, request.identity, pki.fingerprint(cert))
            new = current.with_member(member, utc_stamp(now))
            self._record(f"member-{mid}-v{new.version}.pem", cert)
            self._publish(new, self._signer())
        return mid, cert, new

    def revoke(self, member_id: int, *, now: _dt.datetime | None = None) -> reg.Registry:
        """Remove a member: the next registry version lists it as revoked."""
        with exclusive(self.path, "administrator"):
            new = self.registry().without_member(member_id, utc_stamp(now or utc_now()))
            self._publish(new, self._signer())
        return new

    # -- the aggregator -----------------------------------------------------------------------

    def certify_aggregator(
        self, csr_pem: bytes, *, days: int = 365, now: _dt.datetime | None = None
    ) -> tuple[bytes, list[str]]:
        """The aggregator's certificate for the names its request asks for."""
        request = pki.read_server_csr(csr_pem)
        public = request.csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        cert = pki.issue(
            public,
            pki.AGGREGATOR_CN,
            self._ca_key(),
            server=True,
            now=now or utc_now(),
            days=days,
            names=request.names,
        )
        with exclusive(self.path, "administrator"):
            self._record(f"aggregator-{pki.fingerprint(cert).hex()[:16]}.pem", cert)
        return cert, pki.certificate_names(cert)


def _private(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConsortiumError(f"{path} is missing (run `secagg-admin init` first)") from None
    if path.stat().st_mode & 0o077:
        raise ConsortiumError(f"{path} is readable by others; chmod 600 it")
    return data


# -- command line --------------------------------------------------------------------------------


def _fraction(text: str) -> Fraction:
    try:
        f = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction like 1/3") from None
    if not 0 <= f < 1 or f.denominator > 1000:
        raise argparse.ArgumentTypeError("the fraction must be in [0, 1), denominator <= 1000")
    return f


def _parser() -> argparse.ArgumentParser:
    from protos.ops import add_common_arguments

    ap = argparse.ArgumentParser(
        prog="secagg-admin",
        description="The consortium administrator: run the CA, admit, rotate and revoke "
        "members, certify the aggregator, publish the signed registry. Keep the folder given "
        "to --dir on this machine only; publish its public/ folder to everyone.",
    )
    add_common_arguments(ap, logging_flags=False)
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    d = argparse.ArgumentParser(add_help=False)
    d.add_argument(
        "--dir", type=Path, required=True, help="the administrator's folder (holds the CA key)"
    )
    i = sub.add_parser("init", parents=[d], help="create the CA, the registry key and registry v1")
    i.add_argument(
        "--name", required=True, help="the consortium's name, written into every registry"
    )
    i.add_argument(
        "--corrupt-fraction",
        type=_fraction,
        default=reg.DEFAULT_CORRUPT_FRACTION,
        help="the consortium's assumption: fewer than this fraction of any member's "
        "neighbours collude with the aggregator; clients' policies and the aggregator's "
        "automatic (k, t) both follow it (a fraction; default: %(default)s)",
    )
    i.add_argument(
        "--ca-days",
        type=int,
        default=1825,
        help="validity of the CA certificate, in days (default: %(default)s)",
    )
    days_help = "validity of the issued certificate, in days (default: %(default)s)"
    e = sub.add_parser("enrol", parents=[d], help="admit a member from its request")
    e.add_argument("--csr", type=Path, required=True, help="the member's member.csr.pem")
    e.add_argument("--out", type=Path, required=True, help="where to write its certificate")
    e.add_argument("--days", type=int, default=365, help=days_help)
    r = sub.add_parser("rotate", parents=[d], help="replace a member's keys from its new request")
    r.add_argument("--csr", type=Path, required=True, help="the member's new member.csr.pem")
    r.add_argument("--out", type=Path, required=True, help="where to write its new certificate")
    r.add_argument("--days", type=int, default=365, help=days_help)
    v = sub.add_parser("revoke", parents=[d], help="remove a member (for good)")
    v.add_argument("--id", type=int, required=True, help="the member id to remove")
    a = sub.add_parser(
        "certify-aggregator", parents=[d], help="issue the aggregator's TLS certificate"
    )
    a.add_argument("--csr", type=Path, required=True, help="the aggregator's aggregator.csr.pem")
    a.add_argument("--out", type=Path, required=True, help="where to write the certificate")
    a.add_argument("--days", type=int, default=365, help=days_help)
    s = sub.add_parser("show", help="print a registry (after checking its signature)")
    s.add_argument(
        "--dir",
        type=Path,
        required=True,
        help="a folder holding registry.pub and registry.json (any role's, or public/)",
    )
    return ap


def _show(registry: reg.Registry) -> str:
    lines = [
        f"consortium {registry.consortium!r}, registry v{registry.version} issued "
        f"{registry.issued_at}",
        f"corruption assumption: fewer than {registry.corrupt_fraction} of any neighbourhood",
        f"{len(registry.members)} members:",
    ]
    lines += [
        f"  {m.id}: identity {m.identity.hex()[:16]}..., certificate "
        f"{m.certificate_sha256.hex()[:16]}..."
        for m in registry.members.values()
    ]
    if registry.revoked:
        lines.append(f"revoked: {', '.join(map(str, sorted(registry.revoked)))}")
    return "\n".join(lines)


def _run(args: argparse.Namespace) -> int:
    admin = AdminFolder(args.dir)
    if args.cmd == "init":
        first = admin.init(args.name, corrupt_fraction=args.corrupt_fraction, ca_days=args.ca_days)
        print(
            f"consortium {first.consortium!r}: CA and registry v1 in {args.dir}; "
            f"publish {admin.public} (ca.pem, registry.pub, registry.json) to every member "
            "and to the aggregator operator"
        )
    elif args.cmd in ("enrol", "rotate"):
        csr = args.csr.read_bytes()
        mid, cert, new = (admin.enrol if args.cmd == "enrol" else admin.rotate)(csr, days=args.days)
        write_public(args.out, cert)
        verb = "enrolled" if args.cmd == "enrol" else "has new keys"
        print(
            f"member {mid} {verb}: certificate {args.out} (send it to the member); registry "
            f"v{new.version} published in {admin.public}"
        )
    elif args.cmd == "revoke":
        new = admin.revoke(args.id)
        print(
            f"member {args.id} revoked: registry v{new.version} published in {admin.public}; "
            "install it on the aggregator (secagg-aggregator install) to refuse the member"
        )
    elif args.cmd == "certify-aggregator":
        cert, names = admin.certify_aggregator(args.csr.read_bytes(), days=args.days)
        write_public(args.out, cert)
        print(f"aggregator certificate {args.out} for {', '.join(names)}")
    else:
        print(_show(read_registry(args.dir)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from protos.ops import run_cli

    return run_cli("secagg-admin", _parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
