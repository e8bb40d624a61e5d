"""Pedersen row commitments over BLS12-381 G1 with a zero-knowledge L2-norm-bound proof.

Statement proven by :func:`prove_norm` (public: the row commitments ``C_1..C_a``, ``d``,
``bound``, ``context``)::

    C_k = <M_k, G> + rho_k * H0   (k = 1..a)     and     sum_i x_i^2 <= bound  (integers)

where ``x`` (length ``d``, signed integers) is laid out row by row in an ``a x b`` matrix
``M`` (``b`` a power of two, the last row zero-padded) and ``G = (G_0..G_{b-1})``, ``H``, ``H0``,
``Ut``, ``Ui`` are independent generators from RFC 9380 hash-to-curve under a fixed label.

Why rows: every operation whose cost grows with ``d`` is either a multi-scalar multiplication
with *small* scalars (the commitments, ~4 us a term) or exact integer linear algebra in numpy;
everything with full 255-bit scalars (blinding rows, the inner-product argument, ~30 us a
term) runs on vectors of length ``b ~ d / 32``. That is what makes ``d = 2.5e5`` practical.

Construction (one Bulletproofs-style argument over row-folded vectors):

1. *Slack.* ``bound - |x|^2 = |s|^2`` for an integer vector ``s`` of length 16 (greedy squares;
   always exists for ``bound < 2^64``). So the claim becomes the *equality*
   ``|x|^2 + |s|^2 = bound`` over ``v = (x, s)``.
2. *No wrap-around (threats.md IV-04), by an approximate range proof* (Gentry-Halevi-
   Lyubashevsky 2022; the approach ACORN uses). The prover commits ``H``-side copies ``D_k``
   of the rows, the slack on both sides (``C_s``, ``D_s``) and a mask ``y`` in ``[-S, S)^m``
   (``C_y``), ``m = 128``. A hash of all of it seeds ``R`` in ``{-1,0,1}^(m x (d+16))``
   (``P(0) = 1/2``). The prover sends ``z = R v + y`` in the clear, restarting with a fresh
   ``y`` unless every ``|z_j| <= S - U`` (rejection sampling: accepted ``z`` is uniform, so it
   says nothing about ``v``; ``U = isqrt((d+16) * bound) + 1`` bounds ``|<R_j, v>|``;
   ``S = U * 2^10``, about 12% restarts). Lemma (GHL22): for any fixed ``v`` with some
   ``|v_i| > 2(S-U)`` (centred mod p) and any fixed shift ``y_j``,
   ``P_R[|<R_j, v> + y_j| <= S - U] <= 1/2``; the rows are independent, so a prover with such
   a ``v`` passes with probability ``<= 2^-128`` per attempt. Hence ``|v_i| < 2^57`` for all
   ``i`` (every position of the ``a`` rows and the whole slack row: at most ``2^25``),
   ``sum v_i^2 < 2^25 * 2^114 < p / 2``, and the field equality
   ``|x|^2 + |s|^2 = bound`` (both sides in ``[0, p/2)``) holds over the integers, so
   ``|x|^2 <= bound``.
3. *One inner product.* With challenges ``zeta`` (128-bit, ``m``), ``theta`` (128-bit, ``b``),
   ``eta, gamma, delta`` and ``w_k = sum_j zeta_j R_j^(k)`` (the JL rows cut to row ``k``)::

       l(e) = sum_k e^k (L_k - delta eta^k theta) + e^(a+2) y + e^(a+3) s_L
       r(e) = sum_k e^-k (R_k + gamma w_k + delta eta^k theta) + e^-(a+2) gamma zeta + e^-(a+4) s_R

   (``k = 1..a+1``; row ``a+1`` is the slack; ``L_k``/``R_k`` are the ``G``-/``H``-side
   openings, equal for an honest prover; ``s_L, s_R`` are uniform blinding rows). The
   constant term of ``<l(e), r(e)>`` is
   ``sum <L_k, R_k> + gamma (sum <L_k, w_k> + <y, zeta>) + delta sum eta^k <L_k - R_k, theta>``
   minus public terms, which an honest prover makes equal to the public
   ``bound + gamma <zeta, z> - delta gamma sum eta^k <theta, w_k> - delta^2 |theta|^2 sum eta^2k``.
   The prover commits every other coefficient (``T_s``, ``s`` in ``[-(a+3), a+2] \\ {0}``),
   receives ``e`` and runs the logarithmic inner-product argument on ``l(e), r(e)``
   (length ``b``). By Schwartz-Zippel in ``e`` the constant term is right; in ``delta``, the
   ``H``-side rows equal the ``G``-side rows (``theta`` random after both are fixed); in
   ``gamma``, all ``m`` JL equations hold (``zeta`` random, error ``2^-128``); what is left is
   ``|x|^2 + |s|^2 = bound``.

Security: computational knowledge soundness under discrete log in G1, with SHA-256/SHAKE-256
as random oracles (Fiat-Shamir); honest-verifier zero knowledge (``l(e), r(e)`` are uniform
through ``s_L, s_R``; commitments hide; ``z`` is uniform by rejection sampling). The
transcript absorbs a domain label, ``context`` (client id, session id, round:
:func:`make_context`), the parameters, ``bound``, every row commitment and every prover
message, so a proof does not verify under another context or commitment (IV-08). A cheating
client can still submit *any* vector within the bound: this proves a norm bound, not that the
update is honest.

Binding to the masked upload: the row commitments add homomorphically (:meth:`Commitment.__add__`)
and :func:`check_opening` checks, after unmasking, that the sum of the included clients'
commitments opens to the unmasked sum with the summed blinding factors.
"""

