"""Ring encoding of docs/protocol.md §5: clip, scale, unbiased randomized rounding into Z_2^b,
bit-packing (``b`` bits per element on the wire) and signed decoding of the sum.

The ring is chosen so that the sum of ``n`` encoded vectors cannot wrap around: every encoded
value lies in ``[-m, m]`` with ``m = ceil(clip * scale)`` and ``n * m < 2^(b-1)`` (docs/threats.md
SA-12). Decoding the sum of the included clients is then exact up to the rounding error, which
is below ``1 / scale`` per client and coordinate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from secagg._errors import ConfigError, EncodingError
from secagg._rng import RandomSource, uniform_floats

__all__ = [
    "DEFAULT_LEVEL_BITS",
    "RingEncoding",
    "pack_bits",
    "unpack_bits",
]

U32 = npt.NDArray[np.uint32]
F64 = npt.NDArray[np.float64]

DEFAULT_LEVEL_BITS = 16  # per-client resolution when the ring size is left to us


@dataclass(frozen=True, slots=True)
class RingEncoding:
    """How floats become ring elements: clip to ``[-clip, clip]``, multiply by ``scale``,
    round randomly (unbiased), store two's-complement in ``bits`` bits."""

    bits: int
    clip: float
    scale: float
    n: int

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 32:
            raise ConfigError("ring bits must be in [2, 32]")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ConfigError("clip must be a positive finite number")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError("scale must be a positive finite number")
        if self.n < 1:
            raise ConfigError("n must be positive")
        if self.n * self.max_abs >= 2 ** (self.bits - 1):
            raise ConfigError(
                f"the sum of {self.n} inputs of magnitude {self.max_abs} can wrap around a "
                f"{self.bits}-bit ring (docs/threats.md SA-12)"
            )

    @property
    def max_abs(self) -> int:
        """Largest magnitude one encoded coordinate can take."""
        return math.ceil(self.clip * self.scale)

    @property
    def modulus(self) -> int:
        return 1 << self.bits

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def error_bound(self, included: int) -> float:
        """Worst-case absolute error per coordinate of a decoded sum of ``included`` inputs."""
        return included / self.scale

    @classmethod
    def choose(
        cls, n: int, clip: float, bits: int | None = None, level_bits: int = DEFAULT_LEVEL_BITS
    ) -> RingEncoding:
        """Pick the ring for ``n`` clients: with ``bits`` given, the finest scale that cannot
        wrap; otherwise ``level_bits`` of resolution per client and the smallest ring that holds
        the sum (at most 32 bits, lowering the resolution if it must)."""
        if n < 1:
            raise ConfigError("n must be positive")
        if not (math.isfinite(clip) and clip > 0):
            raise ConfigError("clip must be a positive finite number")
        if not isinstance(level_bits, int) or not 2 <= level_bits <= 31:
            raise ConfigError("level_bits must be in [2, 31]")  # every config that picks a ring
        if bits is None:
            per_client = (1 << (level_bits - 1)) - 1
            need = math.ceil(math.log2(n * per_client + 1)) + 1
            bits = min(32, max(need, 2))
        if not 2 <= bits <= 32:
            raise ConfigError("ring bits must be in [2, 32]")
        per_client = ((1 << (bits - 1)) - 1) // n  # n * max_abs < 2^(b-1)
        if per_client < 2:
            raise ConfigError(f"a {bits}-bit ring is too small for {n} clients")
        # max_abs = ceil(clip * scale) <= per_client - 1 keeps a margin against float rounding.
        scale = (per_client - 1) / clip
        return cls(bits=bits, clip=clip, scale=scale, n=n)

    def encode(self, x: npt.ArrayLike, rng: RandomSource) -> U32:
        """Clip, scale and randomly round ``x``; returns ring elements in ``[0, 2^b)``."""
        arr = np.asarray(x)
        if arr.ndim != 1:
            raise EncodingError("input must be a 1-D vector")
        if arr.dtype.kind not in "fiu":
            raise EncodingError(f"input dtype {arr.dtype} is not numeric")
        v = arr.astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise EncodingError("input contains NaN or infinity (docs/threats.md IV-02)")
        np.clip(v, -self.clip, self.clip, out=v)
        v *= self.scale
        low = np.floor(v)
        frac = v - low
        ints = low.astype(np.int64) + (uniform_floats(rng, v.shape[0]) < frac)
        return (ints & self.mask).astype(np.uint32)

    def decode(self, ring: U32) -> F64:
        """Signed decoding of a ring vector (a single input or a sum) back to floats."""
        signed = self.to_signed(ring)
        return signed.astype(np.float64) / self.scale

    def to_signed(self, ring: U32) -> npt.NDArray[np.int64]:
        """Two's-complement view of ring elements in ``(-2^(b-1), 2^(b-1))``."""
        r = np.asarray(ring, dtype=np.uint32).astype(np.int64) & self.mask
        return np.where(r >= (1 << (self.bits - 1)), r - self.modulus, r)

    def clipped(self, x: npt.ArrayLike) -> F64:
        """The value the encoding represents before rounding: ``x`` clipped."""
        return np.clip(np.asarray(x, dtype=np.float64), -self.clip, self.clip)


