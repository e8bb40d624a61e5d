"""Group, field and exact-integer helpers shared by the proofs of :mod:`secagg.verify`.

BLS12-381 G1 through ``py_arkworks_bls12381``; independent generators from RFC 9380
hash-to-curve under fixed labels (no known relations between them); a SHA-256 / SHAKE-256
Fiat-Shamir transcript; and exact integer linear algebra on limb matrices in float64 BLAS.
Pure: no I/O, no clocks, randomness only from a :class:`secagg.RandomSource`.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from py_arkworks_bls12381 import G1Point, Scalar

from secagg._errors import SecAggError
from secagg._rng import RandomSource

__all__ = ["FIELD_ORDER", "InvalidProof"]

#: BLS12-381 scalar-field order (the order of G1).
P = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
FIELD_ORDER = P
_LIMB = 16
_MASK16 = (1 << _LIMB) - 1
_POINT = 48
_SCALAR = 32
_DST = b"SECAGG-V1-VERIFY-GENERATORS_BLS12381G1_XMD:SHA-256_SSWU_RO_"

I64 = npt.NDArray[np.int64]


class InvalidProof(SecAggError, ValueError):
    """A proof, commitment or opening is malformed or does not verify."""


# ----------------------------------------------------------------------------- group helpers

_GENS: dict[bytes, list[Any]] = {}
_GEN_LOCK = threading.Lock()


def _gens(tag: bytes, count: int) -> list[Any]:
    """Exactly the first ``count`` generators of family ``tag`` (hash-to-curve, cached).

    The cache grows under a lock (threads verifying at once must not interleave appends) and
    callers get a copy of the prefix, never the growing list itself.
    """
    with _GEN_LOCK:
        lst = _GENS.setdefault(tag, [])
        for i in range(len(lst), count):
            lst.append(G1Point.hash_to_curve(tag + b"/" + i.to_bytes(4, "big"), _DST))
        return lst[:count]


def _base(tag: bytes) -> Any:
    return _gens(tag, 1)[0]


def _sc(v: int) -> Any:
    return Scalar.from_le_bytes((v % P).to_bytes(_SCALAR, "little"))


def _msm(points: Sequence[Any], scalars: Sequence[int]) -> Any:
    if not points:
        return G1Point.identity()
    return G1Point.multiexp_unchecked(list(points), [_sc(s) for s in scalars])


_SUMS: dict[tuple[bytes, int], Any] = {}


def _msm_small(tag: bytes, values: Sequence[int], blind_base: Any, blind: int) -> Any:
    """``<values, gens(tag)[:len]> + blind * blind_base`` for small signed ``values``.

    The binding's MSM is ~4x faster on small non-negative scalars than on the field images of
    negative ones (``p - v``), so ``values`` are shifted by ``off = -min`` and ``off`` times the
    (cached) sum of the generators is subtracted.
    """
    n = len(values)
    gens = _gens(tag, n)
    off = max(0, -min(values)) if n else 0
    key = (tag, n)
    with _GEN_LOCK:
        total = _SUMS.get(key)
    if total is None:
        total = G1Point.multiexp_unchecked(gens, [_sc(1)] * n)
        with _GEN_LOCK:
            _SUMS[key] = total
    scal = [_sc(v + off) for v in values]
    return G1Point.multiexp_unchecked([*gens, total, blind_base], [*scal, _sc(-off), _sc(blind)])


def _pt_bytes(pt: Any) -> bytes:
    return bytes(pt.to_compressed_bytes())


def _pt_from(data: bytes) -> Any:
    try:
        pt = G1Point.from_compressed_bytes(data)
    except Exception as exc:  # the binding raises plain exceptions
        raise InvalidProof("invalid G1 point encoding") from exc
    if _pt_bytes(pt) != data:  # e.g. the binding accepts 0xff * 48 as the identity
        raise InvalidProof("non-canonical G1 point encoding")
    return pt


def _sc_from(data: bytes) -> int:
    v = int.from_bytes(data, "big")
    if v >= P:
        raise InvalidProof("non-canonical scalar")
    return v


def _rand(rng: RandomSource) -> int:
    """A uniform field element, exactly: 255-bit draws rejected unless below ``p``."""
    while True:  # accepts with probability p / 2^255 > 0.9
        v = int.from_bytes(rng.bytes(32), "little") & ((1 << 255) - 1)
        if v < P:
            return v


def _uniform_range(rng: RandomSource, lo: int, hi: int) -> int:
    """A uniform integer in ``[lo, hi)``, exactly (rejection sampling, no modulo bias)."""
    span = hi - lo
    if span < 1:
        raise ValueError("empty range")
    bits = (span - 1).bit_length()
    nbytes = (bits + 7) // 8
    while True:
        v = int.from_bytes(rng.bytes(nbytes), "little") & ((1 << bits) - 1)
        if v < span:
            return lo + v


def _centred(v: int) -> int:
    v %= P
    return v - P if v > P // 2 else v


def _inv(v: int) -> int:
    return pow(v, P - 2, P)


def _ip(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x * y for x, y in zip(a, b, strict=True)) % P


class _Transcript:
    """SHA-256 Fiat-Shamir transcript with length-prefixed, labelled absorbs."""

    def __init__(self, label: bytes, context: bytes) -> None:
        self._h = hashlib.sha256(label)
        self.absorb(b"ctx", context)

    def absorb(self, label: bytes, data: bytes) -> None:
        self._h.update(struct.pack(">H", len(label)) + label)
        self._h.update(struct.pack(">Q", len(data)) + data)

    def challenge_bytes(self, label: bytes, n: int) -> bytes:
        """``n`` pseudorandom bytes (SHAKE-256 of the state); the state absorbs their seed."""
        self.absorb(b"challenge", label)
        seed = self._h.copy().digest()
        self._h.update(seed)
        return hashlib.shake_256(b"secagg-xof" + seed).digest(n)

    def challenge(self, label: bytes) -> int:
        """A uniform non-zero field element: 255-bit outputs rejected unless in ``[1, p)``."""
        for ctr in range(256):
            v = int.from_bytes(self.challenge_bytes(label + bytes([ctr]), 32), "big")
            v &= (1 << 255) - 1
            if 0 < v < P:
                return v
        raise AssertionError("unreachable")  # pragma: no cover: each try fails w.p. < 0.1


# ------------------------------------------------------------------------ exact integer algebra
#
# Vectors are int64 matrices of 16-bit limbs: value = sum_l col_l * 2^(16 l), every entry in
# [-2^16, 2^16]. A float64 matrix product of two such matrices is exact while the inner
# dimension is below 2^20 (2^32 * 2^20 < 2^53), which MAX_DIM / TARGET_ROWS guarantees.


def _split(v: I64, limbs: int) -> I64:
    """Signed 16-bit limb split of an int64 vector (low limbs in [0, 2^16), top limb signed)."""
    out = np.empty((v.shape[0], limbs), dtype=np.int64)
    cur = v.copy()
    for j in range(limbs - 1):
        out[:, j] = cur & _MASK16
        cur >>= _LIMB
    out[:, limbs - 1] = cur
    if np.any(np.abs(cur) > 1 << _LIMB):
        raise AssertionError("limb overflow")  # pragma: no cover - callers size limbs
    return out


def _normalise(y: I64, limbs: int) -> I64:
    """Carry an int64 limb matrix (entries up to 2^40) into ``limbs`` 16-bit limbs."""
    out = np.zeros((y.shape[0], limbs), dtype=np.int64)
    carry = np.zeros(y.shape[0], dtype=np.int64)
    for j in range(limbs):
        cur = carry + (y[:, j] if j < y.shape[1] else 0)
        if j == limbs - 1:
            out[:, j] = cur
        else:
            out[:, j] = cur & _MASK16
            carry = cur >> _LIMB
    if np.any(np.abs(out[:, -1]) > 1 << _LIMB):
        raise AssertionError("limb overflow")  # pragma: no cover
    return out


def _from_bytes_limbs(data: bytes, count: int, limbs: int) -> I64:
    """``count`` little-endian unsigned integers of ``2*limbs`` bytes as a limb matrix."""
    arr = np.frombuffer(data, dtype="<u2", count=count * limbs)
    return arr.reshape(count, limbs).astype(np.int64)


def _field_limbs(values: Sequence[int]) -> I64:
    """Field elements (reduced mod p) as 16 limbs of 16 bits."""
    raw = b"".join((v % P).to_bytes(32, "little") for v in values)
    return _from_bytes_limbs(raw, len(values), 16)


def _recombine(mat: npt.NDArray[Any]) -> list[int]:
    """Rows of a limb matrix (int64 or float64 holding exact integers, column ``j`` weighing
    ``2^(16 j)``, entries below ``2^62``) as ints mod p.

    The columns are carried into 16-bit limbs in numpy (signed entries carry with floor
    shifts), so each row becomes one ``int.from_bytes`` plus its final carry instead of a
    dot product of Python integers.
    """
    m = np.rint(mat).astype(np.int64) if mat.dtype != np.int64 else mat
    rows, width = m.shape
    limbs = np.empty((rows, width), dtype="<u2")
    carry = np.zeros(rows, dtype=np.int64)
    for j in range(width):
        cur = m[:, j] + carry
        limbs[:, j] = cur & _MASK16
        carry = cur >> _LIMB
    raw = limbs.tobytes()
    step = 2 * width
    shift = _LIMB * width
    return [
        (int.from_bytes(raw[i * step : (i + 1) * step], "little") + (c << shift)) % P
        for i, c in enumerate(carry.tolist())
    ]


def _gram(x: I64, y: I64) -> I64:
    """Exact ``x.T @ y`` for limb matrices (float64 BLAS; exact by the bounds above)."""
    return np.rint(x.T.astype(np.float64) @ y.astype(np.float64)).astype(np.int64)


def _fold(x: I64, coefs: Sequence[int]) -> list[int]:
    """``x @ coefs`` mod p for a limb matrix ``x`` (b x c) and field coefficients (c)."""
    prod = x.astype(np.float64) @ _field_limbs(coefs).astype(np.float64)
    return _recombine(prod)


def _pad(v: I64, b: int) -> I64:
    out = np.zeros((b, v.shape[1]), dtype=np.int64)
    out[: v.shape[0]] = v
    return out


def _ip_blocks(g: I64, xoff: int, xl: int, yoff: int, yl: int) -> int:
    """``<u, v>`` from a Gram matrix of limb columns: sum 2^(16(i+j)) g[xoff+i, yoff+j]."""
    sub = g[xoff : xoff + xl, yoff : yoff + yl]
    total = 0
    for i in range(xl):
        for j in range(yl):
            v = int(sub[i, j])
            if v:
                total += v << (_LIMB * (i + j))
    return total % P


def _limbs_needed(bound: int) -> int:
    """16-bit limbs of :func:`_split` for signed values of magnitude below ``bound``."""
    return max(1, -(-(bound.bit_length() + 1) // _LIMB))


# ----------------------------------------------------------------------------- inner product

EXPLICIT_IPA_LENGTH = 512  # below this the IPA folds materialised generators


def _ipa_prove(
    tr: _Transcript, gv: list[Any], hv: list[Any], u_base: Any, a: list[int], b: list[int]
) -> tuple[tuple[Any, ...], tuple[Any, ...], int, int]:
    """Inner-product argument for ``<a, G> + <b, H> + <a, b> U``.

    Two regimes, same transcript. While the vectors are long, generators are never folded
    point by point (a scalar multiplication costs ~0.3 ms, a term of a large MSM ~30 us):
    each folded generator is a coefficient vector over the original ones and ``L``, ``R`` are
    MSMs over the originals (cost ``2b`` terms a round). Once the length is at most
    :data:`EXPLICIT_IPA_LENGTH`, the folded generators are materialised (one small MSM each)
    and folded explicitly, which is cheaper for the remaining rounds.
    """
    n2 = len(a)
    cg = [1] * n2
    ch = [1] * n2
    ls: list[Any] = []
    rs: list[Any] = []
    cur = n2
    while cur > EXPLICIT_IPA_LENGTH:
        h = cur // 2
        a_lo, a_hi, b_lo, b_hi = a[:h], a[h:], b[:h], b[h:]
        blocks = range(0, n2, cur)
        lg = [ai * cg[q0 + h + j] for q0 in blocks for j, ai in enumerate(a_lo)]
        lh = [bi * ch[q0 + j] for q0 in blocks for j, bi in enumerate(b_hi)]
        rg = [ai * cg[q0 + j] for q0 in blocks for j, ai in enumerate(a_hi)]
        rh = [bi * ch[q0 + h + j] for q0 in blocks for j, bi in enumerate(b_lo)]
        g_hi = [gv[q0 + h + j] for q0 in blocks for j in range(h)]
        g_lo = [gv[q0 + j] for q0 in blocks for j in range(h)]
        h_hi = [hv[q0 + h + j] for q0 in blocks for j in range(h)]
        h_lo = [hv[q0 + j] for q0 in blocks for j in range(h)]
        big_l = _msm([*g_hi, *h_lo, u_base], [*lg, *lh, _ip(a_lo, b_hi)])
        big_r = _msm([*g_lo, *h_hi, u_base], [*rg, *rh, _ip(a_hi, b_lo)])
        u, ui = _ipa_round(tr, big_l, big_r, ls, rs)
        a = [(lo * u + hi * ui) % P for lo, hi in zip(a_lo, a_hi, strict=True)]
        b = [(lo * ui + hi * u) % P for lo, hi in zip(b_lo, b_hi, strict=True)]
        for q0 in blocks:
            for j in range(h):
                cg[q0 + j] = cg[q0 + j] * ui % P
                cg[q0 + h + j] = cg[q0 + h + j] * u % P
                ch[q0 + j] = ch[q0 + j] * u % P
                ch[q0 + h + j] = ch[q0 + h + j] * ui % P
        cur = h
    blocks = range(0, n2, cur)
    if n2 == cur:
        gf, hf = list(gv[:cur]), list(hv[:cur])
    else:
        gf = [
            _msm([gv[q0 + j] for q0 in blocks], [cg[q0 + j] for q0 in blocks]) for j in range(cur)
        ]
        hf = [
            _msm([hv[q0 + j] for q0 in blocks], [ch[q0 + j] for q0 in blocks]) for j in range(cur)
        ]
    while cur > 1:
        h = cur // 2
        a_lo, a_hi, b_lo, b_hi = a[:h], a[h:], b[:h], b[h:]
        big_l = _msm([*gf[h:], *hf[:h], u_base], [*a_lo, *b_hi, _ip(a_lo, b_hi)])
        big_r = _msm([*gf[:h], *hf[h:], u_base], [*a_hi, *b_lo, _ip(a_hi, b_lo)])
        u, ui = _ipa_round(tr, big_l, big_r, ls, rs)
        a = [(lo * u + hi * ui) % P for lo, hi in zip(a_lo, a_hi, strict=True)]
        b = [(lo * ui + hi * u) % P for lo, hi in zip(b_lo, b_hi, strict=True)]
        gf = [_msm([gf[j], gf[h + j]], [ui, u]) for j in range(h)]
        hf = [_msm([hf[j], hf[h + j]], [u, ui]) for j in range(h)]
        cur = h
    return tuple(ls), tuple(rs), a[0], b[0]


def _ipa_round(
    tr: _Transcript, big_l: Any, big_r: Any, ls: list[Any], rs: list[Any]
) -> tuple[int, int]:
    tr.absorb(b"L", _pt_bytes(big_l))
    tr.absorb(b"R", _pt_bytes(big_r))
    ls.append(big_l)
    rs.append(big_r)
    u = tr.challenge(b"ipa")
    return u, _inv(u)
