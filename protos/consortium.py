"""Consortium material on disk, per role, and the TLS credentials made from it
(docs/consortium.md has the whole procedure and which file goes to whom).

Below both ``client/`` and ``aggregator/`` (they must not import each other): this is the one
place that reads and writes a member's, an aggregator's or an administrator's folder.

* an administrator's folder (``secagg-admin init``): ``ca.key``, ``ca.pem``, ``registry.key``,
  ``registry.pub``, ``registry.json``, ``issued/``, and ``public/`` (the bundle to publish:
  ``ca.pem``, ``registry.pub``, ``registry.json``);
* a member's folder (``secagg-client enrol``): ``member.json`` (its id), ``member.key`` (TLS),
  ``identity.key`` (Ed25519), ``member.csr.pem`` (what it sends), then after ``install``
  ``member.pem`` and the public bundle; ``registry.seen`` is the newest registry it accepted;
* an aggregator's folder (``secagg-aggregator request-cert``): ``aggregator.key``,
  ``aggregator.csr.pem``, then ``aggregator.pem`` and the public bundle.

A *bundle* made by ``secagg-aggregator init-consortium`` (local tests and the demo) holds one
folder per role: ``admin/``, ``aggregator/``, ``members/member-<id>/``; each process still
reads only its own role's folder.

Security: private keys are written 0600, through a temporary file that is fsynced and renamed
(a crash never leaves a half-written key, and an existing key is never overwritten in place).
Every registry read is checked against the administrator's key pinned in the folder and
against the newest version this folder has accepted (``registry.seen``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protos import pki
from protos.ops import utc_now, utc_stamp
from secagg import registry as reg

__all__ = [
    "PUBLIC_FILES",
    "AggregatorFolder",
    "Consortium",
    "ConsortiumError",
    "MemberFiles",
    "MemberFolder",
    "admin_public_key",
    "channel_options",
    "exclusive",
    "install_public",
    "load_consortium",
    "member_cn",
    "member_folder",
    "member_id_from_cn",
    "read_registry",
    "remember_registry",
    "utc_now",
    "utc_stamp",
    "write_private",
    "write_public",
]

member_cn = pki.member_cn
member_id_from_cn = pki.member_id_from_cn

PUBLIC_FILES = ("ca.pem", "registry.pub", "registry.json")
_SEEN = "registry.seen"


class ConsortiumError(ValueError):
    """Material is missing, malformed, from another consortium, or for another party."""


# -- files ---------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret: mode 0600, temp file + fsync + rename (never half-written)."""
    _atomic_write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file atomically (mode 0644)."""
    _atomic_write(path, data, 0o644)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConsortiumError(f"{what} is missing: {path}") from None
    except OSError as exc:
        raise ConsortiumError(f"cannot read {what} {path}: {exc.strerror}") from None


def _read_private(path: Path, what: str) -> bytes:
    data = _read(path, what)
    mode = path.stat().st_mode & 0o077
    if mode:
        raise ConsortiumError(
            f"{what} {path} is readable by others (mode {path.stat().st_mode & 0o777:o}); "
            "chmod 600 it"
        )
    return data


@contextlib.contextmanager
def exclusive(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` (an administrator's edits, one at a time)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConsortiumError(f"{folder} is in use by another {what}") from None
        yield
    finally:
        os.close(fd)


# -- the registry --------------------------------------------------------------------------------


def admin_public_key(pem: bytes) -> bytes:
    """The raw 32-byte administrator key of a ``registry.pub`` PEM; refuses private keys."""
    if b"PRIVATE KEY" in pem:
        raise ConsortiumError("registry.pub holds a private key: give the public key only")
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConsortiumError(f"registry.pub is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConsortiumError("registry.pub is not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _seen(folder: Path) -> reg.Seen | None:
    path = folder / _SEEN
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        return reg.Seen(str(doc["consortium"]), int(doc["version"]), bytes.fromhex(doc["digest"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConsortiumError(f"{path} is corrupt ({exc}); restore it from a backup") from None


def remember_registry(folder: Path, registry: reg.Registry) -> None:
    doc = {
        "consortium": registry.consortium,
        "version": registry.version,
        "digest": registry.digest.hex(),
    }
    write_public(folder / _SEEN, (json.dumps(doc, indent=1) + "\n").encode())


def read_registry(folder: Path, data: bytes | None = None) -> reg.Registry:
    """The registry ``data`` (default: ``folder/registry.json``) if the administrator pinned
    in ``folder/registry.pub`` signed it and it is not older than what ``folder`` has seen."""
    admin = admin_public_key(_read(folder / "registry.pub", "the administrator's key"))
    raw = data if data is not None else _read(folder / "registry.json", "the registry")
    registry = reg.verify(raw, admin)
    reg.check_succession(registry, _seen(folder))
    return registry


def _adopt(folder: Path, data: bytes, registry: reg.Registry | None = None) -> reg.Registry:
    """Check ``data`` as :func:`read_registry` does (unless ``registry`` is that check's
    result), then make it this folder's registry."""
    registry = registry if registry is not None else read_registry(folder, data)
    seen = _seen(folder)
    if seen is None or registry.version > seen.version or not (folder / "registry.json").exists():
        write_public(folder / "registry.json", data)
        remember_registry(folder, registry)
    return registry


