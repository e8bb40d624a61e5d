"""Field elements through the ring (secagg/verify_round.py, protocol.md §7): the blinding factors
of up to ``n`` clients, split into limbs, summed mod 2^b and recombined, give the sum of the
blindings mod the field order, exactly as the server needs it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ConfigError, EncodingError, RoundConfig
from secagg.verify import FIELD_ORDER, num_rows
from secagg.verify_round import combine_limbs, limb_bits, limb_count, split_limbs

MODULI = st.one_of(st.just(FIELD_ORDER), st.integers(2, 2**300))


@st.composite
def _cohort(draw: st.DrawFn) -> tuple[int, int, int, list[list[int]]]:
    """(ring bits, n, modulus, each client's field elements): a ring with room for n."""
    bits = draw(st.integers(4, 32))
    n = draw(st.integers(1, min(40, (1 << (bits - 1)) - 1)))
    modulus = draw(MODULI)
    rows = draw(st.integers(1, 4))
    values = draw(
        st.lists(
            st.lists(st.integers(0, modulus - 1), min_size=rows, max_size=rows),
            min_size=1,
            max_size=n,
        )
    )
    return bits, n, modulus, values


@settings(max_examples=300, deadline=None)
@given(_cohort())
def test_ring_sum_of_limbs_recombines_to_the_field_sum(
    case: tuple[int, int, int, list[list[int]]],
) -> None:
    bits, n, modulus, values = case
    L = limb_bits(bits, n)
    count = limb_count(L, modulus)
    ring_sum = np.zeros(len(values[0]) * count, dtype=np.uint32)
    exact = np.zeros(ring_sum.shape, dtype=object)
    for v in values:
        limbs = split_limbs(v, L, count)
        assert limbs.dtype == np.uint32 and limbs.shape == ring_sum.shape
        assert int(limbs.max(initial=0)) < 1 << L  # every limb is an L-bit number
        ring_sum = (ring_sum + limbs) & np.uint32((1 << bits) - 1)  # what the server sums
        exact += limbs.astype(object)
    # At most n clients: no limb position ever wraps the ring.
    assert all(int(e) < 1 << bits for e in exact)
    assert [int(e) for e in exact] == [int(r) for r in ring_sum]
    want = tuple(sum(v[k] for v in values) % modulus for k in range(len(values[0])))
    assert combine_limbs(ring_sum, L, count, modulus) == want


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 32), st.integers(1, 1 << 20), MODULI)
def test_limb_sizes_are_tight(bits: int, n: int, modulus: int) -> None:
    if bits - math.ceil(math.log2(n + 1)) < 1:
        with pytest.raises(ConfigError):
            limb_bits(bits, n)
        return
    L = limb_bits(bits, n)
    assert n * ((1 << L) - 1) < 1 << bits  # n clients' limbs cannot wrap
    count = limb_count(L, modulus)
    assert (modulus - 1) < 1 << (L * count)  # every field element fits ...
    assert count == 1 or (modulus - 1) >= 1 << (L * (count - 1))  # ... in no more limbs


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 31), st.integers(1, 8), st.data())
def test_values_that_do_not_fit_are_refused(L: int, count: int, data: st.DataObject) -> None:
    top = 1 << (L * count)
    bad = data.draw(st.one_of(st.integers(max_value=-1), st.integers(min_value=top)))
    with pytest.raises(EncodingError):
        split_limbs([0, bad], L, count)
    good = data.draw(st.integers(0, top - 1))
    assert combine_limbs(split_limbs([good], L, count), L, count, top + 1) == (good,)


def test_combine_refuses_misshapen_sums() -> None:
    with pytest.raises(EncodingError):
        combine_limbs(np.zeros(5, dtype=np.uint32), 8, 2, FIELD_ORDER)
    with pytest.raises(EncodingError):
        combine_limbs(np.zeros((2, 2), dtype=np.uint32), 8, 2, FIELD_ORDER)
    with pytest.raises(EncodingError):
        combine_limbs(np.array([-1, 0]), 8, 2, FIELD_ORDER)


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200), st.integers(1, 5000), st.sampled_from([None, 12, 20, 32]))
def test_upload_dim_carries_every_blinding(n: int, d: int, bits: int | None) -> None:
    """A verified round's upload is d + (rows x limbs per blinding); an unverified one is d."""
    try:
        cfg = RoundConfig(n=n, t=1, d=d, bits=bits, norm_bound=1 << 40)
    except ConfigError:
        return  # a ring too small for this cohort: refused before any limb question
    assert RoundConfig(n=n, t=1, d=d, bits=bits).upload_dim == d
    L = limb_bits(cfg.ring_bits, n)
    assert cfg.upload_dim == d + num_rows(d) * limb_count(L, FIELD_ORDER)
