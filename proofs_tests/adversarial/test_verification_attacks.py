"""Malicious clients against contribution verification (protocol.md §7, SPEC.md D11, D12;
threats.md IV-03, IV-04, IV-08): forged norm proofs, alone and as colluding pairs, proofs made
for another client or round or mauled, uploads that are not the committed vector, and false
claims about masks.

Exclusion cases assert the cheater is refused before anything is unmasked, named in
``cheaters`` with the reason, and that the round publishes the others' exact sum. The cases
that can only be seen after unmasking (a false claim about a client's own mask, or about a
neighbour that dropped out) assert that the cheater is named and nothing is published.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from proofs_tests.adversarial.cheaters import (
    ForeignContextClient,
    ForgingClient,
    LyingClient,
    ShiftingClient,
    factory,
)
from proofs_tests.adversarial.harness import make_cohort, resign_check, with_round
from proofs_tests.adversarial.norm_forger import Deviation
from secagg import (
    AggregateMismatch,
    EncodingError,
    RoundConfig,
    ServerState,
    Stage,
    UnexpectedMessage,
    simulate,
)
from secagg.messages import CheckResponse
from secagg.verify import layout
from secagg.verify._algebra import P

D = 64
PLAIN = RoundConfig(n=4, t=2, d=D)
M = PLAIN.encoding.max_abs
BOUND = D * M * M  # every clipped input is within it
CFG = replace(PLAIN, norm_bound=BOUND)


def vcfg(n: int, t: int) -> tuple[RoundConfig, int, int]:
    """A verified round of ``n`` clients whose bound admits every clipped input: the config,
    the largest encoded coordinate and the bound."""
    m = RoundConfig(n=n, t=t, d=D).encoding.max_abs
    return RoundConfig(n=n, t=t, d=D, norm_bound=D * m * m), m, D * m * m


def _inputs(n: int, seed: int) -> list[np.ndarray]:
    gen = np.random.default_rng(seed)
    return [gen.uniform(-1, 1, D) for _ in range(n)]


def _truth(inputs: list[np.ndarray], included: frozenset[int]) -> np.ndarray:
    return sum(np.clip(inputs[u - 1], -1, 1) for u in included)  # type: ignore[return-value]


def _exact(result, inputs: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    assert np.abs(result.aggregate - _truth(inputs, result.included)).max() <= result.error_bound


def review_deviation(x: list[int], bound: int, sign: int = 1) -> Deviation:
    """The review's forgery: an H component ``h`` in row commitment 0 and a G component ``g``
    in its copy, with ``<g, h> = bound - |x|^2`` (mod p); ``sign`` flips ``h`` (colluders)."""
    b = layout(len(x))[1]
    pos = b - 1
    h = [0] * b
    g = [0] * b
    h[pos] = sign % P
    g[pos] = sign * (bound - sum(t * t for t in x)) % P
    return Deviation(vectors=[("row0", "H", h), ("D0", "G", g)], blind_zeros=[pos])


def _forger(x_big: list[int], bound: int, tag: bytes, sign: int = 1):  # type: ignore[no-untyped-def]
    return (
        ForgingClient,
        {"x_big": x_big, "deviation": review_deviation(x_big, bound, sign), "tag": tag},
    )


def _big(value: int, at: int = 3) -> list[int]:
    x = [0] * D
    x[at] = value
    return x


def test_iv03_one_unit_over_the_bound_cannot_be_set_and_b_passes() -> None:
    """IV-03/IV-04: a coordinate B is proven under bound B^2 and summed; B + 1 cannot be set
    (the honest client refuses), and a cheater uploading it with a forged proof is excluded."""
    b_max = 2 * M
    cfg = replace(PLAIN, norm_bound=b_max * b_max)
    small = {u: np.random.default_rng(u).uniform(-0.05, 0.05, D) for u in (1, 2, 3, 4)}
    coh = make_cohort(
        cfg, seed=31, inputs=small,
        client_factory=factory({4: _forger(_big(b_max + 1, 5), b_max * b_max, b"iv03")}),
    )  # fmt: skip
    at_bound = np.zeros(D, dtype=np.int64)
    at_bound[5] = -b_max
    coh.clients[3].set_input((at_bound & cfg.encoding.mask).astype(np.uint32))
    over = at_bound.copy()
    over[5] = b_max + 1
    with pytest.raises(EncodingError):
        coh.clients[1].set_input((over & cfg.encoding.mask).astype(np.uint32))
    result = coh.finish()
    assert result.included == frozenset({1, 2, 3})
    assert "proof rejected" in coh.server.cheaters[4]
    agg = cfg.encoding.to_signed(result.ring_sum)
    others = coh.clipped_sum({1, 2}) * cfg.encoding.scale
    assert np.max(np.abs(agg - at_bound - others)) < 2.0  # two clients' rounding, < 1 each


def test_review_forgery_in_a_round_is_excluded_and_named() -> None:
    """|x|^2 = 1600 M^2 (25x the bound) with the hidden cross term balancing it: the proof
    fails, the client is named before unmasking, the others' exact sum is published."""
    inputs = _inputs(4, 32)
    res = simulate(
        CFG, inputs, seed=32, client_factory=factory({2: _forger(_big(40 * M), BOUND, b"r")})
    )
    assert res.included == frozenset({1, 3, 4}) and set(res.cheaters) == {2}
    assert "proof rejected" in res.rejected[2]
    _exact(res, inputs)