def install_public(folder: Path, public: Path) -> reg.Registry:
    """Copy the administrator's public bundle (``ca.pem``, ``registry.pub``,
    ``registry.json``) from ``public`` into ``folder``: the CA and the administrator's key
    are pinned the first time and must not change later; the registry must be signed by
    that key and not older than the one already installed."""
    for name in ("ca.pem", "registry.pub"):
        new = _read(public / name, f"the published {name}")
        mine = folder / name
        if mine.exists() and mine.read_bytes() != new:
            raise ConsortiumError(
                f"{public / name} differs from the {name} already installed in {folder}: "
                "another consortium's bundle?"
            )
        if name == "registry.pub":
            admin_public_key(new)
        if not mine.exists():
            write_public(mine, new)
    return _adopt(folder, _read(public / "registry.json", "the published registry"))


# -- a member's folder ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MemberFiles:
    """A member's TLS certificate and key (PEM) and its Ed25519 identity."""

    cert: bytes
    key: bytes
    identity: Ed25519PrivateKey


class MemberFolder:
    """One member's own folder (only that member ever reads it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def member_id(self) -> int:
        raw = _read(self.path / "member.json", "member.json (run `secagg-client enrol` first)")
        try:
            mid = int(json.loads(raw)["id"])
        except (ValueError, KeyError, TypeError):
            raise ConsortiumError(f"{self.path / 'member.json'} is corrupt") from None
        return mid

    # enrolment and rotation: keys are made here and never leave

    def enrol(self, member_id: int) -> Path:
        """Make this member's TLS key and identity, and the request to send to the
        administrator; returns the request's path."""
        if (self.path / "member.key").exists() or (self.path / "member.json").exists():
            raise ConsortiumError(f"{self.path} already holds a member; use `rotate` for new keys")
        csr = self._new_keys(self.path, member_id)
        write_public(self.path / "member.json", (json.dumps({"id": member_id}) + "\n").encode())
        return csr

    def rotate(self) -> Path:
        """New keys in ``pending/`` (the current ones stay in use until ``install``); returns
        the new request's path."""
        self.member_id  # noqa: B018 - must be enrolled
        return self._new_keys(self.path / "pending", self.member_id)

    @staticmethod
    def _new_keys(where: Path, member_id: int) -> Path:
        tls, ident = pki.new_tls_key(), pki.new_identity()
        write_private(where / "member.key", pki.private_pem(tls))
        write_private(where / "identity.key", pki.private_pem(ident))
        csr = where / "member.csr.pem"
        write_public(csr, pki.member_csr(member_id, tls, ident))
        return csr

    def install(
        self, public: Path, cert: Path | None = None, *, now: _dt.datetime | None = None
    ) -> reg.Registry:
        """Install the administrator's bundle and, if given, this member's certificate (which
        completes an enrolment or a rotation); the registry must list this member's keys."""
        now = now or utc_now()
        mid = self.member_id
        for name in ("ca.pem", "registry.pub"):  # pin first: the certificate is checked against it
            if not (self.path / name).exists():
                write_public(self.path / name, _read(public / name, f"the published {name}"))
        if cert is not None:
            pem = _read(cert, "the certificate")
            ca = _read(self.path / "ca.pem", "the CA certificate")
            pending = self.path / "pending"
            tried = []
            for where in (pending, self.path):
                if not (where / "member.key").exists():
                    continue
                key = pki.load_ec_key(
                    _read_private(where / "member.key", "member.key"), "member.key"
                )
                try:
                    pki.check_certificate(pem, ca, key, subject=member_cn(mid), now=now)
                except pki.CertificateError as exc:
                    tried.append(str(exc))
                    continue
                if where == pending:  # a rotation: the new keys replace the old ones
                    for name in ("member.key", "identity.key", "member.csr.pem"):
                        os.replace(pending / name, self.path / name)
                    pending.rmdir()
                write_public(self.path / "member.pem", pem)
                break
            else:
                raise ConsortiumError(
                    f"{cert} is not this member's certificate: {'; '.join(tried)}"
                )
        registry = install_public(self.path, public)
        self.check_entry(registry)
        return registry

    # use

    def files(self) -> MemberFiles:
        ident = pki.load_identity(
            _read_private(self.path / "identity.key", "identity.key"), "identity.key"
        )
        return MemberFiles(
            _read(self.path / "member.pem", "member.pem (run `secagg-client install`)"),
            _read_private(self.path / "member.key", "member.key"),
            ident,
        )

    @property
    def ca(self) -> bytes:
        return _read(self.path / "ca.pem", "ca.pem (run `secagg-client install`)")

    def registry(self) -> reg.Registry:
        registry = read_registry(self.path)
        self.check_entry(registry)
        return registry

    def check_entry(self, registry: reg.Registry) -> None:
        files = self.files()
        reg.check_own_entry(registry, self.member_id, files.identity, pki.fingerprint(files.cert))

    def accept(self, data: bytes) -> reg.Registry:
        """A registry relayed by the aggregator: adopted if the administrator signed it, it is
        not older than the newest seen, and it lists this member's own keys."""
        registry = read_registry(self.path, data)
        self.check_entry(registry)
        return _adopt(self.path, data, registry)