from __future__ import annotations

import hashlib
import math
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from py_arkworks_bls12381 import G1Point, Scalar

from secagg._errors import EncodingError, SecAggError
from secagg._rng import RandomSource

__all__ = [
    "FIELD_ORDER",
    "JL_ROWS",
    "MAX_BOUND_BITS",
    "MAX_COORD_BITS",
    "MAX_DIM",
    "Commitment",
    "InvalidProof",
    "NormProof",
    "Opening",
    "check_opening",
    "commit",
    "layout",
    "make_context",
    "num_rows",
    "prove_norm",
    "verify_norm",
]

#: BLS12-381 scalar-field order (the order of G1).
P = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
FIELD_ORDER = P
JL_ROWS = 128  # m: soundness 2^-128 for the approximate range proof
SLACK_LEN = 16  # greedy squares need at most 10 entries below 2^64
REJECTION_BITS = 10  # S = U * 2^10
MAX_BOUND_BITS = 64
MAX_COORD_BITS = 31  # |x_i| < 2^31
MAX_DIM = 1 << 24
TARGET_ROWS = 32
MIN_ROW_LEN = 128  # >= JL_ROWS and SLACK_LEN: the mask and the slack each fit in one row
MAX_ATTEMPTS = 64
_LIMB = 16
_MASK16 = (1 << _LIMB) - 1
_POINT = 48
_SCALAR = 32
_LABEL = b"secagg/v1/verify/norm-rows"
_DST = b"SECAGG-V1-VERIFY-GENERATORS_BLS12381G1_XMD:SHA-256_SSWU_RO_"
_MAGIC = b"SNR1"
_HEADER = struct.Struct(">4sIIIHHB")  # magic, d, a, b, m, slack, IPA rounds

I64 = npt.NDArray[np.int64]


class InvalidProof(SecAggError, ValueError):
    """A norm proof, commitment or opening is malformed or does not verify."""


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
    return int.from_bytes(rng.bytes(64), "big") % P


def _centred(v: int) -> int:
    v %= P
    return v - P if v > P // 2 else v


def _inv(v: int) -> int:
    return pow(v, P - 2, P)


def _ip(a: Sequence[int], b: Sequence[int]) -> int:
    return sum(x * y for x, y in zip(a, b, strict=True)) % P


class _Transcript:
    """SHA-256 Fiat-Shamir transcript with length-prefixed, labelled absorbs."""

    def __init__(self, context: bytes) -> None:
        self._h = hashlib.sha256(_LABEL)
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
        """A non-zero field element (512 bits reduced mod p: bias below 2^-256)."""
        for ctr in range(256):
            v = int.from_bytes(self.challenge_bytes(label + bytes([ctr]), 64), "big") % P
            if v:
                return v
        raise AssertionError("unreachable")  # pragma: no cover


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


_POW16 = np.array([1 << (_LIMB * j) for j in range(64)], dtype=object)


def _recombine(mat: npt.NDArray[Any]) -> list[int]:
    """Rows of a limb matrix (int64 or float64 holding exact integers) as ints mod p."""
    m = np.rint(mat).astype(np.int64) if mat.dtype != np.int64 else mat
    vals = m.astype(object).dot(_POW16[: m.shape[1]])
    return [int(v) % P for v in vals]


def _gram(x: I64, y: I64) -> I64:
    """Exact ``x.T @ y`` for limb matrices (float64 BLAS; exact by the bounds above)."""
    return np.rint(x.T.astype(np.float64) @ y.astype(np.float64)).astype(np.int64)


def _fold(x: I64, coefs: Sequence[int]) -> list[int]:
    """``x @ coefs`` mod p for a limb matrix ``x`` (b x c) and field coefficients (c)."""
    prod = x.astype(np.float64) @ _field_limbs(coefs).astype(np.float64)
    return _recombine(prod)


# ----------------------------------------------------------------------------- public types


