"""Norm-bound proofs (secagg.verify): completeness, soundness traps, binding (IV-04, IV-08)."""

from __future__ import annotations

import numpy as np
import pytest

from secagg import DeterministicRandom, EncodingError, SecAggError
from secagg.verify import (
    Commitment,
    InvalidProof,
    NormProof,
    commit,
    make_context,
    prove_norm,
    verify_norm,
)
from secagg.verify.norm import P, _prove

SESSION = bytes(range(16))
CTX = make_context(7, SESSION, 3)


def _vec(d: int, seed: int, scale: int = 1000) -> list[int]:
    return [int(v) for v in np.random.default_rng(seed).integers(-scale, scale, size=d)]


@pytest.fixture(scope="module")
def honest() -> tuple[list[int], Commitment, NormProof, int]:
    x = _vec(64, 1)
    rng = DeterministicRandom(b"honest")
    c, o = commit(x, rng)
    bound = sum(v * v for v in x)  # tight: the bound itself is allowed
    return x, c, prove_norm(x, o, bound, CTX, rng), bound


def test_honest_proof_verifies(honest: tuple[list[int], Commitment, NormProof, int]) -> None:
    _, c, proof, bound = honest
    verify_norm(c, proof, bound, CTX)
    verify_norm(c, NormProof.from_bytes(proof.to_bytes()), bound, CTX)
    verify_norm(Commitment.from_bytes(c.to_bytes()), proof, bound, CTX)


@pytest.mark.parametrize("d", [1, 100, 200])
def test_honest_sizes_and_extremes(d: int) -> None:
    x = [-(1 << 15), (1 << 15) - 1] * (d // 2) + [0] * (d % 2)
    rng = DeterministicRandom(d)
    c, o = commit(np.array(x, dtype=np.int64), rng)
    proof = prove_norm(x, o, (1 << 64) - 1, CTX, rng)
    verify_norm(c, proof, (1 << 64) - 1, CTX)
    assert len(proof.to_bytes()) < 10_000


def test_one_over_bound_fails() -> None:
    x = _vec(64, 2)
    s = sum(v * v for v in x)
    rng = DeterministicRandom(b"over")
    c, o = commit(x, rng)
    with pytest.raises(EncodingError):
        prove_norm(x, o, s - 1, CTX, rng)  # the honest prover refuses
    cheat = _prove(o.x, o.r, s - 1, CTX, rng, 16, 64)  # a cheater runs the prover anyway
    with pytest.raises(InvalidProof):
        verify_norm(c, cheat, s - 1, CTX)


@pytest.mark.parametrize(
    "other",
    [make_context(7, SESSION, 4), make_context(7, bytes(16), 3), make_context(8, SESSION, 3)],
    ids=["next-round", "other-session", "other-client"],
)
def test_replay_under_other_context_fails(
    honest: tuple[list[int], Commitment, NormProof, int], other: bytes
) -> None:
    _, c, proof, bound = honest
    with pytest.raises(InvalidProof):
        verify_norm(c, proof, bound, other)


def test_copied_proof_on_other_commitment_fails(
    honest: tuple[list[int], Commitment, NormProof, int],
) -> None:
    x, _, proof, bound = honest
    c2, _ = commit(x, DeterministicRandom(b"copier"))  # same vector, fresh blinding
    with pytest.raises(InvalidProof):
        verify_norm(c2, proof, bound, CTX)


def test_every_byte_flip_fails(honest: tuple[list[int], Commitment, NormProof, int]) -> None:
    _, c, proof, bound = honest
    data = proof.to_bytes()
    for i in range(len(data)):
        mauled = bytearray(data)
        mauled[i] ^= 1 << (i % 8)
        with pytest.raises(InvalidProof):
            verify_norm(c, NormProof.from_bytes(bytes(mauled)), bound, CTX)


@pytest.mark.parametrize("cut", [0, 1, 10, -1])
def test_truncated_or_extended_proof_raises(
    honest: tuple[list[int], Commitment, NormProof, int], cut: int
) -> None:
    data = honest[2].to_bytes()
    bad = data + b"\0" if cut == -1 else data[: len(data) - cut - 1]
    with pytest.raises(InvalidProof):
        NormProof.from_bytes(bad)
    assert issubclass(InvalidProof, SecAggError)


def _sqrt_mod_p(a: int) -> int:
    """Tonelli-Shanks modulo the BLS12-381 group order."""
    q, s = P - 1, 0
    while q % 2 == 0:
        q, s = q // 2, s + 1
    zn = next(v for v in range(2, 100) if pow(v, (P - 1) // 2, P) == P - 1)
    m, c, t, r = s, pow(zn, q, P), pow(a, q, P), pow(a, (q + 1) // 2, P)
    while t != 1:
        i, t2 = 0, t
        while t2 != 1:
            t2, i = t2 * t2 % P, i + 1
        b = pow(c, 1 << (m - i - 1), P)
        m, c, t, r = i, b * b % P, t * b * b % P, r * b % P
    return r


def test_field_wraparound_vector_is_rejected() -> None:
    """IV-04: x_0 is huge, x_0^2 = t (mod p) small: tiny field norm, huge true norm."""
    t = next(v for v in (3, 5, 6, 7, 10, 11) if pow(v, (P - 1) // 2, P) == 1)
    big = _sqrt_mod_p(t)
    assert big * big % P == t and min(big, P - big) > 1 << 64
    x = [big] + [1] * 63
    field_norm = sum(v * v for v in x) % P
    assert field_norm == t + 63 and sum(v * v for v in x) > P
    rng = DeterministicRandom(b"wrap")
    c, o = commit(x, rng)
    with pytest.raises(EncodingError):
        prove_norm(x, o, 1000, CTX, rng)
    cheat = _prove(o.x, o.r, 1000, CTX, rng, 16, 64)
    with pytest.raises(InvalidProof):
        verify_norm(c, cheat, 1000, CTX)


def test_coordinate_just_outside_range_is_rejected() -> None:
    x = [1 << 15] + [0] * 15  # norm 2^30 is under the bound, but |x_0| breaks the range
    rng = DeterministicRandom(b"range")
    c, o = commit(x, rng)
    with pytest.raises(EncodingError):
        prove_norm(x, o, 1 << 40, CTX, rng)
    cheat = _prove(o.x, o.r, 1 << 40, CTX, rng, 16, 64)
    with pytest.raises(InvalidProof):
        verify_norm(c, cheat, 1 << 40, CTX)


def test_commitments_add_homomorphically() -> None:
    rng = DeterministicRandom(b"sum")
    c1, o1 = commit([1, 2, 3], rng)
    c2, o2 = commit([-1, 5, 0], rng)
    # the aggregate check of protocol.md §7: sum of commitments opens to the sum of inputs
    from secagg.verify.norm import _base, _gens, _msm

    expect = _msm([*_gens(b"G", 3)[:3], _base(b"Hb")], [0, 7, 3, o1.r + o2.r])
    assert (c1 + c2).point == expect


def test_context_and_commitment_encoding_checks() -> None:
    with pytest.raises(EncodingError):
        make_context(-1, SESSION, 0)
    with pytest.raises(InvalidProof):
        Commitment.from_bytes(b"\0" * 51)
    for junk in (b"\xff" * 48, b"\x00" * 48):  # non-canonical identity, missing flag
        with pytest.raises(InvalidProof):
            Commitment.from_bytes(b"\0\0\0\1" + junk)