def member_folder(
    member: Path | None, consortium: Path | None, member_id: int | None
) -> MemberFolder:
    """The member folder a command means: ``--member DIR``, or ``--consortium BUNDLE --id N``
    (``BUNDLE/members/member-N``, a bundle from ``init-consortium``)."""
    if member is not None:
        folder = MemberFolder(member)
    elif consortium is not None and member_id is not None:
        folder = MemberFolder(consortium / "members" / member_cn(member_id))
    else:
        raise ConsortiumError("give --member DIR (or --consortium BUNDLE with --id)")
    if member_id is not None and folder.member_id != member_id:
        raise ConsortiumError(f"{folder.path} holds member {folder.member_id}, not {member_id}")
    return folder


# -- an aggregator's folder ----------------------------------------------------------------------


class AggregatorFolder:
    """The aggregator operator's folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def request(self, dns: Sequence[str], ips: Sequence[str]) -> Path:
        """A TLS key (kept here) and a request naming the hosts clients will dial."""
        key = pki.new_tls_key()
        csr = pki.server_csr(key, dns, ips)  # checks the names before anything is written
        if (self.path / "aggregator.key").exists():
            raise ConsortiumError(f"{self.path} already holds an aggregator key")
        write_private(self.path / "aggregator.key", pki.private_pem(key))
        write_public(self.path / "aggregator.csr.pem", csr)
        return self.path / "aggregator.csr.pem"

    def install(
        self, public: Path, cert: Path | None = None, *, now: _dt.datetime | None = None
    ) -> reg.Registry:
        for name in ("ca.pem", "registry.pub"):
            if not (self.path / name).exists():
                write_public(self.path / name, _read(public / name, f"the published {name}"))
        if cert is not None:
            pem = _read(cert, "the certificate")
            key = pki.load_ec_key(
                _read_private(self.path / "aggregator.key", "aggregator.key"), "aggregator.key"
            )
            pki.check_certificate(
                pem, self.ca, key, subject=pki.AGGREGATOR_CN, now=now or utc_now()
            )
            write_public(self.path / "aggregator.pem", pem)
        return install_public(self.path, public)

    @property
    def ca(self) -> bytes:
        return _read(self.path / "ca.pem", "ca.pem")

    def certificate(self) -> tuple[bytes, bytes]:
        """``(private key PEM, certificate PEM)`` for the gRPC server."""
        return (
            _read_private(self.path / "aggregator.key", "aggregator.key"),
            _read(self.path / "aggregator.pem", "aggregator.pem (run `secagg-aggregator install`)"),
        )

    def registry(self) -> reg.Registry:
        """The installed registry (checked, and remembered as the newest seen)."""
        return _adopt(self.path, _read(self.path / "registry.json", "the registry"))

    def signed_registry(self) -> bytes:
        return _read(self.path / "registry.json", "the registry")


# -- what the services load ----------------------------------------------------------------------


@dataclass(frozen=True)
class Consortium:
    """The aggregator's view: CA, verified registry, and where its key and certificate are.

    ``registry`` maps member ids to raw Ed25519 identity keys (what the protocol core takes);
    ``signed`` is the registry it came from. ``root`` is the aggregator's folder; ``bundle``
    the ``init-consortium`` bundle it sits in, if any (tests and the HE demo look members up
    there)."""

    root: Path
    ca: bytes
    registry: dict[int, bytes]
    signed: reg.Registry
    bundle: Path | None = None

    def member(self, member_id: int) -> MemberFiles:
        if self.bundle is None:
            raise ConsortiumError("member files live in the member's own folder (--member DIR)")
        return MemberFolder(self.bundle / "members" / member_cn(member_id)).files()

    def aggregator_cert(self) -> tuple[bytes, bytes]:
        return AggregatorFolder(self.root).certificate()


def load_consortium(root: Path) -> Consortium:
    """Load an aggregator's folder (or the ``aggregator/`` folder of a bundle)."""
    bundle = None
    if not (root / "aggregator.key").exists() and (root / "aggregator").is_dir():
        bundle, root = root, root / "aggregator"
    if not root.is_dir():
        raise ConsortiumError(f"{root} is not a folder")
    if not (root / "registry.json").exists() and (root / "members").is_dir():
        raise ConsortiumError(
            f"{root} is a consortium folder of an older release (one folder holding every "
            "key); enrol again (docs/consortium.md)"
        )
    folder = AggregatorFolder(root)
    signed = folder.registry()
    return Consortium(root, folder.ca, signed.identities, signed, bundle)


def channel_options(server_name: str | None, max_message: int) -> list[tuple[str, Any]]:
    """gRPC channel options: message limits, and the name to check the server's certificate
    against when it differs from the dialled address (``grpc.ssl_target_name_override``)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
    ]
    if server_name:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return opts
