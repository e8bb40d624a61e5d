"""Norm-bound proofs (secagg.verify): completeness, soundness traps, binding (IV-04, IV-08)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import DeterministicRandom, EncodingError, SecAggError
from secagg.verify import (
    Commitment,
    InvalidProof,
    NormProof,
    check_opening,
    commit,
    layout,
    make_context,
    num_rows,
    prove_norm,
    verify_norm,
)
from secagg.verify.norm import JL_ROWS, P, _as_vector, _jl_block, _mask_range, _prove

SESSION = bytes(range(16))
CTX = make_context(7, SESSION, 3)

Honest = tuple[np.ndarray, Commitment, NormProof, int]


def _vec(d: int, seed: int, scale: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).integers(-scale, scale, size=d)


def _norm2(x: np.ndarray) -> int:
    return sum(int(v) * int(v) for v in x)


@pytest.fixture(scope="module")
def honest() -> Honest:
    x = _vec(300, 1)  # three rows of 128
    rng = DeterministicRandom(b"honest")
    c, o = commit(x, rng)
    bound = _norm2(x)  # tight: the bound itself is allowed
    return x, c, prove_norm(o, bound, CTX, rng), bound


def test_honest_proof_verifies(honest: Honest) -> None:
    _, c, proof, bound = honest
    assert c.rows == num_rows(300) == 3
    verify_norm(c, proof, bound, CTX)
    verify_norm(c, NormProof.from_bytes(proof.to_bytes()), bound, CTX)
    verify_norm(Commitment.from_bytes(c.to_bytes()), proof, bound, CTX)


@pytest.mark.parametrize("d", [1, 129, 1000])
def test_honest_sizes_and_extremes(d: int) -> None:
    x = np.array(([-(1 << 15), (1 << 15) - 1] * d)[:d], dtype=np.int64)
    rng = DeterministicRandom(d)
    c, o = commit(x, rng)
    proof = prove_norm(o, (1 << 64) - 1, CTX, rng)
    verify_norm(c, proof, (1 << 64) - 1, CTX)
    assert len(proof.to_bytes()) < 10_000


def test_largest_coordinate_and_zero_vector() -> None:
    rng = DeterministicRandom(b"edge")
    top = (1 << 31) - 1
    c, o = commit([top, -top], rng)
    verify_norm(c, prove_norm(o, 2 * top * top, CTX, rng), 2 * top * top, CTX)
    c0, o0 = commit([0] * 5, rng)
    verify_norm(c0, prove_norm(o0, 0, CTX, rng), 0, CTX)
    with pytest.raises(EncodingError):
        commit([1 << 31], rng)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    xs=st.lists(st.integers(-(1 << 20), 1 << 20), min_size=1, max_size=400),
    extra=st.integers(0, 1 << 40),
    seed=st.binary(min_size=1, max_size=8),
)
def test_property_honest_verifies_and_one_over_is_refused(
    xs: list[int], extra: int, seed: bytes
) -> None:
    rng = DeterministicRandom(seed)
    c, o = commit(xs, rng)
    n2 = sum(v * v for v in xs)
    verify_norm(c, prove_norm(o, n2 + extra, CTX, rng), n2 + extra, CTX)
    if n2 > 0:
        with pytest.raises(EncodingError):
            prove_norm(o, n2 - 1, CTX, rng)


def test_one_over_bound_fails() -> None:
    x = _vec(200, 2)
    s = _norm2(x)
    rng = DeterministicRandom(b"over")
    c, o = commit(x, rng)
    with pytest.raises(EncodingError):
        prove_norm(o, s - 1, CTX, rng)  # the honest prover refuses
    # a cheater runs the prover anyway with a slack that does not fit
    cheat = _prove(_as_vector(x), o, s - 1, CTX, rng, [0] * 16)
    with pytest.raises(InvalidProof):
        verify_norm(c, cheat, s - 1, CTX)


def test_field_wraparound_vector_is_rejected() -> None:
    """IV-04: |x|^2 + i^2 = bound (mod p) with i = sqrt(-1): the field sum hides a norm one over.

    The only way to meet the norm equation with a vector one unit over the bound is a slack
    whose squares wrap the field; its coordinates are then ~2^254, the JL projections cannot
    land in the accepted range, and a proof forced out anyway fails.
    """
    i = pow(5, (P - 1) // 4, P)
    assert i * i % P == P - 1
    x = _vec(200, 3)
    s = _norm2(x)
    rng = DeterministicRandom(b"wrap")
    c, o = commit(x, rng)
    forged = [i] + [0] * 15
    assert (s + sum(v * v for v in forged)) % P == s - 1
    with pytest.raises(EncodingError, match="rejection"):
        _prove(_as_vector(x), o, s - 1, CTX, rng, forged)
    cheat = _prove(_as_vector(x), o, s - 1, CTX, rng, forged, force=True)
    with pytest.raises(InvalidProof, match="projection"):
        verify_norm(c, cheat, s - 1, CTX)
    # ... and with z clipped into range the linear relations no longer hold
    u, big_s = _mask_range(200, s - 1)
    clipped = dataclasses.replace(
        cheat, z=tuple(max(-(big_s - u), min(big_s - u, v)) for v in cheat.z)
    )
    with pytest.raises(InvalidProof):
        verify_norm(c, clipped, s - 1, CTX)


def test_wraparound_hidden_in_unused_slack_positions_is_rejected() -> None:
    """The slack row is projected over all its b positions, not only the 16 an honest prover
    uses: a sqrt(-1) placed at position 20 is caught like one at position 0."""
    i = pow(5, (P - 1) // 4, P)
    x = _vec(200, 4)
    s = _norm2(x)
    rng = DeterministicRandom(b"wrap-pad")
    c, o = commit(x, rng)
    forged = [0] * 20 + [i]
    with pytest.raises(EncodingError, match="rejection"):
        _prove(_as_vector(x), o, s - 1, CTX, rng, forged)
    cheat = _prove(_as_vector(x), o, s - 1, CTX, rng, forged, force=True)
    with pytest.raises(InvalidProof):
        verify_norm(c, cheat, s - 1, CTX)


def test_jl_rows_are_balanced_ternary() -> None:
    """The approximate range proof needs P(0) = 1/2, P(+1) = P(-1) = 1/4 (chi-square)."""
    blk = _jl_block(b"\x01" * 32, 0, 4096)
    counts = np.array([(blk == v).sum() for v in (0, 1, -1)], dtype=np.float64)
    expect = blk.size * np.array([0.5, 0.25, 0.25])
    chi2 = float(((counts - expect) ** 2 / expect).sum())
    assert chi2 < 13.8  # 2 degrees of freedom, p = 0.001
    assert not np.array_equal(blk, _jl_block(b"\x01" * 32, 1, 4096))


def test_projection_outside_range_and_shifted_projection_fail(honest: Honest) -> None:
    _, c, proof, bound = honest
    u, big_s = _mask_range(300, bound)
    big = dataclasses.replace(proof, z=(big_s - u + 1, *proof.z[1:]))
    with pytest.raises(InvalidProof, match="projection"):
        verify_norm(c, big, bound, CTX)
    shifted = dataclasses.replace(proof, z=(proof.z[0] + 1, *proof.z[1:]))
    with pytest.raises(InvalidProof):
        verify_norm(c, shifted, bound, CTX)
    assert len(proof.z) == JL_ROWS


@pytest.mark.parametrize(
    "other",
    [make_context(7, SESSION, 4), make_context(7, bytes(16), 3), make_context(8, SESSION, 3)],
    ids=["next-round", "other-session", "other-client"],
)
def test_replay_under_other_context_fails(honest: Honest, other: bytes) -> None:
    _, c, proof, bound = honest
    with pytest.raises(InvalidProof):
        verify_norm(c, proof, bound, other)


def test_copied_proof_on_other_commitment_fails(honest: Honest) -> None:
    x, _, proof, bound = honest
    c2, _ = commit(x, DeterministicRandom(b"copier"))  # same vector, fresh blinding
    with pytest.raises(InvalidProof):
        verify_norm(c2, proof, bound, CTX)


def test_other_bound_fails(honest: Honest) -> None:
    _, c, proof, bound = honest
    for other in (bound + 1, bound - 1):
        with pytest.raises(InvalidProof):
            verify_norm(c, proof, other, CTX)


def test_byte_flips_fail(honest: Honest) -> None:
    _, c, proof, bound = honest
    data = proof.to_bytes()
    for i in list(range(0, 40)) + list(range(40, len(data), 11)):
        mauled = bytearray(data)
        mauled[i] ^= 1 << (i % 8)
        with pytest.raises(InvalidProof):
            verify_norm(c, NormProof.from_bytes(bytes(mauled)), bound, CTX)


@pytest.mark.parametrize("cut", [0, 1, 10, -1])
def test_truncated_or_extended_proof_raises(honest: Honest, cut: int) -> None:
    data = honest[2].to_bytes()
    bad = data + b"\0" if cut == -1 else data[: len(data) - cut - 1]
    with pytest.raises(InvalidProof):
        NormProof.from_bytes(bad)
    assert issubclass(InvalidProof, SecAggError)


def test_commitments_add_and_open_to_the_sum() -> None:
    """protocol.md §7: the sum of commitments opens to the sum of inputs and blindings."""
    rng = DeterministicRandom(b"sum")
    xs = [_vec(700, k, 1 << 14) for k in range(3)]
    pairs = [commit(x, rng) for x in xs]
    total = pairs[0][0] + pairs[1][0] + pairs[2][0]
    blind = [sum(o.blindings[k] for _, o in pairs) % P for k in range(total.rows)]
    x_sum = xs[0] + xs[1] + xs[2]
    check_opening(total, x_sum, blind)
    bad = x_sum.copy()
    bad[-1] += 1
    with pytest.raises(InvalidProof):
        check_opening(total, bad, blind)
    with pytest.raises(InvalidProof):
        check_opening(total, x_sum, [blind[0] + 1, *blind[1:]])
    with pytest.raises(InvalidProof):
        check_opening(total, x_sum[:-1], blind)
    with pytest.raises(InvalidProof):
        check_opening(total, x_sum, blind[:-1])
    with pytest.raises(InvalidProof):
        check_opening(pairs[0][0] + pairs[1][0], x_sum, blind)


@given(d=st.integers(1, 1 << 24))
def test_layout_covers_the_vector(d: int) -> None:
    a, b = layout(d)
    assert a * b >= d and (a - 1) * b < d
    assert b & (b - 1) == 0 and b >= 128 and a <= 33


def test_context_and_commitment_encoding_checks() -> None:
    with pytest.raises(EncodingError):
        make_context(-1, SESSION, 0)
    with pytest.raises(InvalidProof):
        Commitment.from_bytes(b"\0" * 51)
    for junk in (b"\xff" * 48, b"\x00" * 48):  # non-canonical identity, missing flag
        with pytest.raises(InvalidProof):
            Commitment.from_bytes(b"\0\0\0\1" + junk)
    with pytest.raises(InvalidProof):
        Commitment.from_bytes(b"\0\0\0\0")
    with pytest.raises(EncodingError):
        commit([], DeterministicRandom(1))
    with pytest.raises(EncodingError):
        commit([True, 2], DeterministicRandom(1))


def test_ipa_regimes_give_the_same_proof(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lazy (coefficient-tracked) and explicit generator folding are the same argument."""
    import secagg.verify._algebra as algebra

    x = _vec(300, 9)
    proofs = set()
    for threshold in (1 << 30, 16, 1):
        monkeypatch.setattr(algebra, "EXPLICIT_IPA_LENGTH", threshold)
        rng = DeterministicRandom(b"regimes")
        c, o = commit(x, rng)
        proof = prove_norm(o, 1 << 40, CTX, rng)
        verify_norm(c, proof, 1 << 40, CTX)
        proofs.add(proof.to_bytes())
    assert len(proofs) == 1


def test_row_lengths_mix_in_one_process() -> None:
    """The generator cache serves a longer row length first and a shorter one after."""
    for d in (9000, 50, 9000):
        x = _vec(d, d)
        rng = DeterministicRandom(d)
        c, o = commit(x, rng)
        verify_norm(c, prove_norm(o, _norm2(x), CTX, rng), _norm2(x), CTX)
        check_opening(c, x, o.blindings)
