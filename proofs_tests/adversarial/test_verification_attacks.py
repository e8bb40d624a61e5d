"""Malicious clients against contribution verification (protocol.md §7, threats.md IV-03,
IV-04, IV-08): proofs over the bound, replayed, copied or mauled proofs, and uploads that do not
match their commitment. Four clients, d = 64: every proof is cheap.

ABORT cases assert the typed error and that nothing is published; exclusion cases assert the
sender is refused before unmasking (``InvalidContribution``, recorded in ``rejected``) and the
round completes with the others' exact sum.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from proofs_tests.adversarial.harness import Cohort, make_cohort, resign_masked, with_round
from secagg import (
    AggregateMismatch,
    DeterministicRandom,
    EncodingError,
    InvalidContribution,
    RoundConfig,
    ServerState,
    Stage,
    UnexpectedMessage,
    simulate,
)
from secagg.messages import ClientMessage, MaskedInput
from secagg.verify import commit, make_context, prove_norm
from secagg.verify_round import verify_contribution

U32 = npt.NDArray[np.uint32]
D = 64
PLAIN = RoundConfig(n=4, t=2, d=D)
M = PLAIN.encoding.max_abs
CFG = replace(PLAIN, norm_bound=D * M * M)  # every clipped input is within it


def _to_masked(coh: Cohort) -> dict[int, MaskedInput]:
    """Run the cohort honestly up to the masked inputs (not yet delivered)."""
    opening = coh.run_to(Stage.MASKED_INPUT)
    replies = coh.answer(opening)
    out = {}
    for u, m in replies.items():
        assert isinstance(m, MaskedInput)
        out[u] = m
    return out


def _swap_proof(coh: Cohort, m: MaskedInput, commitment: bytes, proof: bytes) -> MaskedInput:
    """Client ``m.sender`` sends its own masked vector with another commitment and proof,
    correctly signed with its own key (a malicious client signs whatever it sends)."""
    changed = replace(m, commitment=commitment, proof=proof)
    return resign_masked(coh.config, coh.identities[m.sender], changed, m.masked)


def _excluded_then_completes(coh: Cohort, masked: dict[int, MaskedInput], cheat: int) -> None:
    coh.submit(masked)
    assert coh.server.rejected[cheat].startswith("MASKED_INPUT: InvalidContribution")
    result = coh.finish()
    others = set(coh.clients) - {cheat}
    coh.assert_aggregate(result, included=others)  # exactly as if it had dropped out


def _ring(x: npt.NDArray[np.int64]) -> U32:
    return (x & PLAIN.encoding.mask).astype(np.uint32)


def test_iv03_one_unit_over_the_bound_cannot_be_proven_and_b_passes() -> None:
    """IV-03/IV-04: the round bounds the squared norm by B^2 = (2M)^2. A client whose vector
    has one coordinate B passes and is in the sum; a coordinate B + 1 cannot be proven under
    the round's bound (the honest prover refuses), and a proof under a looser bound of the
    cheater's choosing is rejected: the cheater is excluded and the round completes."""
    B = 2 * M
    cfg = replace(PLAIN, norm_bound=B * B)
    small = {u: np.random.default_rng(u).uniform(-0.05, 0.05, D) for u in (1, 2, 3, 4)}
    coh = make_cohort(cfg, seed=31, inputs=small)
    at_bound = np.zeros(D, dtype=np.int64)
    at_bound[5] = -B
    coh.clients[3].set_input(_ring(at_bound))  # exactly at the bound: allowed
    over = np.zeros(D, dtype=np.int64)
    over[5] = B + 1
    with pytest.raises(EncodingError):
        coh.clients[4].set_input(_ring(over))
    masked = _to_masked(coh)

    rng = DeterministicRandom("iv03-cheater")
    c, opening = commit(over, rng)
    ctx = make_context(4, coh.config.session_id or b"", coh.config.round)
    with pytest.raises(EncodingError):
        prove_norm(opening, B * B, ctx, rng)
    loose = prove_norm(opening, (B + 1) ** 2, ctx, rng)
    masked[4] = _swap_proof(coh, masked[4], c.to_bytes(), loose.to_bytes())
    coh.submit(masked)
    assert coh.server.rejected[4].startswith("MASKED_INPUT: InvalidContribution")
    result = coh.finish()
    assert result.included == frozenset({1, 2, 3})
    # Client 3's contribution is its exact integer vector: the sum minus clients 1 and 2.
    enc = cfg.encoding
    agg = enc.to_signed(result.ring_sum)
    others = coh.clipped_sum({1, 2}) * enc.scale
    assert np.max(np.abs(agg - at_bound - others)) < 2.0  # two clients' rounding, < 1 each


