"""Binary Toeplitz projections: the public challenge of the upload-consistency check.

After every masked upload of a verified round is in, the server reveals a fresh seed; it
fixes a ``J x d`` binary Toeplitz matrix ``R`` (``R[j, i] = t[i + j]`` for random bits ``t``).
Each client then proves ``R x + 2^b q + M = R y`` for its committed vector ``x``, its upload
``y``, the projection ``M`` of its masks and a small integer vector ``q`` (the projected
carries), see ``secagg/SPEC.md`` D12.

Why Toeplitz, why ``J`` rows: if ``y != x + m (mod 2^b)`` then ``e = y - x - m`` has, after
dividing by the largest power of two that divides all its entries, an odd entry, and
``R e = 0 (mod 2^b)`` forces ``R e' = 0 (mod 2)`` for a non-zero ``e'`` over GF(2). Random
binary Toeplitz matrices are a universal hash family over GF(2) (Mansour, Nisan and Tiwari,
STOC 1990; Krawczyk, CRYPTO 1994): ``P[R e' = 0] = 2^-J``. A Toeplitz matrix is defined by
``d + J - 1`` bits, and every product below is a handful of exact float64 matrix products.

Pure numpy: no group operations, so the server can project uploads as they stream in.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CHECK_ROWS", "Projection", "cut_limbs", "projection_for"]

CHECK_ROWS = 64  # J: a deviating upload survives the check with probability 2^-64
_LABEL = b"secagg/v1/check-projection"
_CHUNK = 1 << 15  # rows of the (d x J) window matrix materialised at once (16 MiB)
_LIMB = 16
_BATCH_COLUMNS = 4  # from this many limb columns on, apply() multiplies window chunks

I64 = npt.NDArray[np.int64]
_CACHE_ENTRIES = 2  # a round's projection, and the next round's
_WINDOW_CACHE_MAX = 1 << 27  # bytes of the float32 grid window kept per projection (d <= 2^19)


class Projection:
    """The ``J x d`` binary Toeplitz matrix of one seed (public, deterministic)."""

    __slots__ = ("_grid32", "_lock", "_t", "_t32", "d", "digest", "rows")

    def __init__(self, seed: bytes, d: int, rows: int = CHECK_ROWS) -> None:
        if not 16 <= len(seed) <= 64:
            raise ValueError("a projection seed is 16 to 64 bytes")
        if d < 1 or not 1 <= rows <= 256:
            raise ValueError("a projection needs d >= 1 and 1..256 rows")
        self.d = d
        self.rows = rows
        head = struct.pack(">IH", d, rows)
        self.digest = hashlib.sha256(_LABEL + head + seed).digest()
        nbits = d + rows - 1
        enc = Cipher(algorithms.AES(self.digest[:16]), modes.CTR(bytes(16))).encryptor()
        raw = np.frombuffer(enc.update(bytes((nbits + 7) // 8)), dtype=np.uint8)
        self._t = np.unpackbits(raw, bitorder="little")[:nbits].astype(np.float64)
        self._t32 = self._t.astype(np.float32)
        self._grid32: tuple[int, int, npt.NDArray[np.float32]] | None = None
        self._lock = threading.Lock()

    def _windows(self, lo: int, hi: int, dtype: type = np.float64) -> npt.NDArray[Any]:
        """Rows ``lo..hi`` of the ``d x J`` matrix ``R^T`` (contiguous)."""
        src = self._t32 if dtype is np.float32 else self._t
        view = np.lib.stride_tricks.sliding_window_view(src[lo : hi + self.rows - 1], self.rows)
        return np.ascontiguousarray(view)

    def apply(self, vectors: npt.ArrayLike) -> list[list[int]]:
        """``R v`` for each row ``v`` of ``vectors`` (``k x d`` or ``d``), exactly, as ints.

        Entries must be integers of magnitude below ``2^48``. When ``d * max|v| < 2^53`` (any
        32-bit vector up to ``d = 2^21``) one float64 product is exact; otherwise entries are
        split into 16-bit limbs, so every dot product stays below ``d * 2^16``.
        """
        arr = np.asarray(vectors)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[1] != self.d or arr.dtype.kind not in "iu":
            raise ValueError(f"project integer vectors of length {self.d}")
        v = arr.astype(np.int64)
        top = int(np.max(np.abs(v))) if v.size else 0
        if top >= 1 << 48:
            raise ValueError("projected entries must be below 2^48 in magnitude")
        k = v.shape[0]
        parts = 1 if top * self.d < 1 << 53 else 3
        limbs = np.empty((self.d, parts * k), dtype=np.float64)
        cur = v.T.copy()
        for j in range(parts):
            part = cur if j == parts - 1 else cur & 0xFFFF
            limbs[:, j::parts] = part
            cur = cur >> _LIMB
        acc = np.zeros((self.rows, parts * k), dtype=np.float64)
        if parts * k >= _BATCH_COLUMNS:  # many vectors: one matrix product per window chunk
            for lo in range(0, self.d, _CHUNK):
                hi = min(lo + _CHUNK, self.d)
                acc += self._windows(lo, hi).T @ limbs[lo:hi]
        else:
            for j in range(self.rows):  # acc[j] = t[j : j + d] @ limbs: no window matrix
                acc[j] = self._t[j : j + self.d] @ limbs
        out = np.rint(acc).astype(np.int64).astype(object)
        total = out[:, 0::parts]
        for j in range(1, parts):
            total = total + out[:, j::parts] * (1 << (_LIMB * j))
        return [[int(total[j, c]) for j in range(self.rows)] for c in range(k)]

    def _check_limbs(self, coefs: I64) -> None:
        if coefs.shape[0] != self.rows or coefs.ndim != 2:
            raise ValueError(f"transpose needs {self.rows} limb rows")
        if np.any(coefs < 0) or np.any(coefs > 0xFFFF):
            raise ValueError("transpose takes 16-bit limbs")

    def transpose(self, coefs: I64, total: int | None = None) -> I64:
        """``R^T c`` for a ``J x L`` matrix of non-negative 16-bit limbs, exactly, as a
        ``total x L`` matrix of unnormalised limbs (column ``j`` weighs ``2^(16 j)``, every
        entry is below ``J * 2^16 <= 2^22``; rows past ``d`` are zero, ``total`` defaults to
        ``d``). Callers whose limb algebra needs smaller entries cut them with
        :func:`cut_limbs`; carrying is left out because nothing downstream needs it. A
        verifier checking many proofs uses :meth:`transpose_grid`, which keeps its window
        matrix; this one builds it chunk by chunk each call.
        """
        self._check_limbs(coefs)
        total = self.d if total is None else total
        if total < self.d:
            raise ValueError("transpose pads, never truncates")
        # float32 is exact: each entry of windows @ coefs is below J * 2^16 <= 2^24.
        c = coefs.astype(np.float32)
        wide = np.zeros((total, coefs.shape[1]), dtype=np.float32)
        for lo in range(0, self.d, _CHUNK):
            hi = min(lo + _CHUNK, self.d)
            np.matmul(self._windows(lo, hi, np.float32), c, out=wide[lo:hi])
        return wide.astype(np.int64)  # exact integers: no rounding needed

    def transpose_grid(self, coefs: I64, a: int, b: int) -> npt.NDArray[np.float32]:
        """:meth:`transpose` padded to ``a * b`` rows and laid out as a ``b x a x L`` array:
        entry ``[i, k]`` is row ``k * b + i`` of ``R^T c`` (exact integers below ``2^22``
        held in float32). A verifier folds the ``a`` rows of a commitment with per-row
        weights; in this layout that fold is one matrix product with no copy, and the
        matching window matrix is built once per projection.
        """
        if a < 1 or b < 1 or a * b < self.d:
            raise ValueError("a grid holds at least d rows")
        self._check_limbs(coefs)
        win = self._grid_matrix(a, b)
        if win is None:  # too large to keep: the plain transpose, reordered once
            flat = self.transpose(coefs, a * b).astype(np.float32)
            return np.ascontiguousarray(flat.reshape(a, b, -1).transpose(1, 0, 2))
        # float32 is exact: entries below 2^22
        return (win @ coefs.astype(np.float32)).reshape(b, a, coefs.shape[1])

    def _grid_matrix(self, a: int, b: int) -> npt.NDArray[np.float32] | None:
        """The window matrix with rows ordered ``(i, k) -> k * b + i`` (zero past ``d``)."""
        if a * b * self.rows * 4 > _WINDOW_CACHE_MAX:
            return None
        with self._lock:
            if self._grid32 is None or self._grid32[:2] != (a, b):
                full = np.zeros((a * b, self.rows), dtype=np.float32)
                full[: self.d] = self._windows(0, self.d, np.float32)
                grid = full.reshape(a, b, self.rows).transpose(1, 0, 2)
                self._grid32 = (a, b, np.ascontiguousarray(grid).reshape(a * b, self.rows))
            return self._grid32[2]


def cut_limbs(sums: I64) -> I64:
    """Limbs below ``2^22`` as limbs below ``2^17`` (one more column, same value): each is cut
    once at bit 16 and its high part added to the next column, with no carry chain."""
    out = np.zeros((sums.shape[0], sums.shape[1] + 1), dtype=np.int64)
    out[:, :-1] = sums & 0xFFFF
    out[:, 1:] += sums >> _LIMB
    return out


_PROJECTIONS: OrderedDict[tuple[bytes, int, int], Projection] = OrderedDict()
_PROJ_LOCK = threading.Lock()


def projection_for(seed: bytes, d: int, rows: int = CHECK_ROWS) -> Projection:
    """A shared :class:`Projection` for ``(seed, d)``: every proof of a round is checked against
    the same matrix, so its window matrix is built once (a small LRU, thread-safe)."""
    key = (bytes(seed), d, rows)
    with _PROJ_LOCK:
        got = _PROJECTIONS.get(key)
        if got is not None:
            _PROJECTIONS.move_to_end(key)
            return got
    made = Projection(seed, d, rows)
    with _PROJ_LOCK:
        got = _PROJECTIONS.setdefault(key, made)
        _PROJECTIONS.move_to_end(key)
        while len(_PROJECTIONS) > _CACHE_ENTRIES:
            _PROJECTIONS.popitem(last=False)
    return got
