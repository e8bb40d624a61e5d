"""Injected randomness: the OS CSPRNG in production, a seeded stream only in tests.

Security: every secret in the protocol (X25519 keys, self-mask seeds, Shamir coefficients,
AEAD nonces, rounding coins) is drawn through a :class:`RandomSource`. The default reads
``os.urandom``. :class:`DeterministicRandom` exists so tests can replay a round; it is marked
``deterministic`` and the client refuses it unless its policy explicitly allows test mode.
"""

from __future__ import annotations

import hashlib
import os
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["DeterministicRandom", "RandomSource", "SystemRandom", "uniform_floats"]


@runtime_checkable
class RandomSource(Protocol):
    """Where random bytes come from; ``deterministic`` is True only for test sources."""

    deterministic: bool

    def bytes(self, n: int) -> bytes:
        """Return ``n`` uniformly random bytes."""
        ...


class SystemRandom:
    """The OS CSPRNG (``os.urandom``)."""

    deterministic = False
    __slots__ = ()

    def bytes(self, n: int) -> bytes:
        return os.urandom(n)


class DeterministicRandom:
    """AES-256-CTR stream keyed by SHA-256 of a seed. Test-only: reproducible by design."""

    deterministic = True
    __slots__ = ("_enc", "_key", "_offset")

    def __init__(self, seed: bytes | int | str):
        if isinstance(seed, int):
            seed = b"int:" + str(seed).encode()
        elif isinstance(seed, str):
            seed = seed.encode()
        self._start(hashlib.sha256(b"secagg/v1/test-rng" + seed).digest(), 0)

    def _start(self, key: bytes, offset: int) -> None:
        block, skip = divmod(offset, 16)
        self._key = key
        self._enc = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
        self._enc.update(bytes(skip))
        self._offset = offset

    def position(self) -> tuple[bytes, int]:
        """``(key, bytes drawn so far)``: enough to resume the stream (secagg.state, tests)."""
        return self._key, self._offset

    @classmethod
    def resume(cls, key: bytes, offset: int) -> DeterministicRandom:
        """The stream of :meth:`position`, continued from where it was."""
        rng = cls.__new__(cls)
        rng._start(key, offset)
        return rng

    def bytes(self, n: int) -> bytes:
        self._offset += n
        return self._enc.update(bytes(n))


def uniform_floats(rng: RandomSource, count: int) -> npt.NDArray[np.float64]:
    """``count`` floats uniform on [0, 1) with 53 bits of precision, from ``rng``.

    One AES key is drawn from ``rng`` and expanded with AES-CTR: a million draws cost one
    keystream pass instead of a million syscalls.
    """
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    enc = Cipher(algorithms.AES(rng.bytes(16)), modes.CTR(bytes(16))).encryptor()
    raw = np.frombuffer(enc.update(bytes(8 * count)), dtype="<u8")
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