def _two_rounds(seed: int) -> tuple[Cohort, Cohort]:
    first = make_cohort(with_round(CFG, 0, f"iv08-{seed}-a"), seed=seed, tag="a")
    second = make_cohort(
        with_round(CFG, 1, f"iv08-{seed}-b"), seed=seed, tag="b", identities=first.identities
    )
    return first, second


def test_iv08_proof_replayed_from_an_earlier_round_is_rejected() -> None:
    """IV-08: client 2 re-sends, in round 1, the commitment and proof it made in round 0 (its
    own, valid there): the transcript binds session and round, so it is excluded."""
    old, new = _two_rounds(41)
    before = _to_masked(old)[2]
    masked = _to_masked(new)
    masked[2] = _swap_proof(new, masked[2], before.commitment, before.proof)
    _excluded_then_completes(new, masked, cheat=2)


def test_iv08_proof_copied_from_another_client_is_rejected() -> None:
    """IV-08: client 3 sends client 2's commitment and proof (valid for client 2 in this very
    round) under its own signature: the transcript binds the client id, so 3 is excluded."""
    coh = make_cohort(CFG, seed=42)
    masked = _to_masked(coh)
    masked[3] = _swap_proof(coh, masked[3], masked[2].commitment, masked[2].proof)
    _excluded_then_completes(coh, masked, cheat=3)


