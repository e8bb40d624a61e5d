"""Properties of the swap-or-not permutation (secagg.shuffle) and of the ring laid with it
above SORTED_RING_MAX members (SPEC.md D14): a bijection whose inverse undoes it, the same
answer one point at a time and in bulk, and a client that evaluates only its own window of
the ring sees exactly the neighbours the server's whole-ring evaluation gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.graph import SORTED_RING_MAX, Ring, cohort_bitmap
from secagg.shuffle import Shuffle

seeds = st.binary(min_size=32, max_size=32)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 3000), rounds=st.integers(0, 24), data=st.data())
def test_the_shuffle_is_a_bijection_and_inverse_undoes_it(
    seed: bytes, n: int, rounds: int, data: st.DataObject
) -> None:
    sh = Shuffle(seed, n, rounds)
    image = sh.forward(np.arange(n))
    assert np.array_equal(np.sort(image), np.arange(n))
    assert np.array_equal(sh.inverse(image), np.arange(n))
    # A few points at a time (the scalar path) agree with the bulk path.
    pts = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4))
    assert sh.forward(pts).tolist() == image[pts].tolist()
    assert sh.inverse(image[pts]).tolist() == pts


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    n=st.integers(SORTED_RING_MAX + 1, SORTED_RING_MAX + 400),
    half=st.integers(1, 12),
    data=st.data(),
)
def test_a_client_window_of_the_shuffled_ring_is_the_whole_ring_s(
    seed: bytes, n: int, half: int, data: st.DataObject
) -> None:
    ids = np.array(sorted(data.draw(st.sets(st.integers(1, 10**6), min_size=n, max_size=n))))
    absent = data.draw(st.sets(st.sampled_from(ids.tolist()), max_size=n // 4))
    present = [int(u) for u in ids.tolist() if u not in absent]
    bitmap = cohort_bitmap(ids, present)
    k = 2 * half
    whole = Ring(ids, k, seed, present).graph()
    assert set(whole) == set(present)
    assert all(u not in nb and all(u in whole[v] for v in nb) for u, nb in whole.items())
    full = Ring(ids, k, seed).graph()
    assert all(len(nb) == k for nb in full.values())  # everyone present: exactly k
    # A client: its own neighbours, then each neighbour's (as a holder checks), from its window.
    u = data.draw(st.sampled_from(present))
    client = Ring(ids, k, seed, bitmap)
    mine = client.neighbours(u)
    assert mine == whole[u]
    assert all(client.neighbours(v) == whole[v] for v in mine)
    assert client._order is None  # never the whole ring
    assert len(client._at) <= 4 * half + 1
