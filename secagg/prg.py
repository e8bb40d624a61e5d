"""Seekable mask PRG: AES-128-CTR keystream read as little-endian uint32 (docs/protocol.md §3).

Element ``i`` of the stream for ``key`` is the uint32 at byte ``4i`` of the AES-128-CTR
keystream with a zero initial counter block; a mask in Z_2^b takes its low ``b`` bits. Because
``2^b`` divides ``2^32``, all mask arithmetic is done on full uint32 words and reduced once.

Masks are generated and folded into the target in cache-sized chunks with ``update_into`` on a
preallocated buffer: the keystream never exists as one large array, which is what keeps the cost
within a small factor of the raw AES throughput (docs/anchors.md).
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

__all__ = ["CHUNK_ELEMENTS", "apply_masks", "prg_slice"]

CHUNK_ELEMENTS = 1 << 16  # 256 KiB of keystream per call: stays in L2 with the target slice.

U32 = npt.NDArray[np.uint32]


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> None: ...


_LITTLE = sys.byteorder == "little"


class _Overlapped:
    """Feed a hash from a worker thread, in order; :meth:`finish` waits and re-raises."""

    def __init__(self, digest: _Hasher) -> None:
        self._digest = digest
        self._queue: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="secagg-digest", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._digest.update(item)
                except BaseException as exc:  # re-raised in the caller by finish()
                    self._error = exc

    def put(self, data: memoryview) -> None:
        self._queue.put(data)

    def close(self) -> None:
        """Stop the worker after an error elsewhere (its own error, if any, is dropped)."""
        self._queue.put(None)
        self._thread.join()

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _encryptor(key: bytes, start: int) -> CipherContext:
    if len(key) != 16:
        raise ValueError("mask PRG keys are 16 bytes (AES-128)")
    if start < 0:
        raise ValueError("negative PRG offset")
    block, skip = divmod(4 * start, 16)
    enc = Cipher(algorithms.AES(key), modes.CTR(block.to_bytes(16, "big"))).encryptor()
    if skip:
        enc.update(bytes(skip))
    return enc


def prg_slice(key: bytes, start: int, count: int) -> U32:
    """Elements ``start .. start+count`` of the stream as raw uint32 (not reduced mod 2^b)."""
    enc = _encryptor(key, start)
    return np.frombuffer(enc.update(bytes(4 * count)), dtype="<u4").astype(np.uint32, copy=False)


def apply_masks(
    target: U32,
    plus: Sequence[bytes],
    minus: Sequence[bytes] = (),
    *,
    start: int = 0,
    chunk: int = CHUNK_ELEMENTS,
    reduce_mask: int | None = None,
    digest: _Hasher | None = None,
) -> None:
    """In place: ``target += sum PRG(plus) - sum PRG(minus)`` (mod 2^32), elements from ``start``.

    The loop is chunk-outer so each slice of ``target`` stays in cache while every stream is
    folded into it; each stream keeps its own counter, so no keystream is generated twice.
    While a finished slice is still in cache it is reduced (``& reduce_mask``) and fed to
    ``digest`` (little-endian bytes), so the upload's signed digest costs no extra pass.
    """
    if target.dtype != np.uint32 or target.ndim != 1 or not target.flags.c_contiguous:
        raise ValueError("target must be a contiguous 1-D uint32 array")
    if not plus and not minus and reduce_mask is None and digest is None:
        return
    d = target.shape[0]
    chunk = max(4, min(chunk, d)) if d else 4
    encs_plus = [_encryptor(k, start) for k in plus]
    encs_minus = [_encryptor(k, start) for k in minus]
    zeros = bytes(4 * chunk)
    buf = bytearray(4 * chunk + 15)
    # Finished slices are hashed on another core while the next ones are masked (hashlib
    # releases the GIL): SHA-256 at ~3 GB/s would otherwise add a third to the masking time.
    hasher = _Overlapped(digest) if digest is not None and d > 4 * chunk else None
    feed = hasher.put if hasher is not None else (digest.update if digest is not None else None)
    ks_full = np.frombuffer(buf, dtype=np.uint32, count=chunk)
    try:
        for lo in range(0, d, chunk):
            hi = min(lo + chunk, d)
            nbytes = 4 * (hi - lo)
            view = target[lo:hi]
            ks = ks_full[: hi - lo]
            src = zeros if nbytes == len(zeros) else zeros[:nbytes]
            for enc in encs_plus:
                enc.update_into(src, buf)
                np.add(view, ks, out=view)
            for enc in encs_minus:
                enc.update_into(src, buf)
                np.subtract(view, ks, out=view)
            if reduce_mask is not None:
                np.bitwise_and(view, np.uint32(reduce_mask), out=view)
            if feed is not None:
                feed(view.data if _LITTLE else memoryview(view.astype("<u4").tobytes()))
    except BaseException:
        if hasher is not None:
            hasher.close()
        raise
    if hasher is not None:
        hasher.finish()
