"""The batched claim check after unmasking (verify_round.claims_hold, SPEC.md D12): all honest
claims pass at once and give the masks' signed total projection; one false, malformed or
re-encoded claim makes the batch fail, so the server falls back to the one-by-one check that
names the liar (the round-level attacks are in proofs_tests/adversarial)."""

from __future__ import annotations

import os

import pytest

from secagg import RoundConfig, SystemRandom
from secagg.verify_round import claim_bytes, claims_hold, mask_projection, projection

CFG = RoundConfig(n=4, t=2, d=3000, norm_bound=1 << 40).with_session(bytes(range(16)))
SEED = bytes(range(32))


def _honest(count: int) -> tuple[list[bytes], list[bytes], list[int], list[list[int]]]:
    proj = projection(CFG, SEED)
    keys = [os.urandom(16) for _ in range(count)]
    proj_of = [mask_projection(CFG, proj, k) for k in keys]
    claims = [claim_bytes(CFG, SEED, p, k) for p, k in zip(proj_of, keys, strict=True)]
    signs = [1 if i % 3 else -1 for i in range(count)]
    return keys, claims, signs, proj_of


@pytest.mark.parametrize("count", [1, 5, 21])
def test_honest_claims_hold_together_and_give_the_signed_total(count: int) -> None:
    keys, claims, signs, proj_of = _honest(count)
    got = claims_hold(CFG, SEED, projection(CFG, SEED), keys, claims, signs, SystemRandom())
    want = [sum(s * p[j] for s, p in zip(signs, proj_of, strict=True)) for j in range(64)]
    assert got == want


def test_one_false_claim_fails_the_batch() -> None:
    keys, claims, signs, proj_of = _honest(9)
    lie = list(proj_of[4])
    lie[7] += 1  # the smallest lie: one projected coordinate off by one
    claims[4] = claim_bytes(CFG, SEED, lie, keys[4])
    assert (
        claims_hold(CFG, SEED, projection(CFG, SEED), keys, claims, signs, SystemRandom()) is None
    )


def test_two_lies_that_cancel_in_a_plain_sum_fail_the_batch() -> None:
    """Colluders shift one coordinate by +1 and -1: a plain sum of claims would balance, the
    secret weights do not (except with probability 2^-64)."""
    keys, claims, signs, proj_of = _honest(6)
    up, down = list(proj_of[1]), list(proj_of[2])
    up[0] += 1
    down[0] -= 1
    claims[1] = claim_bytes(CFG, SEED, up, keys[1])
    claims[2] = claim_bytes(CFG, SEED, down, keys[2])
    assert (
        claims_hold(CFG, SEED, projection(CFG, SEED), keys, claims, signs, SystemRandom()) is None
    )


def test_malformed_claim_bytes_fail_the_batch() -> None:
    keys, claims, signs, _ = _honest(4)
    proj = projection(CFG, SEED)
    for bad in (b"\x00" * 48, claims[0][:-1], b"\xff" * 48):
        forged = [bad, *claims[1:]]
        assert claims_hold(CFG, SEED, proj, keys, forged, signs, SystemRandom()) is None
