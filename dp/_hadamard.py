"""Randomized Hadamard rotation: spread a vector's norm evenly over its coordinates.

``rotate(x) = H D x`` with ``D`` a diagonal of random signs and ``H`` the orthonormal
Walsh-Hadamard matrix (symmetric, ``H H = I``); ``unrotate(y) = D H y``. The rotation is
orthonormal, so L2 norms (and hence DP sensitivities) are unchanged, while every coordinate of
``H D x`` is a Rademacher sum with ``|coordinate| = O(||x|| sqrt(log d / d))`` for inputs chosen
independently of the signs (Kairouz, Liu, Steinke 2021, section 4). That is what makes the
per-coordinate quantisation and modular wrap of distributed DP cheap.

Security: the signs are *public* (everyone must un-rotate the sum with the same ``D``); they are
expanded from a per-round seed with SHAKE-256 and are not a secret.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import numpy.typing as npt

from dp._errors import InvalidParameter, InvalidVector

__all__ = [
    "MIN_ROUND_SEED_BYTES",
    "next_power_of_two",
    "randomized_hadamard",
    "randomized_hadamard_inverse",
    "rotation_signs",
    "walsh_hadamard",
]

F64 = npt.NDArray[np.float64]

MIN_ROUND_SEED_BYTES = 16
_SIGN_LABEL = b"dp/v1/hadamard-signs\x00"


def next_power_of_two(n: int) -> int:
    """Smallest power of two ``>= n`` (``n >= 1``)."""
    if n < 1:
        raise InvalidParameter(f"length must be positive, got {n}")
    return 1 << (n - 1).bit_length()


def _check_length(d: int) -> None:
    if d < 1 or d & (d - 1):
        raise InvalidVector(f"Hadamard length must be a power of two, got {d}")


def walsh_hadamard(x: F64) -> F64:
    """Orthonormal fast Walsh-Hadamard transform of a 1-D power-of-two-length vector (a copy).

    Self-inverse: ``walsh_hadamard(walsh_hadamard(x)) == x`` up to rounding.
    """
    y = np.array(x, dtype=np.float64, copy=True)
    if y.ndim != 1:
        raise InvalidVector(f"expected a 1-D vector, got shape {y.shape}")
    d = y.size
    _check_length(d)
    h = 1
    while h < d:
        v = y.reshape(-1, 2, h)
        a = v[:, 0, :].copy()
        v[:, 0, :] += v[:, 1, :]
        v[:, 1, :] = a - v[:, 1, :]
        h *= 2
    y *= 1.0 / math.sqrt(d)
    return y


def rotation_signs(round_seed: bytes, d: int) -> F64:
    """The public diagonal ``D`` (entries +-1) for a round, expanded from ``round_seed``."""
    if not isinstance(round_seed, bytes) or len(round_seed) < MIN_ROUND_SEED_BYTES:
        raise InvalidParameter(f"round_seed must be at least {MIN_ROUND_SEED_BYTES} bytes")
    _check_length(d)
    xof = hashlib.shake_256(_SIGN_LABEL + len(round_seed).to_bytes(4, "big") + round_seed)
    raw = np.frombuffer(xof.digest((d + 7) // 8), dtype=np.uint8)
    bits = np.unpackbits(raw, count=d, bitorder="little")
    return 1.0 - 2.0 * bits.astype(np.float64)


def randomized_hadamard(x: F64, round_seed: bytes) -> F64:
    """``H D x`` for a power-of-two-length ``x``."""
    x = np.asarray(x, dtype=np.float64)
    return walsh_hadamard(x * rotation_signs(round_seed, x.size))


def randomized_hadamard_inverse(y: F64, round_seed: bytes) -> F64:
    """``D H y``: the inverse of :func:`randomized_hadamard` for the same seed."""
    y = np.asarray(y, dtype=np.float64)
    return walsh_hadamard(y) * rotation_signs(round_seed, y.size)