def _flips(data: bytes, count: int) -> list[int]:
    """Bit positions spread over the whole message, always including the first and last."""
    bits = 8 * len(data)
    return sorted({0, bits - 1, *range(0, bits, max(1, bits // count))})


def test_iv08_mauled_proofs_and_commitments_are_rejected() -> None:
    """IV-08: every single-bit flip (header, points, JL answers, scalars) of a valid proof or
    commitment is refused; a mauled upload excludes its sender and the round completes."""
    coh = make_cohort(CFG, seed=43)
    masked = _to_masked(coh)
    cfg = coh.config
    m = masked[2]
    verify_contribution(cfg, 2, m.commitment, m.proof)  # the untouched one verifies
    for field, data in (("proof", m.proof), ("commitment", m.commitment)):
        for bit in _flips(data, 24):
            mauled = bytearray(data)
            mauled[bit // 8] ^= 1 << (bit % 8)
            args = {"commitment": m.commitment, "proof": m.proof, field: bytes(mauled)}
            with pytest.raises(InvalidContribution):
                verify_contribution(cfg, 2, args["commitment"], args["proof"])
    for cut in (m.proof[:-1], m.proof + b"\0"):  # truncated or extended
        with pytest.raises(InvalidContribution):
            verify_contribution(cfg, 2, m.commitment, cut)
    mauled = bytearray(m.proof)
    mauled[len(mauled) // 2] ^= 0x10
    masked[2] = _swap_proof(coh, m, m.commitment, bytes(mauled))
    _excluded_then_completes(coh, masked, cheat=2)


def _shift(m: MaskedInput, index: int, delta: int) -> U32:
    y = m.masked.astype(np.int64)
    y[index] += delta
    return _ring(y)


@pytest.mark.parametrize("where", ["vector", "blinding-limbs"])
def test_changing_the_masked_vector_after_proving_aborts_with_nothing_published(
    where: str,
) -> None:
    """protocol.md §7: client 2 proves its vector, then adds 1 to one element of its masked
    upload (a vector coordinate or a limb of its blinding factors) and signs that. Its proof
    verifies, but the unmasked sum no longer opens the sum of the commitments: the round aborts
    with AggregateMismatch and no result exists. (Which client cheated is not known: the
    aggregator never sees an individual vector; threat_models/malicious-clients.md.)"""
    coh = make_cohort(CFG, seed=44)
    masked = _to_masked(coh)
    index = 7 if where == "vector" else coh.config.upload_dim - 1
    masked[2] = resign_masked(coh.config, coh.identities[2], masked[2], _shift(masked[2], index, 1))
    coh.submit(masked)
    assert coh.server.rejected == {}  # every proof verified: the cheat is invisible so far
    with pytest.raises(AggregateMismatch) as err:
        coh.finish()
    assert err.value.culprit is None and err.value.party == 0
    assert coh.server.state is ServerState.ABORTED
    with pytest.raises(UnexpectedMessage):
        _ = coh.server.result


def test_client_tamper_after_proving_aborts_the_simulated_round() -> None:
    """The same through ``simulate``'s ``client_tamper`` hook (re-signed by the cheater): a
    verified round aborts; the same tamper in an unverified round publishes a wrong sum."""
    gen = np.random.default_rng(45)
    inputs = [gen.uniform(-1, 1, D) for _ in range(4)]

    def tamper(stage: Stage, sender: int, msg: ClientMessage) -> ClientMessage | None:
        if sender == 3 and isinstance(msg, MaskedInput):
            return replace(msg, masked=_shift(msg, 0, 1000))
        return msg

    with pytest.raises(AggregateMismatch):
        simulate(CFG, inputs, client_tamper=tamper, resign=True, seed=45)
    unverified = simulate(PLAIN, inputs, client_tamper=tamper, resign=True, seed=45)
    honest = simulate(PLAIN, inputs, seed=45)
    diff = PLAIN.encoding.to_signed(unverified.ring_sum - honest.ring_sum)
    assert diff[0] == 1000 and not diff[1:].any()  # without verification nothing notices


def test_colluders_moving_mass_between_them_still_publish_the_committed_sum() -> None:
    """Residual (malicious-clients.md): two colluding clients shift +delta and -delta between
    their uploads after proving. The check passes, since it binds only the *sum* of the
    commitments, and the published sum is exactly the sum of the committed, norm-proven vectors:
    what colluders achieve this way they could have achieved by committing to other vectors."""
    coh = make_cohort(CFG, seed=46)
    masked = _to_masked(coh)
    for u, delta in ((2, 12345), (3, -12345)):
        masked[u] = resign_masked(
            coh.config, coh.identities[u], masked[u], _shift(masked[u], 0, delta)
        )
    coh.submit(masked)
    result = coh.finish()
    coh.assert_aggregate(result, included={1, 2, 3, 4})


def test_every_failure_mode_leaves_no_result_or_a_correct_one() -> None:
    """A compact sweep: each single cheat (bad proof, foreign proof, tampered vector) by each
    client either excludes that client with the others' exact sum, or aborts with nothing."""
    for cheat, kind in itertools.product((1, 4), ("foreign", "tamper")):
        coh = make_cohort(CFG, seed=47, tag=f"{cheat}-{kind}")
        masked = _to_masked(coh)
        other = 2 if cheat != 2 else 3
        if kind == "foreign":
            masked[cheat] = _swap_proof(
                coh, masked[cheat], masked[other].commitment, masked[other].proof
            )
            _excluded_then_completes(coh, masked, cheat)
        else:
            masked[cheat] = resign_masked(
                coh.config, coh.identities[cheat], masked[cheat], _shift(masked[cheat], 0, -1)
            )
            coh.submit(masked)
            with pytest.raises(AggregateMismatch):
                coh.finish()
            assert coh.server.state is ServerState.ABORTED