def pack_bits(values: U32, bits: int) -> bytes:
    """Pack ring elements into ``ceil(len * bits / 8)`` bytes, little-endian bit order.

    Raises :class:`EncodingError` if any element does not fit in ``bits`` bits.
    """
    v = np.ascontiguousarray(values, dtype=np.uint32)
    if v.ndim != 1:
        raise EncodingError("only 1-D vectors are packed")
    if bits < 32 and v.size and int(v.max()) >> bits:
        raise EncodingError(f"an element does not fit in {bits} bits")
    if bits in (8, 16, 32):
        return v.astype(f"<u{bits // 8}").tobytes()
    out = bytearray()
    step = 1 << 15  # multiple of 8 elements, so every chunk ends on a byte boundary
    for lo in range(0, v.size, step):
        part = v[lo : lo + step].astype("<u4").view(np.uint8).reshape(-1, 4)
        bitmat = np.unpackbits(part, axis=1, bitorder="little")[:, :bits]
        out += np.packbits(bitmat.reshape(-1), bitorder="little").tobytes()
    return bytes(out)


def unpack_bits(raw: bytes, bits: int, count: int) -> U32:
    """Inverse of :func:`pack_bits`; the length must be exact (no trailing or missing bytes)."""
    if not 1 <= bits <= 32:
        raise EncodingError("bits must be in [1, 32]")
    expected = (count * bits + 7) // 8
    if len(raw) != expected:
        raise EncodingError(f"packed vector has {len(raw)} bytes, expected {expected}")
    if bits in (8, 16, 32):
        return np.frombuffer(raw, dtype=f"<u{bits // 8}").astype(np.uint32)
    pad_bits = expected * 8 - count * bits
    if pad_bits and raw[-1] >> (8 - pad_bits):
        raise EncodingError("non-zero padding bits in packed vector")
    out = np.empty(count, dtype=np.uint32)
    step = 1 << 15
    weights = (1 << np.arange(bits, dtype=np.uint64)).astype(np.uint64)
    for lo in range(0, count, step):
        hi = min(lo + step, count)
        byte_lo = lo * bits // 8  # lo is a multiple of 8: byte aligned
        byte_hi = (hi * bits + 7) // 8
        chunk = np.frombuffer(raw, dtype=np.uint8, count=byte_hi - byte_lo, offset=byte_lo)
        bitv = np.unpackbits(chunk, bitorder="little")[: (hi - lo) * bits]
        out[lo:hi] = (bitv.reshape(-1, bits).astype(np.uint64) @ weights).astype(np.uint32)
    return out