def test_colluding_pair_with_cancelling_components_is_excluded() -> None:
    """Two colluders hide opposite H components (+h, -h), which cancel in the sum of their
    commitments, each uploading a vector 25x over the bound: each proof fails on its own, both
    are named, and the honest clients' exact sum is published (the sum of commitments was the
    only check the previous design had, and it passed)."""
    cfg, m, bound = vcfg(7, 4)
    inputs = _inputs(7, 33)
    pair = {2: _forger(_big(40 * m), bound, b"p2", 1), 4: _forger(_big(40 * m), bound, b"p4", -1)}
    res = simulate(cfg, inputs, seed=33, client_factory=factory(pair))
    assert res.included == frozenset({1, 3, 5, 6, 7}) and set(res.cheaters) == {2, 4}
    _exact(res, inputs)


def test_upload_that_is_not_the_committed_vector_is_excluded_and_named() -> None:
    """Client 2 commits to and proves its vector, then uploads it with 1000 added to one
    element: its proof is for another upload than the one that arrived. Excluded before
    unmasking; the round completes without it."""
    inputs = _inputs(4, 34)
    cheat = {2: (ShiftingClient, {"index": 7, "delta": 1000})}
    res = simulate(CFG, inputs, seed=34, client_factory=factory(cheat))
    assert res.included == frozenset({1, 3, 4}) and "proof rejected" in res.cheaters[2]
    _exact(res, inputs)
    plain = simulate(PLAIN, inputs, seed=34, client_factory=factory(cheat))
    honest = simulate(PLAIN, inputs, seed=34)
    diff = PLAIN.encoding.to_signed(plain.ring_sum - honest.ring_sum)
    assert diff[7] == 1000 and plain.included == honest.included  # unverified: nothing notices


def test_iv08_proof_for_another_client_or_round_is_excluded() -> None:
    """IV-08: a valid proof made under client 1's context, and a proof from the previous
    round replayed: both senders excluded and named."""
    inputs = _inputs(5, 35)
    cfg5, _, _ = vcfg(5, 3)
    res = simulate(
        cfg5, inputs, seed=35, client_factory=factory({3: (ForeignContextClient, {"other": 1})})
    )
    assert res.included == frozenset({1, 2, 4, 5}) and "proof rejected" in res.cheaters[3]
    _exact(res, inputs)

    first = make_cohort(with_round(cfg5, 0, "iv08-a"), seed=35, tag="a")
    opening = first.run_to(Stage.CHECK)
    old = {u: m for u, m in first.answer(opening).items()}
    coh = make_cohort(with_round(cfg5, 1, "iv08-b"), seed=35, tag="b", identities=first.identities)
    checks = coh.run_to(Stage.CHECK)
    seed = next(iter(checks.values())).seed  # type: ignore[union-attr]
    replies = coh.answer(checks)
    replayed = replace(replies[2], proof=old[2].proof)  # type: ignore[arg-type]
    replies[2] = resign_check(coh.config, coh.identities[2], replayed, seed)  # type: ignore[arg-type]
    coh.submit(replies)
    result = coh.finish()
    assert result.included == frozenset({1, 3, 4, 5}) and "proof rejected" in coh.server.cheaters[2]


