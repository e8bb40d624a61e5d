"""The swap-or-not shuffle's round count, its bound, its refusals, and a statistical check that
it is close to uniform where every permutation can be counted (secagg.shuffle)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from secagg import ClientPolicy, RoundConfig, Stage, graph
from secagg.graph import SORTED_RING_MAX, Ring, ring_model_gap_log2
from secagg.shuffle import TARGET_BITS, Shuffle, distinguishing_bound_log2, shuffle_rounds
from secagg.simulate import simulate


@pytest.mark.parametrize(("n", "k"), [(1025, 8), (2000, 20), (10_000, 28), (100_000, 34)])
def test_round_count_is_the_smallest_multiple_of_four_meeting_the_target(n: int, k: int) -> None:
    r = shuffle_rounds(n, k)
    events = math.log2(n + n * (n - 1) / 2)
    assert r % 4 == 0
    assert distinguishing_bound_log2(n, r, k + 1) + events <= -TARGET_BITS
    assert distinguishing_bound_log2(n, r - 4, k + 1) + events > -TARGET_BITS
    assert ring_model_gap_log2(n, k) <= -TARGET_BITS


def test_the_round_count_grows_with_log_n_not_n() -> None:
    """From 10^3 to 10^5 members the rounds grow by a few log n terms, not by 100x."""
    assert shuffle_rounds(100_000, 34) < 1.25 * shuffle_rounds(1000, 34)


def test_gap_of_the_sorted_ring_is_the_tie_chance() -> None:
    n = SORTED_RING_MAX
    assert ring_model_gap_log2(n, 8) == pytest.approx(math.log2(n * (n - 1) / 2) - 128)
    assert ring_model_gap_log2(10, 9) == -math.inf  # complete graph: no order at all


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Shuffle(b"short", 10, 4)
    with pytest.raises(ValueError, match="n <= 2"):
        Shuffle(bytes(32), 0, 4)
    sh = Shuffle(bytes(32), 10, 4)
    with pytest.raises(ValueError, match="lie in"):
        sh.forward([10])
    with pytest.raises(ValueError, match="lie in"):
        sh.inverse([-1])


def test_on_four_points_every_permutation_is_about_equally_likely() -> None:
    """24 permutations of 4 points over 4,800 fixed seeds (deterministic, so not flaky): a
    chi-square statistic far below what a biased round (say, one that never swaps or always
    swaps) gives. The count of rounds is that of a production ring of that size."""
    n, rounds = 4, 48
    counts: dict[tuple[int, ...], int] = {}
    trials = 4800
    for i in range(trials):
        seed = hashlib.sha256(b"uniformity" + i.to_bytes(4, "big")).digest()
        perm = tuple(Shuffle(seed, n, rounds).forward(np.arange(n)).tolist())
        counts[perm] = counts.get(perm, 0) + 1
    assert len(counts) == 24
    expected = trials / 24
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 60.0  # 23 degrees of freedom: P[chi2 > 60] is about 3e-5


def test_a_client_ring_at_a_hundred_thousand_touches_only_its_window() -> None:
    """The shuffled ring's client work does not grow with n (SPEC.md D14): at n = 10^5 a
    client that finds its neighbours and theirs evaluates the permutation at 1 + (2k + 1)
    points, holds O(k) of it, and never the whole order; the ids array is used, not copied."""
    n, k = 100_000, 32
    ids = np.arange(1, n + 1, dtype=np.int64)
    ring = Ring(ids, k, hashlib.sha256(b"window").digest())
    mine = ring.neighbours(n // 2)
    assert len(mine) == k
    for v in mine:
        assert len(ring.neighbours(v)) == k
    assert ring._order is None and ring._pos is None
    assert len(ring._at) == 2 * k + 1
    assert len(ring._pos_of) == 2 * k + 1
    assert ring._ids is ids


def test_a_round_over_the_shuffled_ring_sums_every_survivor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A whole SecAgg+ round over the swap-or-not ring (the sorted ring's ceiling lowered to
    64 for every party alike, so n = 300 is a shuffled cohort: every client finds its
    neighbours from its window, the server from the whole ring): with 15 clients gone before
    their masked input and 5 before unmasking, the sum is numpy's over the survivors."""
    monkeypatch.setattr(graph, "SORTED_RING_MAX", 64)
    n = 300
    shuffled = Ring(np.arange(1, n + 1), 18, bytes(32))
    assert shuffled._shuffle is not None
    k = 18
    cfg = RoundConfig(n=n, t=ClientPolicy().min_threshold(k), d=16, k=k)
    gen = np.random.default_rng(300)
    inputs = [gen.uniform(-1, 1, 16) for _ in range(n)]
    drops = {Stage.MASKED_INPUT: list(range(1, 301, 20)), Stage.UNMASK: [7, 8, 9, 10, 11]}
    res = simulate(cfg, inputs, drops, seed=300)
    gone = set(drops[Stage.MASKED_INPUT])
    assert res.included == frozenset(u for u in range(1, n + 1) if u not in gone)
    want = sum(cfg.encoding.clipped(inputs[u - 1]) for u in res.included)
    assert np.allclose(res.aggregate, want, atol=1e-3)
