"""The public Toeplitz projection of the CHECK stage (secagg/verify/projection.py, SPEC.md D12):
exact against a brute-force oracle, and a deviation of an upload never projects to zero
modulo 2^b on the sizes we can enumerate."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.verify import CHECK_ROWS, Projection, projection
from secagg.verify.projection import cut_limbs


def _matrix(p: Projection) -> np.ndarray:
    t = p._t.astype(np.int64)
    return np.array([[int(t[i + j]) for i in range(p.d)] for j in range(p.rows)], dtype=object)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=32),
    d=st.integers(1, 300),
    big=st.booleans(),
    data=st.data(),
)
def test_apply_and_transpose_are_exact(seed: bytes, d: int, big: bool, data: st.DataObject) -> None:
    p = Projection(seed, d)
    top = (1 << 47) if big else (1 << 32)
    vals = data.draw(st.lists(st.integers(-top + 1, top - 1), min_size=d, max_size=d))
    v = np.array(vals, dtype=np.int64)
    r = _matrix(p)
    assert p.apply(v)[0] == [int(x) for x in r.dot(np.array(vals, dtype=object))]
    many = np.stack([v, -v, v // 3, np.roll(v, 1), v & 0xFF])  # the batched matrix-product path
    assert p.apply(many) == [p.apply(row)[0] for row in many]
    limbs = np.array(
        data.draw(
            st.lists(st.integers(0, 0xFFFF), min_size=8 * CHECK_ROWS, max_size=8 * CHECK_ROWS)
        ),
        dtype=np.int64,
    ).reshape(CHECK_ROWS, 8)
    coef = [sum(int(limbs[j, k]) << (16 * k) for k in range(8)) for j in range(CHECK_ROWS)]
    want = r.T.dot(np.array(coef, dtype=object))
    pad = data.draw(st.integers(0, 50))
    got = p.transpose(limbs, d + pad)
    assert got.shape == (d + pad, 8)
    assert got.min() >= 0 and got.max() < 1 << 22  # the bound the limb algebra relies on
    cut = cut_limbs(got)
    assert cut.shape == (d + pad, 9) and cut.min() >= 0 and cut.max() < 1 << 17
    for m in (got, cut):
        back = [sum(int(m[i, k]) << (16 * k) for k in range(m.shape[1])) for i in range(d + pad)]
        assert back == [int(w) for w in want] + [0] * pad


@settings(max_examples=40, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=32),
    d=st.integers(1, 300),
    extra_rows=st.integers(0, 3),
    data=st.data(),
)
def test_transpose_grid_is_the_transpose_reordered(
    seed: bytes, d: int, extra_rows: int, data: st.DataObject
) -> None:
    """The verifier's grid layout holds exactly the padded transpose, row ``k * b + i`` at
    ``[i, k]``, with and without the cached window matrix (it is skipped when too large)."""
    b = data.draw(st.integers(1, d + 5))
    a = -(-d // b) + extra_rows
    limbs = np.array(
        data.draw(
            st.lists(st.integers(0, 0xFFFF), min_size=8 * CHECK_ROWS, max_size=8 * CHECK_ROWS)
        ),
        dtype=np.int64,
    ).reshape(CHECK_ROWS, 8)
    p = Projection(seed, d)
    want = p.transpose(limbs, a * b)
    grid = p.transpose_grid(limbs, a, b)
    assert grid.shape == (b, a, 8)
    assert np.array_equal(grid.transpose(1, 0, 2).reshape(a * b, 8).astype(np.int64), want)
    with mock.patch.object(projection, "_WINDOW_CACHE_MAX", 0):  # the uncached path
        uncached = Projection(seed, d).transpose_grid(limbs, a, b)
    assert np.array_equal(uncached, grid)


def test_transpose_grid_refuses_bad_shapes() -> None:
    p = Projection(bytes(16), 10)
    ok = np.zeros((CHECK_ROWS, 8), dtype=np.int64)
    for a, b in ((1, 9), (0, 10), (3, 0)):
        with pytest.raises(ValueError):
            p.transpose_grid(ok, a, b)
    with pytest.raises(ValueError):
        p.transpose_grid(ok - 1, 2, 5)
    with pytest.raises(ValueError):
        p.transpose_grid(ok[:3], 2, 5)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=16),
    d=st.integers(2, 2000),
    index=st.integers(0, 1999),
    bit=st.integers(0, 31),
)
def test_a_one_coordinate_deviation_is_always_seen(
    seed: bytes, d: int, index: int, bit: int
) -> None:
    """The worst deviation for a projection modulo 2^b flips one high bit of one coordinate:
    R e = 2^bit * (column of R). It is zero mod 2^32 only if that column is all zero, which
    happens with probability 2^-64."""
    p = Projection(seed, d)
    e = np.zeros(d, dtype=np.int64)
    e[index % d] = 1 << bit
    assert any(v % (1 << 32) for v in p.apply(e)[0])


def test_seeds_and_lengths_give_independent_matrices() -> None:
    a = Projection(b"\x01" * 32, 500)
    b = Projection(b"\x02" * 32, 500)
    c = Projection(b"\x01" * 32, 501)
    assert a.digest != b.digest != c.digest
    assert not np.array_equal(a._t[:500], b._t[:500])
    bits = Projection(b"\x03" * 32, 100_000)._t
    assert abs(float(bits.mean()) - 0.5) < 0.01  # balanced bits
