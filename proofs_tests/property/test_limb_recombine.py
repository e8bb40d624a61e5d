"""The exact limb algebra under the norm proof's verifier (secagg/verify/_algebra.py): a limb
matrix read back as field elements equals the plain integer sum, for signed and unsigned
entries, int64 and float64 inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.verify._algebra import P, _recombine


@settings(max_examples=80, deadline=None)
@given(
    rows=st.integers(1, 6),
    width=st.integers(1, 20),
    top=st.sampled_from([1 << 16, 1 << 40, 1 << 52, (1 << 62) - 1]),
    data=st.data(),
)
def test_recombine_is_the_integer_sum(rows: int, width: int, top: int, data: st.DataObject) -> None:
    vals = data.draw(st.lists(st.integers(-top, top), min_size=rows * width, max_size=rows * width))
    mat = np.array(vals, dtype=np.int64).reshape(rows, width)
    want = [sum(int(mat[i, j]) << (16 * j) for j in range(width)) % P for i in range(rows)]
    assert _recombine(mat) == want
    if top <= 1 << 52:  # what float64 holds exactly
        assert _recombine(mat.astype(np.float64)) == want
