"""Injected randomness for noise and rounding: bytes from a source, numbers derived with numpy.

Every random number in :mod:`dp` is derived from :meth:`RandomSource.bytes`; ``numpy.random``
and ``random`` are never used (docs/threats.md DP-04). The interface is structurally the same as
``secagg``'s, so one source object can serve both packages.

Security: :class:`OsRandom` reads ``os.urandom`` (the OS CSPRNG). :class:`SeededRandom` is
reproducible by design and therefore test-only: it says ``deterministic = True`` and
:func:`require_csprng` refuses it unless the caller's configuration explicitly allows it.
"""

from __future__ import annotations

import builtins
import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dp._errors import InsecureRandomness, InvalidParameter

__all__ = [
    "OsRandom",
    "RandomSource",
    "SeededRandom",
    "random_bits",
    "require_csprng",
    "uniform_below",
    "uniform_floats",
    "uniform_u64",
]

_TWO_POW_M53 = 1.0 / (1 << 53)


@runtime_checkable
class RandomSource(Protocol):
    """Where random bytes come from; ``deterministic`` is True only for test sources."""

    deterministic: bool

    def bytes(self, n: int) -> builtins.bytes:
        """Return ``n`` uniformly random bytes."""
        ...


class OsRandom:
    """The OS CSPRNG (``os.urandom``): the only source production code accepts."""

    deterministic = False
    __slots__ = ()

    def bytes(self, n: int) -> builtins.bytes:
        return os.urandom(n)


class SeededRandom:
    """AES-256-CTR keystream keyed by SHA-256 of a seed. Test-only: reproducible by design.

    Security: anyone who knows the seed can subtract the noise; production refuses this class.
    """

    deterministic = True
    __slots__ = ("_enc",)

    def __init__(self, seed: builtins.bytes | int | str) -> None:
        if isinstance(seed, int):
            seed = seed.to_bytes(32, "big", signed=True)
        elif isinstance(seed, str):
            seed = seed.encode()
        key = hashlib.sha256(b"dp/v1/test-rng\x00" + seed).digest()
        self._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def bytes(self, n: int) -> builtins.bytes:
        return self._enc.update(bytes(n))


def require_csprng(rng: object, *, allow_seeded: bool = False) -> None:
    """Raise :class:`InsecureRandomness` unless ``rng`` declares itself non-deterministic.

    Security: anything that does not positively say ``deterministic = False`` is refused, so a
    source without the flag cannot slip through.
    """
    if allow_seeded:
        return
    if getattr(rng, "deterministic", True) is not False:
        raise InsecureRandomness(
            f"{type(rng).__name__} is deterministic; noise must come from the OS CSPRNG "
            "(a seeded source is allowed only when the configuration is in test mode)"
        )


def _count(n: int) -> int:
    if n < 0:
        raise InvalidParameter(f"count must be non-negative, got {n}")
    return n


def uniform_u64(rng: RandomSource, n: int) -> npt.NDArray[np.uint64]:
    """``n`` uniform 64-bit unsigned integers."""
    n = _count(n)
    return np.frombuffer(rng.bytes(8 * n), dtype="<u8").astype(np.uint64)


def uniform_floats(rng: RandomSource, n: int) -> npt.NDArray[np.float64]:
    """``n`` floats uniform on the grid ``{0, 2^-53, ..., 1 - 2^-53}``, i.e. [0, 1)."""
    return (uniform_u64(rng, n) >> np.uint64(11)).astype(np.float64) * _TWO_POW_M53


def uniform_below(rng: RandomSource, bound: int, n: int) -> npt.NDArray[np.int64]:
    """``n`` integers exactly uniform on ``{0, ..., bound - 1}`` (rejection, no modulo bias)."""
    n = _count(n)
    if not 1 <= bound <= 1 << 62:
        raise InvalidParameter(f"bound must be in [1, 2^62], got {bound}")
    if bound == 1:
        return np.zeros(n, dtype=np.int64)
    b = np.uint64(bound)
    rem = (1 << 64) % bound
    if rem == 0:  # a power of two: every draw is usable
        return (uniform_u64(rng, n) % b).astype(np.int64)
    limit = np.uint64((1 << 64) - rem)  # the largest multiple of bound that fits
    out = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        u = uniform_u64(rng, todo.size)
        ok = u < limit
        out[todo[ok]] = (u[ok] % b).astype(np.int64)
        todo = todo[~ok]
    return out


def random_bits(rng: RandomSource, n: int) -> npt.NDArray[np.bool_]:
    """``n`` independent fair bits."""
    n = _count(n)
    raw = np.frombuffer(rng.bytes((n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)
