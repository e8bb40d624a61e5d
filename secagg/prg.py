"""Seekable mask PRG: AES-128-CTR keystream read as little-endian uint32 (docs/protocol.md §3).

Element ``i`` of the stream for ``key`` is the uint32 at byte ``4i`` of the AES-128-CTR
keystream with a zero initial counter block; a mask in Z_2^b takes its low ``b`` bits. Because
``2^b`` divides ``2^32``, all mask arithmetic is done on full uint32 words and reduced once.

Masks are generated and folded into the target in cache-sized chunks with ``update_into`` on a
preallocated buffer: the keystream never exists as one large array, which is what keeps the cost
within a small factor of the raw AES throughput (docs/anchors.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

__all__ = ["CHUNK_ELEMENTS", "apply_masks", "prg_slice"]

CHUNK_ELEMENTS = 1 << 14  # 64 KiB of keystream per call: stays in L2 with the target slice.

U32 = npt.NDArray[np.uint32]


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
) -> None:
    """In place: ``target += sum PRG(plus) - sum PRG(minus)`` (mod 2^32), elements from ``start``.

    The loop is chunk-outer so each slice of ``target`` stays in cache while every stream is
    folded into it; each stream keeps its own counter, so no keystream is generated twice.
    """
    if target.dtype != np.uint32 or target.ndim != 1 or not target.flags.c_contiguous:
        raise ValueError("target must be a contiguous 1-D uint32 array")
    if not plus and not minus:
        return
    d = target.shape[0]
    chunk = max(4, min(chunk, d)) if d else 4
    encs_plus = [_encryptor(k, start) for k in plus]
    encs_minus = [_encryptor(k, start) for k in minus]
    zeros = bytes(4 * chunk)
    buf = bytearray(4 * chunk + 15)
    ks_full = np.frombuffer(buf, dtype=np.uint32, count=chunk)
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