def layout(d: int) -> tuple[int, int]:
    """``(a, b)``: ``a`` rows of ``b`` coordinates (``b`` a power of two, ``a <= 32 + 1``)."""
    if not 1 <= d <= MAX_DIM:
        raise EncodingError(f"dimension must be in [1, {MAX_DIM}]")
    want = -(-d // TARGET_ROWS)
    b = max(MIN_ROW_LEN, 1 << (want - 1).bit_length())
    return -(-d // b), b


def num_rows(d: int) -> int:
    """How many row commitments (and blinding factors) a length-``d`` vector has."""
    return layout(d)[0]


@dataclass(frozen=True, slots=True)
class Commitment:
    """Row commitments ``C_k = <M_k, G> + rho_k*H0`` of a length-``d`` integer vector."""

    points: tuple[Any, ...]
    d: int

    def __post_init__(self) -> None:
        if len(self.points) != num_rows(self.d):
            raise InvalidProof("wrong number of row commitments for the dimension")

    @property
    def rows(self) -> int:
        """Number of row commitments."""
        return len(self.points)

    def to_bytes(self) -> bytes:
        """``d`` (4 bytes, big-endian) then the compressed row points (48 bytes each)."""
        return self.d.to_bytes(4, "big") + b"".join(_pt_bytes(p) for p in self.points)

    @classmethod
    def from_bytes(cls, data: bytes) -> Commitment:
        """Parse :meth:`to_bytes`; raises :class:`InvalidProof` on any malformation."""
        if len(data) < 4:
            raise InvalidProof("commitment too short")
        d = int.from_bytes(data[:4], "big")
        if not 1 <= d <= MAX_DIM:
            raise InvalidProof("commitment dimension out of range")
        a = num_rows(d)
        if len(data) != 4 + a * _POINT:
            raise InvalidProof("commitment has the wrong length")
        pts = tuple(_pt_from(data[4 + i * _POINT : 4 + (i + 1) * _POINT]) for i in range(a))
        return cls(pts, d)

    def __add__(self, other: Commitment) -> Commitment:
        """Homomorphic sum: commits to ``x + x'`` with blinding factors added row by row."""
        if self.d != other.d:
            raise InvalidProof("dimension mismatch")
        return Commitment(
            tuple(p + q for p, q in zip(self.points, other.points, strict=True)), self.d
        )


@dataclass(frozen=True, slots=True)
class Opening:
    """The secret opening of a :class:`Commitment` (never sent)."""

    x: I64
    blindings: tuple[int, ...]
    commitment: Commitment = field(repr=False)


@dataclass(frozen=True, slots=True)
class NormProof:
    """Norm-bound proof; see the module docstring for the messages."""

    d: int
    D: tuple[Any, ...]  # H-side row commitments
    Cs: Any
    Ds: Any
    Cy: Any
    SG: Any
    SH: Any
    z: tuple[int, ...]
    T: tuple[Any, ...]  # coefficient commitments, exponents -(a+3)..-1 then 1..a+2
    t_hat: int
    tau: int
    mu: int
    Ls: tuple[Any, ...]
    Rs: tuple[Any, ...]
    a_fin: int
    b_fin: int

    def to_bytes(self) -> bytes:
        """Header, points (compressed), ``z`` (8-byte signed), scalars (32-byte canonical)."""
        a, b = layout(self.d)
        head = _HEADER.pack(_MAGIC, self.d, a, b, JL_ROWS, SLACK_LEN, len(self.Ls))
        pts = [
            *self.D, self.Cs, self.Ds, self.Cy, self.SG, self.SH, *self.T, *self.Ls, *self.Rs,
        ]  # fmt: skip
        scs = [self.t_hat, self.tau, self.mu, self.a_fin, self.b_fin]
        return (
            head
            + b"".join(_pt_bytes(p) for p in pts)
            + b"".join(v.to_bytes(8, "big", signed=True) for v in self.z)
            + b"".join(s.to_bytes(_SCALAR, "big") for s in scs)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> NormProof:
        """Parse :meth:`to_bytes` with exact size checks; raises :class:`InvalidProof`."""
        if len(data) < _HEADER.size:
            raise InvalidProof("proof too short")
        magic, d, a, b, m, ell, rounds = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise InvalidProof("bad proof magic")
        if not 1 <= d <= MAX_DIM or (a, b) != layout(d):
            raise InvalidProof("proof layout does not match its dimension")
        if (m, ell, rounds) != (JL_ROWS, SLACK_LEN, b.bit_length() - 1):
            raise InvalidProof("proof parameters out of range")
        nt = 2 * a + 5
        npts = a + 5 + nt + 2 * rounds
        if len(data) != _HEADER.size + npts * _POINT + 8 * m + 5 * _SCALAR:
            raise InvalidProof("proof has the wrong length")
        off = _HEADER.size
        pts = [_pt_from(data[off + i * _POINT : off + (i + 1) * _POINT]) for i in range(npts)]
        off += npts * _POINT
        z = tuple(
            int.from_bytes(data[off + 8 * j : off + 8 * (j + 1)], "big", signed=True)
            for j in range(m)
        )
        off += 8 * m
        scs = [_sc_from(data[off + i * _SCALAR : off + (i + 1) * _SCALAR]) for i in range(5)]
        q = a + 5
        return cls(
            d, tuple(pts[:a]), pts[a], pts[a + 1], pts[a + 2], pts[a + 3], pts[a + 4], z,
            tuple(pts[q : q + nt]), scs[0], scs[1], scs[2],
            tuple(pts[q + nt : q + nt + rounds]), tuple(pts[q + nt + rounds :]), scs[3], scs[4],
        )  # fmt: skip


def make_context(client_id: int, session_id: bytes, round_: int) -> bytes:
    """Canonical Fiat-Shamir context binding a proof to (client id, session id, round)."""
    if not (0 <= client_id < 1 << 64 and 0 <= round_ < 1 << 64):
        raise EncodingError("client id and round must fit in 64 bits")
    if len(session_id) > 1024:
        raise EncodingError("session id too long")
    return (
        b"secagg/v1/norm-context"
        + struct.pack(">QQH", client_id, round_, len(session_id))
        + bytes(session_id)
    )


# ----------------------------------------------------------------------------- shared pieces


def _as_vector(x: Sequence[int] | npt.NDArray[np.integer[Any]]) -> I64:
    if isinstance(x, np.ndarray):
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.integer):
            raise EncodingError("x must be a 1-D integer array")
        if x.dtype == np.uint64 and x.size and int(x.max()) >= 1 << 63:
            raise EncodingError(f"coordinates must be below 2^{MAX_COORD_BITS} in magnitude")
        v = x.astype(np.int64)
    else:
        if any(not isinstance(e, int | np.integer) or isinstance(e, bool) for e in x):
            raise EncodingError("x must contain integers")
        if any(abs(int(e)) >= 1 << MAX_COORD_BITS for e in x):
            raise EncodingError(f"coordinates must be below 2^{MAX_COORD_BITS} in magnitude")
        v = np.array([int(e) for e in x], dtype=np.int64)
    if not 1 <= v.shape[0] <= MAX_DIM:
        raise EncodingError(f"dimension must be in [1, {MAX_DIM}]")
    if v.size and int(np.max(np.abs(v))) >= 1 << MAX_COORD_BITS:
        raise EncodingError(f"coordinates must be below 2^{MAX_COORD_BITS} in magnitude")
    return v


def _rows(v: I64, a: int, b: int) -> I64:
    m = np.zeros(a * b, dtype=np.int64)
    m[: v.shape[0]] = v
    return m.reshape(a, b)


def _check_bound(bound: int) -> None:
    if not isinstance(bound, int) or not 0 <= bound < 1 << MAX_BOUND_BITS:
        raise EncodingError(f"bound must be an integer in [0, 2^{MAX_BOUND_BITS})")


def _mask_range(d: int, bound: int) -> tuple[int, int]:
    """``(U, S)``: ``|<R_j, v>| <= U`` for honest ``v``; masks are uniform in ``[-S, S)``."""
    u = math.isqrt((d + SLACK_LEN) * bound) + 1
    return u, u << REJECTION_BITS


def _slack(n: int) -> list[int]:
    """Integers whose squares sum to ``n`` (greedy; at most 10 for ``n < 2^64``)."""
    out: list[int] = []
    while n:
        s = math.isqrt(n)
        out.append(s)
        n -= s * s
    if len(out) > SLACK_LEN:  # pragma: no cover - impossible below 2^64
        raise AssertionError("slack too long")
    return out + [0] * (SLACK_LEN - len(out))


_TRITS = np.array([0, 1, -1, 0], dtype=np.int8)


def _jl_block(seed: bytes, k: int, cols: int) -> npt.NDArray[np.int8]:
    """JL block ``k`` (``m x cols``): entries 0 w.p. 1/2, +-1 w.p. 1/4 (AES-CTR keystream)."""
    key = hashlib.sha256(b"secagg/v1/verify/jl" + seed + k.to_bytes(4, "big")).digest()[:16]
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    raw = np.frombuffer(enc.update(bytes(JL_ROWS * cols // 4)), dtype=np.uint8)
    two = np.stack([(raw >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(JL_ROWS, cols)
    return _TRITS[two]


def _statement(tr: _Transcript, d: int, a: int, b: int, bound: int, rows: Sequence[Any]) -> None:
    tr.absorb(
        b"params",
        struct.pack(">IIIHHB", d, a, b, JL_ROWS, SLACK_LEN, REJECTION_BITS)
        + bound.to_bytes(8, "big"),
    )
    tr.absorb(b"C", b"".join(_pt_bytes(p) for p in rows))


def _first_message(tr: _Transcript, msg: Sequence[Any]) -> bytes:
    tr.absorb(b"D", b"".join(_pt_bytes(p) for p in msg))
    return tr.challenge_bytes(b"jl", 32)


@dataclass(frozen=True, slots=True)
class _Challenges:
    zeta: I64  # m x 8 limbs
    theta: I64  # b x 8 limbs
    eta: int
    gamma: int
    delta: int


def _challenges(tr: _Transcript, z: Sequence[int], b: int) -> _Challenges:
    tr.absorb(b"z", b"".join(v.to_bytes(33, "big", signed=True) for v in z))
    zeta = _from_bytes_limbs(tr.challenge_bytes(b"zeta", 16 * JL_ROWS), JL_ROWS, 8)
    theta = _from_bytes_limbs(tr.challenge_bytes(b"theta", 16 * b), b, 8)
    return _Challenges(
        zeta, theta, tr.challenge(b"eta"), tr.challenge(b"gamma"), tr.challenge(b"delta")
    )


def _w_blocks(seed: bytes, a: int, b: int, zeta: I64) -> list[I64]:
    """``w_k = R^(k)T zeta`` as 10-limb matrices (``b`` rows), ``k = 0..a`` (``a``: slack)."""
    zf = zeta.astype(np.float64)
    out = []
    for k in range(a + 1):
        # The slack row is projected over all b columns, so a cheater cannot hide large
        # values in the slack row's unused positions (they would enter the norm unchecked).
        blk = _jl_block(seed, k, b).astype(np.float64)
        w = np.rint(blk.T @ zf).astype(np.int64)
        out.append(_normalise(w, 10))
    return out


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


def _public_theta_terms(w: Sequence[I64], ch: _Challenges) -> tuple[list[int], int]:
    """``<theta, w_k>`` for every k and ``|theta|^2`` (public)."""
    th = ch.theta
    cols = np.concatenate([th, *w], axis=1)
    g = _gram(th, cols)
    tw = [_ip_blocks(g, 0, 8, 8 + 10 * k, 10) for k in range(len(w))]
    tt = _ip_blocks(g, 0, 8, 0, 8)
    return tw, tt


def _t0_public(bound: int, z: Sequence[int], a: int, w: Sequence[I64], ch: _Challenges) -> int:
    """The constant coefficient an honest prover's ``<l(e), r(e)>`` has (module docstring)."""
    tw, tt = _public_theta_terms(w, ch)
    zeta_vals = _recombine(ch.zeta)
    zz = sum(zj * v for zj, v in zip(zeta_vals, z, strict=True))
    eta_k = [pow(ch.eta, k, P) for k in range(1, a + 2)]
    s1 = sum(ek * t for ek, t in zip(eta_k, tw, strict=True))
    s2 = sum(ek * ek for ek in eta_k)
    return (bound + ch.gamma * zz - ch.delta * ch.gamma * s1 - ch.delta * ch.delta * tt * s2) % P


def _public_vectors(
    a: int, b: int, e: int, w: Sequence[I64], ch: _Challenges
) -> tuple[list[int], list[int]]:
    """The public parts of ``l(e)`` (G side) and ``r(e)`` (H side), one field element each."""
    ei = _inv(e)
    eta_k = [pow(ch.eta, k, P) for k in range(1, a + 2)]
    cg = -ch.delta * sum(pow(e, k + 1, P) * ek for k, ek in enumerate(eta_k)) % P
    theta_vals = _recombine(ch.theta)
    pub_g = [cg * t % P for t in theta_vals]
    # H side: sum_k e^-k (gamma w_k + delta eta^k theta) + e^-(a+2) gamma zeta
    cols = [np.concatenate(list(w), axis=1), ch.theta, _pad(ch.zeta, b)]
    coefs: list[int] = []
    for k in range(a + 1):
        c = ch.gamma * pow(ei, k + 1, P) % P
        coefs.extend(c << (_LIMB * j) for j in range(10))
    ct = ch.delta * sum(pow(ei, k + 1, P) * ek for k, ek in enumerate(eta_k)) % P
    coefs.extend(ct << (_LIMB * j) for j in range(8))
    cz = ch.gamma * pow(ei, a + 2, P) % P
    coefs.extend(cz << (_LIMB * j) for j in range(8))
    pub_h = _fold(np.concatenate(cols, axis=1), coefs)
    return pub_g, pub_h


def _exponents(a: int) -> list[int]:
    return [*range(-(a + 3), 0), *range(1, a + 3)]


# ----------------------------------------------------------------------------- API


def commit(
    x: Sequence[int] | npt.NDArray[np.integer[Any]], rng: RandomSource
) -> tuple[Commitment, Opening]:
    """Commit to the signed integer vector ``x`` (``|x_i| < 2^31``), one point per row."""
    v = _as_vector(x)
    a, b = layout(v.shape[0])
    rows = _rows(v, a, b)
    h0 = _base(b"H0")
    blind = tuple(_rand(rng) for _ in range(a))
    pts = tuple(_msm_small(b"G", rows[k].tolist(), h0, blind[k]) for k in range(a))
    c = Commitment(pts, v.shape[0])
    return c, Opening(v, blind, c)


def check_opening(
    commitment: Commitment,
    x_sum: Sequence[int] | npt.NDArray[np.integer[Any]],
    blindings_sum: Sequence[int],
) -> None:
    """Raise :class:`InvalidProof` unless ``commitment`` opens to ``x_sum`` with those blindings.

    One multi-scalar multiplication: the rows are combined with powers of a hash of every
    input, so a mismatch in any row survives except with probability ``a / p``.
    """
    try:
        v = np.asarray(x_sum, dtype=np.int64)
    except (OverflowError, TypeError, ValueError) as exc:
        raise InvalidProof("the unmasked sum must be a vector of 64-bit integers") from exc
    if v.ndim != 1 or v.shape[0] != commitment.d:
        raise InvalidProof("opening has the wrong dimension")
    if v.size and int(np.max(np.abs(v))) >= 1 << 62:
        raise InvalidProof("sum coordinates must be below 2^62 in magnitude")
    a, b = layout(commitment.d)
    if len(blindings_sum) != a or any(not isinstance(r, int) for r in blindings_sum):
        raise InvalidProof("need one integer blinding factor per row")
    h = hashlib.sha256(b"secagg/v1/verify/open")
    h.update(commitment.to_bytes())
    h.update(v.astype(">i8").tobytes())
    h.update(b"".join((r % P).to_bytes(32, "big") for r in blindings_sum))
    beta = int.from_bytes(h.digest(), "big") % P or 1
    pw = [pow(beta, k, P) for k in range(a)]
    rows = _rows(v, a, b)
    limbs = np.concatenate([_split(rows[k], 4) for k in range(a)], axis=1)
    cols = _fold(limbs, [p << (_LIMB * j) for p in pw for j in range(4)])
    rsum = sum(p * r for p, r in zip(pw, blindings_sum, strict=True))
    pts = [*commitment.points, *_gens(b"G", b), _base(b"H0")]
    scs = [*(P - p for p in pw), *cols, rsum]
    if _msm(pts, scs) != G1Point.identity():
        raise InvalidProof("the commitments do not open to the unmasked sum")


def prove_norm(opening: Opening, bound: int, context: bytes, rng: RandomSource) -> NormProof:
    """Prove ``sum x_i^2 <= bound`` for the vector committed in ``opening.commitment``.

    Raises :class:`EncodingError` if the vector breaks the bound (an honest prover never
    produces a proof that would fail).
    """
    _check_bound(bound)
    v = _as_vector(opening.x)
    norm2 = sum(int(t) * int(t) for t in v.tolist())
    if norm2 > bound:
        raise EncodingError("squared L2 norm exceeds the bound")
    return _prove(v, opening, bound, context, rng, _slack(bound - norm2))


def _prove(
    v: I64,
    opening: Opening,
    bound: int,
    context: bytes,
    rng: RandomSource,
    slack: Sequence[int],
    *,
    force: bool = False,
) -> NormProof:
    """The prover without honesty checks (tests pass a forged ``slack`` to build cheats).

    ``force`` (tests only) keeps the last ``z`` when rejection sampling never accepts.
    """
    d = v.shape[0]
    a, b = layout(d)
    rows = _rows(v, a, b)
    g, h, h0, ut, ui = _gens(b"G", b), _gens(b"H", b), _base(b"H0"), _base(b"Ut"), _base(b"Ui")
    big_u, big_s = _mask_range(d, bound)
    rho = list(opening.blindings)

    # H-side rows, slack on both sides, blinding rows: fixed across rejection attempts.
    sig = [_rand(rng) for _ in range(a)]
    big_d = [_msm_small(b"H", rows[k].tolist(), h0, sig[k]) for k in range(a)]
    s_vec = [int(t) % P for t in slack]  # honest: SLACK_LEN entries; a forger may use up to b
    rho_s, sig_s = _rand(rng), _rand(rng)
    c_s = _msm_small(b"G", s_vec, h0, rho_s)
    d_s = _msm_small(b"H", s_vec, h0, sig_s)
    s_l = [_rand(rng) for _ in range(b)]
    s_r = [_rand(rng) for _ in range(b)]
    rho_l, sig_r = _rand(rng), _rand(rng)
    s_g = _msm([*g, h0], [*s_l, rho_l])
    s_h = _msm([*h, h0], [*s_r, sig_r])

    for _ in range(MAX_ATTEMPTS):
        y = [int.from_bytes(rng.bytes(8), "big") % (2 * big_s) - big_s for _ in range(JL_ROWS)]
        rho_y = _rand(rng)
        c_y = _msm_small(b"G", y, h0, rho_y)
        tr = _Transcript(context)
        _statement(tr, d, a, b, bound, opening.commitment.points)
        seed = _first_message(tr, [*big_d, c_s, d_s, c_y, s_g, s_h])
        rv = np.zeros(JL_ROWS, dtype=np.int64)
        for k in range(a):
            blk = _jl_block(seed, k, b).astype(np.float64)
            rv += np.rint(blk @ rows[k].astype(np.float64)).astype(np.int64)
        rs = _jl_block(seed, a, b)[:, : len(s_vec)].astype(np.int64)
        rv_list = [int(t) for t in rv.tolist()]
        rs_list = [
            sum(int(c) * s for c, s in zip(rs[j].tolist(), s_vec, strict=True))
            for j in range(JL_ROWS)
        ]
        z = [_centred(r1 + r2 + yj) for r1, r2, yj in zip(rv_list, rs_list, y, strict=True)]
        if all(abs(zj) <= big_s - big_u for zj in z):
            break
    else:  # an honest prover gets here with probability about 0.12^64
        if not force:
            raise EncodingError("rejection sampling did not accept (is the slack forged?)")

    ch = _challenges(tr, z, b)
    w = _w_blocks(seed, a, b, ch.zeta)

    # Limb columns. G side: rows (2 limbs), slack (16: any field element), y (4), theta (8),
    # s_L (16). H side: rows (2), slack (16), w_0..w_a (10 each), theta (8), zeta (8), s_R (16).
    row_l = [_split(rows[k], 2) for k in range(a)]
    slack_l = _pad(_field_limbs(s_vec), b)
    y_l = _pad(_split(np.array(y, dtype=np.int64), 4), b)
    sl_l, sr_l = _field_limbs(s_l), _field_limbs(s_r)
    theta, zeta = ch.theta, _pad(ch.zeta, b)
    gx = [*row_l, slack_l, y_l, theta, sl_l]
    hy = [*row_l, slack_l, *w, theta, zeta, sr_l]
    gram = _gram(np.concatenate(gx, axis=1), np.concatenate(hy, axis=1))
    gofs = np.cumsum([0, *(m.shape[1] for m in gx)]).tolist()
    hofs = np.cumsum([0, *(m.shape[1] for m in hy)]).tolist()

    # Terms: (exponent, [(coef, block index, side)]).
    eta_k = [pow(ch.eta, k, P) for k in range(1, a + 2)]
    gi_theta, gi_y, gi_sl = a + 2, a + 1, a + 3
    hi_w0, hi_theta, hi_zeta, hi_sr = a + 1, 2 * a + 2, 2 * a + 3, 2 * a + 4
    l_terms: list[tuple[int, list[tuple[int, int]]]] = []
    r_terms: list[tuple[int, list[tuple[int, int]]]] = []
    for k in range(a + 1):  # data rows 0..a-1 and the slack row a
        l_terms.append((k + 1, [(1, k), (-ch.delta * eta_k[k] % P, gi_theta)]))
        r_terms.append(
            (-(k + 1), [(1, k), (ch.gamma, hi_w0 + k), (ch.delta * eta_k[k] % P, hi_theta)])
        )
    l_terms.append((a + 2, [(1, gi_y)]))
    l_terms.append((a + 3, [(1, gi_sl)]))
    r_terms.append((-(a + 2), [(ch.gamma, hi_zeta)]))
    r_terms.append((-(a + 4), [(1, hi_sr)]))

    cache: dict[tuple[int, int], int] = {}

    def ip(gb: int, hb: int) -> int:
        key = (gb, hb)
        if key not in cache:
            cache[key] = _ip_blocks(
                gram, gofs[gb], gofs[gb + 1] - gofs[gb], hofs[hb], hofs[hb + 1] - hofs[hb]
            )
        return cache[key]

    coeff: dict[int, int] = {}
    for el, lt in l_terms:
        for er, rt in r_terms:
            acc = 0
            for c1, gb in lt:
                for c2, hb in rt:
                    acc += c1 * c2 * ip(gb, hb)
            coeff[el + er] = (coeff.get(el + er, 0) + acc) % P
    exps = _exponents(a)
    taus = {s: _rand(rng) for s in exps}
    big_t = [_msm([ut, h0], [coeff.get(s, 0), taus[s]]) for s in exps]
    tr.absorb(b"T", b"".join(_pt_bytes(p) for p in big_t))
    e = tr.challenge(b"e")
    ei = _inv(e)

    # l(e), r(e) as field vectors.
    gcoef = [0] * len(gx)
    for el, lt in l_terms:
        ee = pow(e, el, P) if el > 0 else pow(ei, -el, P)
        for c, gb in lt:
            gcoef[gb] = (gcoef[gb] + ee * c) % P
    hcoef = [0] * len(hy)
    for er, rt in r_terms:
        ee = pow(e, er, P) if er > 0 else pow(ei, -er, P)
        for c, hb in rt:
            hcoef[hb] = (hcoef[hb] + ee * c) % P
    gexp = [c << (_LIMB * j) for c, m in zip(gcoef, gx, strict=True) for j in range(m.shape[1])]
    hexp = [c << (_LIMB * j) for c, m in zip(hcoef, hy, strict=True) for j in range(m.shape[1])]
    l_vec = _fold(np.concatenate(gx, axis=1), gexp)
    r_vec = _fold(np.concatenate(hy, axis=1), hexp)
    t_hat = _ip(l_vec, r_vec)
    tau = sum((pow(e, s, P) if s > 0 else pow(ei, -s, P)) * taus[s] for s in exps) % P
    mu = (
        sum(pow(e, k + 1, P) * rho[k] for k in range(a))
        + pow(e, a + 1, P) * rho_s
        + pow(e, a + 2, P) * rho_y
        + pow(e, a + 3, P) * rho_l
        + sum(pow(ei, k + 1, P) * sig[k] for k in range(a))
        + pow(ei, a + 1, P) * sig_s
        + pow(ei, a + 4, P) * sig_r
    ) % P
    tr.absorb(b"scalars", b"".join(val.to_bytes(32, "big") for val in (t_hat, tau, mu)))
    u0 = tr.challenge(b"u")
    ls, rs_, a_fin, b_fin = _ipa_prove(tr, g, h, _msm([ui], [u0]), l_vec, r_vec)
    return NormProof(
        d, tuple(big_d), c_s, d_s, c_y, s_g, s_h, tuple(z), tuple(big_t), t_hat, tau, mu,
        ls, rs_, a_fin, b_fin,
    )  # fmt: skip


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


def verify_norm(commitment: Commitment, proof: NormProof, bound: int, context: bytes) -> None:
    """Return if ``proof`` shows the committed vector has ``sum x_i^2 <= bound``; else raise.

    Raises :class:`InvalidProof` if the proof is malformed, was made for other parameters, a
    different commitment or context, or does not verify.
    """
    try:
        _check_bound(bound)
    except EncodingError as exc:
        raise InvalidProof(str(exc)) from exc
    d = commitment.d
    if proof.d != d:
        raise InvalidProof("proof dimension does not match the commitment")
    a, b = layout(d)
    rounds = b.bit_length() - 1
    if (
        len(proof.D) != a
        or len(proof.T) != 2 * a + 5
        or len(proof.Ls) != rounds
        or len(proof.Rs) != rounds
        or len(proof.z) != JL_ROWS
    ):
        raise InvalidProof("proof has the wrong shape")
    for val in (proof.t_hat, proof.tau, proof.mu, proof.a_fin, proof.b_fin):
        if not 0 <= val < P:
            raise InvalidProof("non-canonical scalar")
    big_u, big_s = _mask_range(d, bound)
    if any(abs(zj) > big_s - big_u for zj in proof.z):
        raise InvalidProof("projection outside the accepted range (vector too long)")
    g, h, h0, ut, ui = _gens(b"G", b), _gens(b"H", b), _base(b"H0"), _base(b"Ut"), _base(b"Ui")

    tr = _Transcript(context)
    _statement(tr, d, a, b, bound, commitment.points)
    seed = _first_message(tr, [*proof.D, proof.Cs, proof.Ds, proof.Cy, proof.SG, proof.SH])
    ch = _challenges(tr, proof.z, b)
    w = _w_blocks(seed, a, b, ch.zeta)
    tr.absorb(b"T", b"".join(_pt_bytes(p) for p in proof.T))
    e = tr.challenge(b"e")
    ei = _inv(e)
    tr.absorb(
        b"scalars", b"".join(val.to_bytes(32, "big") for val in (proof.t_hat, proof.tau, proof.mu))
    )
    u0 = tr.challenge(b"u")
    us: list[int] = []
    for big_l, big_r in zip(proof.Ls, proof.Rs, strict=True):
        tr.absorb(b"L", _pt_bytes(big_l))
        tr.absorb(b"R", _pt_bytes(big_r))
        us.append(tr.challenge(b"ipa"))
    weight = tr.challenge(b"batch")

    # (1) t_hat Ut + tau H0 == t0 Ut + sum_s e^s T_s
    t0 = _t0_public(bound, proof.z, a, w, ch)
    exps = _exponents(a)
    epow = [pow(e, s, P) if s > 0 else pow(ei, -s, P) for s in exps]
    # (2) IPA: P + t_hat U' + sum(u^2 L + u^-2 R) == a s G + b s^-1 H + a b U'
    pub_g, pub_h = _public_vectors(a, b, e, w, ch)
    sg = [1]
    for u in us:
        uinv = _inv(u)
        sg = [val for s in sg for val in (s * uinv % P, s * u % P)]
    sg_inv = list(reversed(sg))
    coef_g = [(pg - proof.a_fin * s) % P for pg, s in zip(pub_g, sg, strict=True)]
    coef_h = [(ph - proof.b_fin * s) % P for ph, s in zip(pub_h, sg_inv, strict=True)]
    ab = proof.a_fin * proof.b_fin % P
    pts = [
        *commitment.points, proof.Cs, proof.Cy, proof.SG, *proof.D, proof.Ds, proof.SH,
        h0, ui, *proof.Ls, *proof.Rs, *g, *h, ut, *proof.T,
    ]  # fmt: skip
    scs = [
        *(pow(e, k + 1, P) for k in range(a)),
        pow(e, a + 1, P),
        pow(e, a + 2, P),
        pow(e, a + 3, P),
        *(pow(ei, k + 1, P) for k in range(a)),
        pow(ei, a + 1, P),
        pow(ei, a + 4, P),
        (-proof.mu + weight * proof.tau) % P,
        u0 * (proof.t_hat - ab) % P,
        *(u * u % P for u in us),
        *(_inv(u * u % P) for u in us),
        *coef_g,
        *coef_h,
        weight * (proof.t_hat - t0) % P,
        *(-weight * ep % P for ep in epow),
    ]
    if _msm(pts, scs) != G1Point.identity():
        raise InvalidProof("norm proof does not verify")
