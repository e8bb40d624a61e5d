"""A keyed permutation of ``{0, ..., n - 1}`` that can be evaluated at one point: the
swap-or-not shuffle (Hoang, Morris and Rogaway, CRYPTO 2012, generalised domain), used to lay
the SecAgg+ ring over the cohort (SPEC.md D14).

Why a small-domain permutation: the ring order must be a (pseudo)random permutation of the
cohort, and a client needs only its own ring position and the ``k`` positions around it. A sort
of ``n`` pseudorandom keys gives the permutation but costs every client O(n) work and memory
per round; swap-or-not gives ``pi(x)`` and ``pi^-1(y)`` for any single point in ``r`` rounds,
so a client's ring costs O(k r) whatever ``n`` is, and the server still evaluates the whole
permutation at once (``r`` vectorised passes over ``n`` points).

Round ``j`` (of ``r``) has a key ``K_j`` in ``[0, n)`` and a bit function ``F_j``; it maps ``x``
to ``x' = K_j - x mod n`` if ``F_j(max(x, x')) = 1`` and leaves it otherwise. Each round is an
involution, so the inverse runs the rounds backwards. Here ``K_j`` and ``F_j`` come from
AES-256 under a key derived from the seed (one block per value; ``K_j`` is a 128-bit block
reduced mod ``n``, biased by at most ``n / 2^128``).

Round count: HMR's Theorem (CCA, ideal round functions) bounds the advantage of any
``q``-query distinguisher on a domain of ``N`` points after ``r`` rounds by
``4 N^(3/2) / (r + 4) * ((q + N) / (2 N))^(r/4 + 1)``. :func:`shuffle_rounds` picks the
smallest multiple of 4 for which that bound, times the ``n + n(n - 1)/2`` events the ring's
privacy bound is a union over (SPEC.md D14, :mod:`secagg.params`), is at most
``2^-TARGET_BITS``: each event looks at ``k + 1`` or fewer points of the permutation, so it has
that probability under the shuffle up to the distinguishing advantage of a ``(k + 1)``-query
adversary. Pure: no I/O, no global randomness.
"""

from __future__ import annotations

import functools
import math
import struct
from typing import Final

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._crypto import sha256

__all__ = [
    "LABEL_SHUFFLE",
    "TARGET_BITS",
    "Shuffle",
    "distinguishing_bound_log2",
    "shuffle_rounds",
]

LABEL_SHUFFLE: Final[bytes] = b"secagg/v3/shuffle"
#: ``-log2`` of the shuffle's share of the ring's privacy failure, for one seed, summed over
#: every event the bound unions over; a server that grinds ``2^g`` seeds multiplies it by
#: ``2^g`` (``secagg.params`` charges it with the rest).
TARGET_BITS: Final[float] = 100.0
_MAX_N: Final[int] = 1 << 62
_KEY_TAG: Final[int] = 1 << 63  # round-key blocks, apart from the bit blocks
_SCALAR_MAX: Final[int] = 4
_BLOCK: Final[struct.Struct] = struct.Struct("<QQ")  # (round, point): one AES block


def distinguishing_bound_log2(n: int, rounds: int, queries: int) -> float:
    """``log2`` of HMR's bound on a ``queries``-query CCA distinguisher's advantage against
    swap-or-not with ``rounds`` rounds on ``n`` points (``0`` when the bound says nothing)."""
    if n < 2:
        return -math.inf  # one point: every permutation is the identity
    if rounds < 1 or queries < 1:
        return 0.0
    base = math.log2(min(queries + n, 2 * n) / (2 * n))
    out = 2.0 + 1.5 * math.log2(n) - math.log2(rounds + 4) + (rounds / 4 + 1) * base
    return min(0.0, out)


@functools.lru_cache(maxsize=4096)
def shuffle_rounds(n: int, degree: int) -> int:
    """The round count for a ring of ``n`` members and degree ``degree`` (a multiple of 4):
    the smallest for which ``(n + n(n-1)/2)`` times the ``(degree + 1)``-query bound is at most
    ``2^-TARGET_BITS``."""
    if n < 2:
        return 0
    events = math.log2(n + n * (n - 1) / 2)
    q = min(degree + 1, n)
    r = 4
    while distinguishing_bound_log2(n, r, q) + events > -TARGET_BITS:
        r += 4
    return r


class Shuffle:
    """The permutation of ``{0, ..., n - 1}`` of one seed: :meth:`forward` and :meth:`inverse`
    at any points (vectorised), O(rounds) per point."""

    __slots__ = ("_ecb", "_keys", "n", "rounds")

    def __init__(self, seed: bytes, n: int, rounds: int) -> None:
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise ValueError("the shuffle seed must be 32 bytes")
        if not 1 <= n <= _MAX_N or rounds < 0:
            raise ValueError("the shuffle needs 1 <= n <= 2^62 and rounds >= 0")
        self.n = n
        self.rounds = rounds
        key = sha256(LABEL_SHUFFLE, seed, n.to_bytes(8, "big"), rounds.to_bytes(4, "big"))
        # ECB is the PRF here: AES on distinct (round, point) blocks, never on data.
        self._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305
        tags = b"".join(_BLOCK.pack(_KEY_TAG | j, 0) for j in range(rounds))
        raw = self._ecb.update(tags)
        self._keys = [
            int.from_bytes(raw[16 * j : 16 * j + 16], "little") % n for j in range(rounds)
        ]

    def _run(self, x: npt.NDArray[np.int64], order: range) -> npt.NDArray[np.int64]:
        n = self.n
        if x.size <= _SCALAR_MAX:  # a few points: Python ints beat numpy's per-call cost
            pack, ecb, keys = _BLOCK.pack, self._ecb, self._keys
            out = []
            for v in x.tolist():
                for j in order:
                    w = (keys[j] - v) % n
                    if ecb.update(pack(j, v if v > w else w))[0] & 1:
                        v = w
                out.append(v)
            return np.array(out, dtype=np.int64)
        m = x.size
        x = x.copy()
        raw = bytearray(16 * m)  # the AES blocks (round, max(x, x')), written in place
        blocks = np.frombuffer(raw, dtype="<i8").reshape(m, 2)
        enc = bytearray(16 * m + 15)  # update_into wants room for one more block
        bits = np.frombuffer(enc, dtype=np.uint8)[: 16 * m : 16]
        partner = np.empty_like(x)
        swap = np.empty(m, dtype=np.uint8)
        for j in order:
            blocks[:, 0] = j
            np.subtract(self._keys[j], x, out=partner)
            np.remainder(partner, n, out=partner)
            np.maximum(x, partner, out=blocks[:, 1])
            self._ecb.update_into(raw, enc)
            np.bitwise_and(bits, 1, out=swap)
            np.copyto(x, partner, where=swap.view(np.bool_))
        return x

    def _points(self, xs: npt.ArrayLike) -> npt.NDArray[np.int64]:
        arr = np.asarray(xs, dtype=np.int64).reshape(-1)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= self.n):
            raise ValueError(f"shuffle points must lie in [0, {self.n})")
        return arr

    def forward(self, xs: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``pi(x)`` for each ``x``."""
        return self._run(self._points(xs), range(self.rounds))

    def inverse(self, ys: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """``pi^-1(y)`` for each ``y``."""
        return self._run(self._points(ys), range(self.rounds - 1, -1, -1))
