"""Enrolment, rotation and revocation as the three roles run them (protos/pki.py,
protos/consortium.py, aggregator/admin.py), without a network."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from aggregator.admin import AdminFolder
from aggregator.admin import main as admin_main
from protos import pki
from protos.consortium import (
    AggregatorFolder,
    ConsortiumError,
    MemberFolder,
    load_consortium,
    write_private,
)
from secagg.registry import StaleRegistry, WrongEntry


@pytest.fixture
def admin(tmp_path: Path) -> AdminFolder:
    a = AdminFolder(tmp_path / "admin")
    a.init("unit consortium")
    return a


def _enrol(admin: AdminFolder, root: Path, i: int) -> MemberFolder:
    m = MemberFolder(root / f"m{i}")
    _, cert, _ = admin.enrol(m.enrol(i).read_bytes())
    (root / f"c{i}.pem").write_bytes(cert)
    m.install(admin.public, root / f"c{i}.pem")
    return m


def test_private_keys_are_0600_and_written_whole(tmp_path: Path, admin: AdminFolder) -> None:
    m = _enrol(admin, tmp_path, 1)
    for path in (m.path / "member.key", m.path / "identity.key", admin.path / "ca.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (m.path, admin.path, admin.public):
        assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    write_private(tmp_path / "k", b"one")
    write_private(tmp_path / "k", b"two")  # replaced by rename, never truncated in place
    assert (tmp_path / "k").read_bytes() == b"two"
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_a_member_enrols_once_and_its_keys_never_reach_the_admin(
    tmp_path: Path, admin: AdminFolder
) -> None:
    m = _enrol(admin, tmp_path, 7)
    assert m.member_id == 7
    with pytest.raises(ConsortiumError, match="already holds a member"):
        m.enrol(7)
    key = (m.path / "member.key").read_bytes()
    ident = (m.path / "identity.key").read_bytes()
    for p in admin.path.rglob("*"):
        if p.is_file():
            assert key not in p.read_bytes() and ident not in p.read_bytes()
    reg = m.registry()
    assert set(reg.members) == {7} and reg.version == 2
    with pytest.raises(ConsortiumError, match="already enrolled"):
        admin.enrol((m.path / "member.csr.pem").read_bytes())


def test_rotation_swaps_keys_only_when_the_new_certificate_is_installed(
    tmp_path: Path, admin: AdminFolder
) -> None:
    m = _enrol(admin, tmp_path, 2)
    old_ident = m.files().identity
    csr = m.rotate()
    assert csr.parent.name == "pending"
    assert m.files().identity.private_bytes_raw() == old_ident.private_bytes_raw()
    _, cert, reg = admin.rotate(csr.read_bytes())
    assert reg.version == 3
    (tmp_path / "new.pem").write_bytes(cert)
    with pytest.raises(WrongEntry, match="another identity key"):
        # The registry has moved on; this member still holds the old keys and says so.
        m.accept((admin.public / "registry.json").read_bytes())
    assert m.registry().version == 2  # and keeps the registry it had
    m.install(admin.public, tmp_path / "new.pem")
    assert not (m.path / "pending").exists()
    assert m.files().identity.private_bytes_raw() != old_ident.private_bytes_raw()
    assert m.registry().version == 3
    with pytest.raises(ConsortiumError, match="not enrolled"):
        admin.rotate(MemberFolder(tmp_path / "m9").enrol(9).read_bytes())


def test_revocation_removes_the_member_for_good(tmp_path: Path, admin: AdminFolder) -> None:
    _enrol(admin, tmp_path, 1)
    m2 = _enrol(admin, tmp_path, 2)
    reg = admin.revoke(2)
    assert set(reg.members) == {1} and reg.revoked == {2}
    with pytest.raises(ConsortiumError, match="revoked"):
        admin.enrol(MemberFolder(tmp_path / "again").enrol(2).read_bytes())
    with pytest.raises(WrongEntry, match="was revoked"):
        m2.install(admin.public)


def test_aggregator_certificate_names_come_from_its_request(
    tmp_path: Path, admin: AdminFolder
) -> None:
    agg = AggregatorFolder(tmp_path / "agg")
    csr = agg.request(["agg.example.org", "Other.Example.org."], ["10.1.2.3", "::1"])
    cert, names = admin.certify_aggregator(csr.read_bytes())
    assert names == ["agg.example.org", "other.example.org", "10.1.2.3", "::1"]
    c = x509.load_pem_x509_certificate(cert)
    san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("10.1.2.3") in san.get_values_for_type(x509.IPAddress)
    eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    (tmp_path / "agg.pem").write_bytes(cert)
    _enrol(admin, tmp_path, 1)
    _enrol(admin, tmp_path, 2)
    _enrol(admin, tmp_path, 3)
    agg.install(admin.public, tmp_path / "agg.pem")
    cons = load_consortium(agg.path)
    assert sorted(cons.registry) == [1, 2, 3] and cons.signed.version == 4
    with pytest.raises(pki.CertificateError, match="name the host"):
        AggregatorFolder(tmp_path / "agg2").request([], [])
    with pytest.raises(pki.CertificateError, match="not a DNS host name"):
        AggregatorFolder(tmp_path / "agg2").request(["bad_name!"], [])
    with pytest.raises(pki.CertificateError, match="not an IP address"):
        AggregatorFolder(tmp_path / "agg2").request([], ["10.0.0.300"])
    assert not (tmp_path / "agg2" / "aggregator.key").exists()  # nothing written on refusal


def test_an_aggregator_request_cannot_become_a_member_nor_the_reverse(
    tmp_path: Path, admin: AdminFolder
) -> None:
    agg_csr = AggregatorFolder(tmp_path / "agg").request(["a.test"], [])
    with pytest.raises(pki.CertificateError, match="does not name a member"):
        admin.enrol(agg_csr.read_bytes())
    member_csr = MemberFolder(tmp_path / "m").enrol(1)
    with pytest.raises(pki.CertificateError, match="not for 'secagg aggregator'"):
        admin.certify_aggregator(member_csr.read_bytes())


def test_certificate_checks(tmp_path: Path, admin: AdminFolder) -> None:
    now = dt.datetime.now(dt.UTC)
    key = pki.new_tls_key()
    ca_key = pki.load_ec_key((admin.path / "ca.key").read_bytes(), "ca.key")
    ca = (admin.path / "ca.pem").read_bytes()
    cert = pki.issue(key.public_key(), "member-1", ca_key, server=False, now=now, days=1)
    pki.check_certificate(cert, ca, key, subject="member-1", now=now)
    with pytest.raises(pki.CertificateError, match="another key"):
        pki.check_certificate(cert, ca, pki.new_tls_key(), subject="member-1", now=now)
    with pytest.raises(pki.CertificateError, match="not 'member-2'"):
        pki.check_certificate(cert, ca, key, subject="member-2", now=now)
    with pytest.raises(pki.CertificateError, match="not now"):
        pki.check_certificate(cert, ca, key, subject="member-1", now=now + dt.timedelta(days=3))
    _, other_ca = pki.new_ca(now)
    with pytest.raises(pki.CertificateError, match="not issued by this consortium"):
        pki.check_certificate(cert, other_ca, key, subject="member-1", now=now)
    assert pki.member_id_from_cn("member-01") is None and pki.member_id_from_cn("member-5") == 5


def test_private_keys_readable_by_others_are_refused(tmp_path: Path, admin: AdminFolder) -> None:
    m = _enrol(admin, tmp_path, 1)
    os.chmod(m.path / "identity.key", 0o644)
    with pytest.raises(ConsortiumError, match="readable by others"):
        m.files()


def test_admin_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path / "a")
    assert admin_main(["init", "--dir", d, "--name", "cli", "--corrupt-fraction", "1/4"]) == 0
    assert admin_main(["init", "--dir", d, "--name", "cli"]) == 2
    assert "already holds" in capsys.readouterr().err
    csr = MemberFolder(tmp_path / "m").enrol(3)
    assert admin_main(["enrol", "--dir", d, "--csr", str(csr), "--out", str(tmp_path / "c")]) == 0
    assert admin_main(["show", "--dir", str(tmp_path / "a" / "public")]) == 0
    out = capsys.readouterr().out
    assert "registry v2" in out and "fewer than 1/4" in out and "  3: identity" in out
    assert admin_main(["revoke", "--dir", d, "--id", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("secagg-admin: error: member 4 is not in registry v2")
    assert admin_main(["init", "--dir", d, "--name", "x", "--corrupt-fraction", "2"]) == 2


def test_install_refuses_an_older_registry(tmp_path: Path, admin: AdminFolder) -> None:
    m = _enrol(admin, tmp_path, 1)
    old = (admin.public / "registry.json").read_bytes()
    _enrol(admin, tmp_path, 2)
    m.install(admin.public)
    assert m.registry().version == 3
    (tmp_path / "stale").mkdir()
    for name in ("ca.pem", "registry.pub"):
        (tmp_path / "stale" / name).write_bytes((admin.public / name).read_bytes())
    (tmp_path / "stale" / "registry.json").write_bytes(old)
    with pytest.raises(StaleRegistry, match="older than v3"):
        m.install(tmp_path / "stale")