def test_iv08_every_bit_flip_of_a_proof_or_claim_is_refused() -> None:
    """IV-08: flips spread over the proof and the self claim (header, points, projections,
    scalars) each fail verification; the untouched answer verifies."""
    coh = make_cohort(CFG, seed=36)
    checks = coh.run_to(Stage.CHECK)
    good = coh.answer(checks)[2]
    assert isinstance(good, CheckResponse)
    assert coh.server._check_proof(good) is None
    for name in ("proof", "self_claim"):
        data: bytes = getattr(good, name)
        bits = 8 * len(data)
        for bit in sorted({0, bits - 1, *range(0, bits, max(1, bits // 12))}):
            mauled = bytearray(data)
            mauled[bit // 8] ^= 1 << (bit % 8)
            assert coh.server._check_proof(replace(good, **{name: bytes(mauled)})) is not None


def test_three_cheaters_among_twenty_are_named_and_the_seventeen_summed() -> None:
    """Issue acceptance: n = 20, three cheaters with three different deviations (a forged norm
    proof 25x over the bound, an upload that is not the committed vector, a proof made for
    another client). The round publishes the exact sum of the 17 honest clients and names the
    three, with the reason, in ``SimulationResult.rejected``."""
    cfg, m, bound = vcfg(20, 13)
    inputs = _inputs(20, 37)
    cheats = {
        5: _forger(_big(40 * m, 0), bound, b"s5"),
        9: (ShiftingClient, {"index": 3, "delta": 777}),
        13: (ForeignContextClient, {"other": 12}),
    }
    res = simulate(cfg, inputs, seed=37, client_factory=factory(cheats))
    assert res.included == frozenset(range(1, 21)) - {5, 9, 13}
    _exact(res, inputs)
    assert set(res.cheaters) == {5, 9, 13}
    for u in (5, 9, 13):
        assert "CHECK" in res.rejected[u] and "proof rejected" in res.rejected[u]


def test_false_claim_about_a_shared_mask_excludes_the_pair_and_names_the_liar() -> None:
    """Client 2 uploads its vector + 500 and hides it with a false claim about the mask it
    shares with client 3 (its proof verifies). Client 3's claim disagrees: both are left out
    before unmasking; once 2's and 3's mask keys are rebuilt the false one is named (2, not
    3), and the other clients' exact sum is published."""
    cfg, _, _ = vcfg(7, 4)
    inputs = _inputs(7, 38)
    res = simulate(
        cfg,
        inputs,
        seed=38,
        client_factory=factory({2: (LyingClient, {"index": 1, "delta": 500, "about": 3})}),
    )
    assert res.included == frozenset({1, 4, 5, 6, 7})
    _exact(res, inputs)
    assert set(res.cheaters) == {2} and "false" in res.cheaters[2]
    assert "false claim" in res.rejected[3] and "2" in res.rejected[3]


def test_false_claim_about_its_own_mask_names_the_liar_and_publishes_nothing() -> None:
    """Client 2 hides a +500 with a false claim about its own mask: nothing can check that
    before its self-mask seed is rebuilt, and then its upload is in the sum. The round aborts,
    naming client 2 (its signed claim is the evidence), and publishes nothing."""
    inputs = _inputs(4, 39)
    coh = make_cohort(
        CFG,
        seed=39,
        client_factory=factory({2: (LyingClient, {"index": 1, "delta": 500, "about": None})}),
    )
    with pytest.raises(AggregateMismatch) as err:
        coh.finish()
    assert err.value.culprit == 2
    assert "own mask" in coh.server.cheaters[2]
    assert coh.server.state is ServerState.ABORTED
    with pytest.raises(UnexpectedMessage):
        _ = coh.server.result
    del inputs


def test_false_claim_about_a_dropped_neighbour_names_the_liar() -> None:
    """Client 2 lies about the mask it shares with client 4, which drops out before the check:
    the lie is seen when 4's mask key is rebuilt; the round aborts naming 2."""
    cfg, _, _ = vcfg(5, 3)
    coh = make_cohort(
        cfg,
        seed=40,
        client_factory=factory({2: (LyingClient, {"index": 1, "delta": 500, "about": 4})}),
    )
    with pytest.raises(AggregateMismatch) as err:
        coh.finish(drops={Stage.CHECK: [4]})
    assert err.value.culprit == 2 and "dropped client 4" in coh.server.cheaters[2]


def test_colluders_moving_mass_between_them_still_publish_the_committed_sum() -> None:
    """Residual (malicious-clients.md): two colluding neighbours shift +delta and -delta between
    their uploads and agree on the same false claim about their shared mask; every check passes
    and the published sum is exactly the sum of the committed, norm-proven vectors."""
    cfg, _, _ = vcfg(5, 3)
    inputs = _inputs(5, 41)
    pair = {
        2: (LyingClient, {"index": 0, "delta": 12345, "about": 3}),
        3: (LyingClient, {"index": 0, "delta": -12345, "about": 2}),
    }
    res = simulate(cfg, inputs, seed=41, client_factory=factory(pair))
    assert res.included == frozenset(range(1, 6)) and not res.cheaters
    _exact(res, inputs)


@pytest.mark.parametrize(
    "stage", [Stage.MASKED_INPUT, Stage.CHECK, Stage.CONSISTENCY, Stage.UNMASK]
)
def test_cheater_and_dropouts_together_still_give_the_others_sum(stage: Stage) -> None:
    """A forger and a client dropping at each stage: the forger is excluded and named, the
    drop tolerated, and the published sum is exactly the remaining clients'."""
    cfg, m, bound = vcfg(7, 4)
    inputs = _inputs(7, 42)
    res = simulate(
        cfg, inputs, seed=42, drops={stage: [6]},
        client_factory=factory({1: _forger(_big(40 * m), bound, b"d")}),
    )  # fmt: skip
    assert 1 not in res.included and set(res.cheaters) == {1}
    expected = {2, 3, 4, 5, 7} | ({6} if stage in (Stage.CONSISTENCY, Stage.UNMASK) else set())
    assert res.included == frozenset(expected)
    _exact(res, inputs)
