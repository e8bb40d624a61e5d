"""Attacks on the consortium's membership material (docs/threats.md CM rows): a relay that forges,
edits or replays the registry, a registry that speaks for a member, an enrolment request for a
key the requester does not hold. Each test plays the attacker against the real code paths a
member or the administrator runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from aggregator.admin import AdminFolder
from protos import pki
from protos.consortium import AggregatorFolder, ConsortiumError, MemberFolder
from secagg import registry as reg
from secagg._crypto import ed25519_public


@pytest.fixture
def world(tmp_path: Path) -> tuple[AdminFolder, MemberFolder, MemberFolder]:
    admin = AdminFolder(tmp_path / "admin")
    admin.init("attacked consortium")
    members = []
    for i in (1, 2):
        m = MemberFolder(tmp_path / f"m{i}")
        _, cert, _ = admin.enrol(m.enrol(i).read_bytes())
        (tmp_path / f"c{i}.pem").write_bytes(cert)
        members.append(m)
    for i, m in enumerate(members, 1):
        m.install(admin.public, tmp_path / f"c{i}.pem")
    return admin, members[0], members[1]


def test_cm01_no_member_private_key_leaves_its_folder(
    world: tuple[AdminFolder, MemberFolder, MemberFolder], tmp_path: Path
) -> None:
    """Everything the administrator receives or writes is free of any member's private keys:
    the CSR carries public keys and signatures only."""
    admin, m1, m2 = world
    secrets = []
    for m in (m1, m2):
        f = m.files()
        secrets += [f.identity.private_bytes_raw(), f.key]
        tls = pki.load_ec_key(f.key, "key")
        secrets.append(tls.private_numbers().private_value.to_bytes(32, "big"))
    for path in admin.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(s in data for s in secrets), path
    csr = x509.load_pem_x509_csr((m1.path / "member.csr.pem").read_bytes())
    assert csr.public_bytes(serialization.Encoding.DER).count(secrets[0]) == 0


def test_cm02_a_relay_cannot_add_a_member_or_swap_a_key(
    world: tuple[AdminFolder, MemberFolder, MemberFolder],
) -> None:
    admin, m1, _ = world
    signed = (admin.public / "registry.json").read_bytes()
    doc = json.loads(signed)
    # The relay adds a member it controls, signing with a key of its own.
    current = reg.verify(
        signed, ed25519_public(pki.load_identity((admin.path / "registry.key").read_bytes(), "k"))
    )
    rogue_key = pki.new_identity()
    sybil = reg.Member(3, ed25519_public(pki.new_identity()), bytes(32))
    forged = reg.sign(current.with_member(sybil, current.issued_at), rogue_key)
    with pytest.raises(reg.ForgedRegistry):
        m1.accept(forged)
    # Or edits the administrator's file in place (member 2's identity key).
    doc["registry"]["members"]["2"]["identity"] = ed25519_public(pki.new_identity()).hex()
    doc["registry"]["version"] += 1
    with pytest.raises(reg.ForgedRegistry):
        m1.accept(json.dumps(doc).encode())
    assert m1.registry().version == current.version  # nothing was adopted


def test_cm03_a_relay_cannot_replay_an_older_registry(
    world: tuple[AdminFolder, MemberFolder, MemberFolder], tmp_path: Path
) -> None:
    """A revocation is withheld by replaying the registry from before it."""
    admin, m1, _ = world
    before = (admin.public / "registry.json").read_bytes()
    admin.revoke(2)
    m1.accept((admin.public / "registry.json").read_bytes())  # the member has seen it
    with pytest.raises(reg.StaleRegistry, match="older than"):
        m1.accept(before)
    assert 2 not in m1.registry().members
    # Two different registries under one version (an equivocating signer) are refused too.
    key = pki.load_identity((admin.path / "registry.key").read_bytes(), "k")
    now = m1.registry()
    twin = reg.Registry(
        now.consortium, now.version, now.issued_at, now.corrupt_fraction, {}, now.revoked
    )
    with pytest.raises(reg.RegistryError):
        m1.accept(reg.sign(twin, key))
    # The aggregator's folder applies the same rule.
    agg = AggregatorFolder(tmp_path / "agg")
    agg.install(admin.public)
    (agg.path / "registry.json").write_bytes(before)
    with pytest.raises(reg.StaleRegistry):
        agg.registry()


def test_cm04_a_registry_that_speaks_for_the_member_is_refused_by_it(
    world: tuple[AdminFolder, MemberFolder, MemberFolder],
) -> None:
    """Even correctly signed (a compromised administrator), a registry listing another key for
    this member is refused by the member itself."""
    admin, m1, _ = world
    key = pki.load_identity((admin.path / "registry.key").read_bytes(), "k")
    cur = m1.registry()
    impostor = reg.Member(1, ed25519_public(pki.new_identity()), cur.members[1].certificate_sha256)
    swapped = reg.sign(cur.with_member(impostor, cur.issued_at), key)
    with pytest.raises(reg.WrongEntry, match="another identity key for member 1"):
        m1.accept(swapped)
    other_cert = reg.Member(1, cur.members[1].identity, bytes(32))
    with pytest.raises(reg.WrongEntry, match="another TLS certificate"):
        m1.accept(reg.sign(cur.with_member(other_cert, cur.issued_at), key))


def _csr_with(member_id: int, tls: pki.ec.EllipticCurvePrivateKey, ext: bytes) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"member-{member_id}")]))
        .add_extension(x509.UnrecognizedExtension(pki.IDENTITY_OID, ext), critical=False)
        .sign(tls, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def test_cm06_an_identity_key_the_requester_does_not_hold_is_refused(
    world: tuple[AdminFolder, MemberFolder, MemberFolder],
) -> None:
    admin, m1, _ = world
    victim = m1.files().identity
    ext = x509.load_pem_x509_csr((m1.path / "member.csr.pem").read_bytes()).extensions
    proof = ext.get_extension_for_oid(pki.IDENTITY_OID).value.value  # type: ignore[attr-defined]
    # Copy member 1's identity (and its proof) into a request of one's own, for id 7.
    tls = pki.new_tls_key()
    with pytest.raises(pki.CertificateError, match="does not prove it holds the identity key"):
        admin.enrol(_csr_with(7, tls, proof))
    # Or claim the key with a proof made up from nothing.
    with pytest.raises(pki.CertificateError, match="does not prove"):
        admin.enrol(_csr_with(7, tls, ed25519_public(victim) + bytes(64)))
    with pytest.raises(pki.CertificateError, match="malformed"):
        admin.enrol(_csr_with(7, tls, b"short"))
    # A genuine request re-sent for the same key is refused (one identity, one member).
    with pytest.raises(ConsortiumError):
        admin.enrol((m1.path / "member.csr.pem").read_bytes())
