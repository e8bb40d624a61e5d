"""Attacks on the homomorphic variant: threats.md HE-01..HE-06 and threat_models/he.md.

Every test names its threat id in its docstring. The adversary is the aggregator (it relays the
public context, holds every ciphertext and decides what the key holder is asked to decrypt) or
a client (it sends whatever bytes it likes). ABORT cases assert the specific typed error.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts  # type: ignore[import-untyped]

from aggregator.consortium import init_consortium
from aggregator.he_material import (
    UntrustedContext,
    issue_keyholder_cert,
    keyholder_material,
    sign_context,
    verify_context,
)
from proofs_tests.he_helpers import REGISTRY, he_upload, raw_upload
from secagg import DeterministicRandom
from secagg.he import (
    DecryptionRefused,
    DeserializerCrashed,
    ForgedSum,
    HeAccumulator,
    HeContribution,
    HeKeyHolder,
    HeParams,
    HeRoundConfig,
    HeRoundKeys,
    HeScheme,
    HeSumMessage,
    HeUpload,
    InvalidCiphertext,
    InvalidUpload,
    SafeDeserializer,
    WeakParameters,
    context_digest,
)
from secagg.he._ops import ChunkSpec, ContextKind, load_context, new_context

REPO = Path(__file__).resolve().parents[2]
SESSION = bytes(range(16))
MARKER = b"\x00he05-marker\xff"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SafeDeserializer]:
    with SafeDeserializer(1, timeout=30, crash_marker=MARKER) as sb:
        yield sb


def _round(params: str = "bfv-4096", n: int = 5, d: int = 4000):  # type: ignore[no-untyped-def]
    cfg = HeRoundConfig(n=n, d=d, params=params, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY, min_cohort=3)
    return cfg, holder, holder.open_round(cfg)


def _encrypt(cfg: HeRoundConfig, keys: HeRoundKeys, u: int, x: np.ndarray) -> HeUpload:
    return he_upload(cfg, keys, u, x)


# -- HE-01 -------------------------------------------------------------------------------------


def test_he01_no_role_but_the_key_holder_can_decrypt() -> None:
    """HE-01: the contexts that leave the key holder carry no secret key; decrypt() raises."""
    cfg, _, keys = _round()
    chunk = _encrypt(cfg, keys, 1, np.zeros(cfg.d)).chunks[0]
    for data, kind in (
        (keys.public_context, ContextKind.PUBLIC),
        (keys.parameters_context, ContextKind.PARAMETERS),
    ):
        ctx = load_context(data, cfg.he_params, kind)
        assert not ctx.is_private() and not ctx.has_secret_key()
        with pytest.raises(ValueError, match="secret"):
            ts.bfv_vector_from(ctx, chunk).decrypt()


# -- HE-02 -------------------------------------------------------------------------------------


def test_he02_ckks_release_is_rounded_and_flooded() -> None:
    """HE-02: the released CKKS sum is on the integer grid and carries flooding noise of the
    stated magnitude; the raw decryption never leaves the key holder."""
    cfg = HeRoundConfig(n=4, d=4000, params="ckks-4096", flood=50, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY)
    keys = holder.open_round(cfg)
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    x = np.linspace(-0.9, 0.9, cfg.d)
    for u in (1, 2, 3):
        acc.add(u, _encrypt(cfg, keys, u, x))
    rel = holder.release(acc.close())
    assert rel.int_sum.dtype == np.int64 and rel.flood == 50
    exact = sum(
        cfg.encoding.to_signed(cfg.encoding.encode(x, DeterministicRandom(u))) for u in (1, 2, 3)
    )
    noise = rel.int_sum - exact
    assert 0 < np.max(np.abs(noise)) <= 50
    assert np.array_equal(rel.aggregate * cfg.encoding.scale, rel.int_sum.astype(np.float64))


def test_he02_static_no_code_path_returns_a_raw_decryption() -> None:
    """HE-02 (static): ``.decrypt(`` of an HE ciphertext (no argument or a secret key) is called
    in exactly one module, the key holder's release, which rounds (and floods CKKS) before
    anything leaves it. AEAD openings (``decrypt(nonce, data, associated_data)``, e.g. a sealed
    client state) are not HE decryptions."""
    callers: set[str] = set()
    for folder in ("secagg", "aggregator", "client", "protos", "dp"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            if "_pb2" in path.name or not ("tenseal" in text or "secagg.he" in text):
                continue  # only code that can hold a TenSEAL object
            for node in ast.walk(ast.parse(text)):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "decrypt"
                    and len(node.args) < 3
                ):
                    callers.add(str(path.relative_to(REPO)))
    assert callers == {"secagg/he/keyholder.py"}


# -- HE-03 -------------------------------------------------------------------------------------


def test_he03_key_holder_refuses_a_per_client_ciphertext() -> None:
    """HE-03: an aggregator that forwards one client's upload as "the sum", with three genuine
    signed contributions, gets nothing: the tag check fails after decryption, and the key is
    spent, so the real sum cannot be decrypted either."""
    cfg, holder, keys = _round()
    ups = {u: _encrypt(cfg, keys, u, np.full(cfg.d, 0.5)) for u in (1, 2, 3)}
    contribs = tuple(ups[u].contribution() for u in (1, 2, 3))
    with pytest.raises(ForgedSum):
        holder.release(HeSumMessage(SESSION, 0, ups[1].chunks, (1, 2, 3), contribs))
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    for u in (1, 2, 3):
        acc.add(u, ups[u])
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        holder.release(acc.close())


def test_he03_difference_of_two_sums_is_not_available() -> None:
    """HE-03: one decryption per round, so sum(all) - sum(all but one) cannot be formed."""
    cfg, holder, keys = _round()
    uploads = {u: _encrypt(cfg, keys, u, np.full(cfg.d, 0.1 * u)) for u in (1, 2, 3, 4)}
    full = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    part = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    for u, c in uploads.items():
        full.add(u, c)
        if u != 4:
            part.add(u, c)
    holder.release(full.close())
    with pytest.raises(DecryptionRefused, match="already decrypted"):
        holder.release(part.close())


def test_he03_sybil_padding_needs_registered_colluders() -> None:
    """HE-03 (formerly residual risk R1): an aggregator that encrypts zero vectors itself, with
    the public key it relays and tags of its own, cannot pass them off as members' uploads:
    the accumulator and the key holder require each claimed contributor's signature, and the
    key holder opens only tags sealed to its round key. What remains is inherent to any sum:
    members who really collude (here 90 and 91 upload zeros) pad a victim as in pairwise
    masking."""
    cfg, holder, keys = _round()
    victim = np.linspace(-0.5, 0.5, cfg.d)
    honest = _encrypt(cfg, keys, 1, victim)
    # the aggregator's own "uploads" for members 90 and 91: signed by a key not in the registry
    forged = [
        HeUpload(
            SESSION, 0, _encrypt(cfg, keys, u, np.zeros(cfg.d)).chunks, u, bytes(92), bytes(64)
        )
        for u in (90, 91)
    ]
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    acc.add(1, honest)
    for up in forged:
        with pytest.raises(InvalidUpload):
            acc.add(up.client_id, up)
    # bypassing the accumulator: a sum with the forged contributions is refused before decrypting
    sums = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    for u in (1, 90, 91):
        sums.add(u, _encrypt(cfg, keys, u, victim if u == 1 else np.zeros(cfg.d)))
    real = sums.close()
    fake = tuple(
        c
        if c.client_id == 1
        else HeContribution(c.client_id, c.sealed_tag, c.upload_digest, bytes(64))
        for c in real.contributions
    )
    with pytest.raises(ForgedSum, match="did not sign"):
        holder.release(replace(real, contributions=fake))
    # colluding registered members: inherent, released
    rel = holder.release(real)
    assert rel.count == 3 and np.max(np.abs(rel.aggregate - victim)) <= rel.error_bound


def test_he03_aggregator_cannot_substitute_its_own_public_key(tmp_path: Path) -> None:
    """HE-03 / HE-01: clients accept a public context and a tag key only with the key holder's
    signature over this round's digest; the aggregator's own key or tag key, another signer,
    or a replay fail."""
    cons = init_consortium(2, tmp_path / "c")
    issue_keyholder_cert(cons)
    key_pem, cert_pem = keyholder_material(cons)
    ca = (cons / "admin" / "ca.pem").read_bytes()
    cfg, _, keys = _round()
    sig = sign_context(key_pem, keys.digest)
    verify_context(ca, cert_pem, keys.digest, sig)  # the genuine one
    _, _, rogue = _round()  # the aggregator's own key pair
    with pytest.raises(UntrustedContext, match="not signed"):
        verify_context(ca, cert_pem, context_digest(cfg, rogue.public_context, keys.tag_key), sig)
    with pytest.raises(UntrustedContext, match="not signed"):  # its own tag key
        verify_context(ca, cert_pem, context_digest(cfg, keys.public_context, rogue.tag_key), sig)
    next_round = cfg.with_session(SESSION, 1)
    with pytest.raises(UntrustedContext):
        verify_context(
            ca, cert_pem, context_digest(next_round, keys.public_context, keys.tag_key), sig
        )
    agg_key = (cons / "aggregator" / "aggregator.key").read_bytes()
    agg_cert = (cons / "aggregator" / "aggregator.pem").read_bytes()
    with pytest.raises(UntrustedContext, match="does not name the key holder"):
        verify_context(ca, agg_cert, keys.digest, sign_context(agg_key, keys.digest))
    other = init_consortium(2, tmp_path / "other")
    issue_keyholder_cert(other)
    okey, ocert = keyholder_material(other)
    with pytest.raises(UntrustedContext, match="not from the CA"):
        verify_context(ca, ocert, keys.digest, sign_context(okey, keys.digest))


# -- HE-04 -------------------------------------------------------------------------------------


def test_he04_weak_parameters_cannot_be_built_or_smuggled_in() -> None:
    """HE-04: N = 2048 or an oversized modulus fails in the factory; a context built elsewhere
    with such parameters is refused when presented."""
    with pytest.raises(WeakParameters):
        HeParams("n2048", HeScheme.BFV, 2048, (40961, 65537), plain_modulus=12289)
    weak = ts.context(ts.SCHEME_TYPE.BFV, 2048, 40961, [27, 27], n_threads=1)
    raw = weak.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    cfg = HeRoundConfig(n=3, d=10, session_id=SESSION)
    with pytest.raises(WeakParameters):
        HeAccumulator(cfg, raw, REGISTRY)


# -- HE-05 -------------------------------------------------------------------------------------


def test_he05_truncated_and_bit_flipped_ciphertexts_are_rejected_and_serving_goes_on(
    sandbox: SafeDeserializer,
) -> None:
    """HE-05: fuzz one real ciphertext. Every truncation is refused with a typed error; every
    bit flip is refused or yields a well-formed ciphertext; the parent never crashes and valid
    uploads are still added afterwards."""
    cfg, holder, keys = _round(d=3000)
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY, backend=sandbox)
    good = _encrypt(cfg, keys, 1, np.full(cfg.d, 0.3))
    (chunk,) = good.chunks
    spec = ChunkSpec(cfg.he_params, keys.parameters_context)
    rnd = random.Random(5)
    cuts = {0, 1, 16, len(chunk) // 2, len(chunk) - 1} | {
        rnd.randrange(len(chunk)) for _ in range(20)
    }
    for cut in sorted(cuts):
        with pytest.raises(InvalidCiphertext):
            sandbox.accumulate(spec, [None], [chunk[:cut]])
    refused = accepted = 0
    for _ in range(150):
        flipped = bytearray(chunk)
        pos = rnd.randrange(len(flipped))
        flipped[pos] ^= 1 << rnd.randrange(8)
        try:
            sandbox.accumulate(spec, [None], [bytes(flipped)])
            accepted += 1  # a flip inside a coefficient is just another ciphertext
        except InvalidCiphertext:
            refused += 1
    assert refused + accepted == 150 and refused > 0
    with pytest.raises(InvalidCiphertext):
        acc.add(9, raw_upload(cfg, keys, 9, (chunk[:-100],)))
    assert 9 in acc.rejected
    for u in (1, 2, 3):
        acc.add(u, _encrypt(cfg, keys, u, np.full(cfg.d, 0.3)))
    assert holder.release(acc.close()).count == 3


def test_he05_a_native_crash_is_survived(sandbox: SafeDeserializer) -> None:
    """HE-05: a worker killed by SIGSEGV mid-parse costs the offending upload only."""
    cfg, holder, keys = _round(d=3000)
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY, backend=sandbox)
    lo, _ = cfg.he_params.chunk_bounds()
    with pytest.raises(DeserializerCrashed):
        acc.add(7, raw_upload(cfg, keys, 7, (MARKER + bytes(lo),)))
    assert "HE-05" in acc.rejected[7]
    for u in (1, 2, 3):
        acc.add(u, _encrypt(cfg, keys, u, np.zeros(cfg.d)))
    assert holder.release(acc.close()).count == 3


# -- HE-06 -------------------------------------------------------------------------------------


def test_he06_wrong_scale_slots_level_or_scheme_are_rejected_before_adding() -> None:
    """HE-06: a ciphertext under the right key but with the wrong scale, slot count, level,
    size or scheme is refused before it is added."""
    cfg, _, keys = _round(params="ckks-4096", d=3000)
    pub = load_context(keys.public_context, cfg.he_params, ContextKind.PUBLIC)
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY)
    slots = cfg.he_params.slots
    cases = {
        "scale": ts.ckks_vector(pub, [0.0] * slots, 2.0**30).serialize(),
        "slots": ts.ckks_vector(pub, [0.0] * 100).serialize(),
        "level": (ts.ckks_vector(pub, [0.0] * slots) * 2.0).serialize(),
    }
    for u, (what, raw) in enumerate(cases.items(), start=1):
        with pytest.raises(InvalidCiphertext):
            acc.add(u, raw_upload(cfg, keys, u, (raw,)))
        assert u in acc.rejected, what
    bcfg, _, bkeys = _round(d=3000)
    own = new_context(bcfg.he_params)  # any key with relin keys makes a 3-polynomial product
    own.auto_relin = False
    v = ts.bfv_vector(own, [1] * bcfg.he_params.slots)
    bacc = HeAccumulator(bcfg, bkeys.parameters_context, REGISTRY)
    with pytest.raises(InvalidCiphertext):
        bacc.add(1, raw_upload(bcfg, bkeys, 1, (v.mul(v).serialize(),)))  # three polynomials
    with pytest.raises(InvalidCiphertext):
        bacc.add(
            2, raw_upload(bcfg, bkeys, 2, (cases["scale"],))
        )  # a CKKS ciphertext in a BFV round
    with pytest.raises(InvalidCiphertext):
        bacc.add(
            3, raw_upload(bcfg, bkeys, 3, _encrypt(bcfg, bkeys, 3, np.zeros(bcfg.d)).chunks * 2)
        )  # too many chunks
