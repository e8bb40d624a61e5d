"""Randomized Hadamard rotation: orthonormal, self-inverse, seeded by a public round seed."""

from __future__ import annotations

import numpy as np
import pytest

from dp import (
    InvalidParameter,
    InvalidVector,
    next_power_of_two,
    randomized_hadamard,
    randomized_hadamard_inverse,
    rotation_signs,
    walsh_hadamard,
)

SEED = b"round-seed-0000000"


def matrix(d: int) -> np.ndarray:
    return np.stack([walsh_hadamard(e) for e in np.eye(d)], axis=1)


@pytest.mark.parametrize("d", [1, 2, 4, 8, 64, 256])
def test_walsh_hadamard_is_orthonormal_and_symmetric(d: int) -> None:
    h = matrix(d)
    np.testing.assert_allclose(h @ h.T, np.eye(d), atol=1e-12)
    np.testing.assert_allclose(h, h.T, atol=0)
    np.testing.assert_allclose(np.abs(h), np.full((d, d), 1 / np.sqrt(d)), rtol=1e-12)


def test_randomized_rotation_is_orthonormal() -> None:
    d = 32
    r = np.stack([randomized_hadamard(e, SEED) for e in np.eye(d)], axis=1)
    np.testing.assert_allclose(r.T @ r, np.eye(d), atol=1e-12)


@pytest.mark.parametrize("d", [1, 2, 16, 1024, 2**15])
def test_rotation_inverts_and_preserves_norm(d: int) -> None:
    x = np.random.default_rng(d).normal(size=d) * 10  # test data only
    y = randomized_hadamard(x, SEED)
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-12)
    np.testing.assert_allclose(randomized_hadamard_inverse(y, SEED), x, atol=1e-10)
    np.testing.assert_allclose(walsh_hadamard(walsh_hadamard(x)), x, atol=1e-10)


def test_rotation_spreads_a_spike() -> None:
    d = 512
    spike = np.zeros(d)
    spike[3] = 1.0
    y = randomized_hadamard(spike, SEED)
    np.testing.assert_allclose(np.abs(y), np.full(d, 1 / np.sqrt(d)), rtol=1e-12)


def test_signs_come_from_the_seed() -> None:
    s1 = rotation_signs(SEED, 256)
    assert set(np.unique(s1)) == {-1.0, 1.0}
    np.testing.assert_array_equal(s1, rotation_signs(SEED, 256))
    assert not np.array_equal(s1, rotation_signs(SEED + b"x", 256))
    assert abs(s1.mean()) < 0.3


def test_bad_inputs() -> None:
    with pytest.raises(InvalidParameter):
        rotation_signs(b"short", 8)
    with pytest.raises(InvalidVector):
        rotation_signs(SEED, 12)
    with pytest.raises(InvalidVector):
        walsh_hadamard(np.ones(6))
    with pytest.raises(InvalidVector):
        walsh_hadamard(np.ones((2, 2)))
    assert [next_power_of_two(n) for n in (1, 2, 3, 5, 1024, 1025)] == [1, 2, 4, 8, 1024, 2048]
    with pytest.raises(InvalidParameter):
        next_power_of_two(0)
