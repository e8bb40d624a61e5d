"""Pedersen row commitments over BLS12-381 G1 and a zero-knowledge L2-norm-bound proof, with
an optional upload-consistency relation (``secagg/SPEC.md`` D11, D12).

Statement of :func:`prove_norm` (public: the row commitments ``C_1..C_a``, ``d``, ``bound``,
``context`` and, with a :class:`CheckStatement`, the consistency data)::

    C_k = <M_k, G> + rho_k H0  (k = 1..a)                              (opening, G side only)
    sum_i x_i^2 <= bound                                               (over the integers)
    R x + 2^W q + M = Y   with  C_M = <M, G[:J]> + rho_M H0,  q small   (consistency, optional)

``x`` (length ``d``, signed integers) is laid out row by row in an ``a x b`` matrix ``M``
(``b`` a power of two, the last row zero-padded). ``R`` is the public ``J x d`` binary Toeplitz
matrix of :class:`~secagg.verify.projection.Projection`, ``Y`` the projection of the client's
masked upload and ``C_M`` the commitment to the projection of its masks that the server
assembles from the client's claims (SPEC.md D12). ``G = (G_0..G_{b-1})``, ``H``, ``H0``,
``Ut``, ``Ui`` are independent hash-to-curve generators.

The argument is Bulletproofs' (Bunz et al., S&P 2018): vector polynomials ``l(X)``, ``r(X)``
whose constant coefficient of ``<l(X), r(X)>`` carries every relation (Section 4.1 and the
arithmetic-circuit protocol of Section 5.3, here with Laurent polynomials as in Bootle et al.,
EUROCRYPT 2016), commitments ``T_s`` to every other coefficient, and the logarithmic
inner-product argument (Section 3, Protocol 2). Rows are folded with powers ``X^k`` on the G
side and ``X^-k`` on the H side, so every full-width scalar operation runs on vectors of
length ``b ~ d / 32`` and everything of size ``d`` is small-scalar or exact integer algebra.
Small coordinates, needed so that the field equations are integer equations, come from the
approximate range proof of Gentry, Halevi and Lyubashevsky (EUROCRYPT 2022, Lemma 2.9), the
route ACORN (USENIX Security 2023) uses: a random ``{-1,0,1}`` projection ``z = R' v + mu``
revealed after rejection sampling. The exponent table, the verifier equations and the
knowledge-soundness argument (which deviation each term excludes, and an extractor sketch)
are in ``threat_models/verification.md``; the slot table :func:`_terms` is the single source
both prover and verifier use.

Security: computational knowledge soundness under discrete log in G1 with SHA-256/SHAKE-256
as random oracles; honest-verifier zero knowledge made non-interactive (blinding rows ``s_L``,
``s_R``; hiding commitments; ``z`` uniform by rejection sampling; every uniform value is
drawn by rejection, never by a modular reduction). The transcript absorbs a domain label, the
``context`` (client id, session, round), every parameter, ``bound``, every commitment and
every prover message. A cheating client can still commit to *any* vector within the bound.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from py_arkworks_bls12381 import G1Point

from secagg._errors import EncodingError
from secagg._rng import RandomSource
from secagg.verify._algebra import (
    _LIMB,
    _POINT,
    _SCALAR,
    FIELD_ORDER,
    I64,
    InvalidProof,
    P,
    _base,
    _field_limbs,
    _fold,
    _from_bytes_limbs,
    _gens,
    _gram,
    _inv,
    _ip,
    _ip_blocks,
    _ipa_prove,
    _limbs_needed,
    _msm,
    _msm_small,
    _normalise,
    _pad,
    _pt_bytes,
    _pt_from,
    _rand,
    _recombine,
    _sc_from,
    _split,
    _Transcript,
    _uniform_range,
)
from secagg.verify.projection import CHECK_ROWS, cut_limbs, projection_for

F64 = npt.NDArray[np.float64]

__all__ = [
    "CHECK_ROWS",
    "FIELD_ORDER",
    "JL_ROWS",
    "MAX_BOUND_BITS",
    "MAX_COORD_BITS",
    "MAX_DIM",
    "CheckStatement",
    "CheckWitness",
    "Commitment",
    "InvalidProof",
    "NormProof",
    "Opening",
    "check_opening",
    "commit",
    "commit_short",
    "layout",
    "make_context",
    "num_rows",
    "point_bytes",
    "point_from_bytes",
    "prove_norm",
    "verify_norm",
]

JL_ROWS = 128  # m: soundness 2^-128 for the approximate range proof
SLACK_LEN = 16  # greedy squares need at most 10 entries below 2^64
REJECTION_BITS = 10  # S = U * 2^10
MAX_BOUND_BITS = 64
MAX_COORD_BITS = 31  # |x_i| < 2^31
MAX_DIM = 1 << 24
TARGET_ROWS = 32
MIN_ROW_LEN = 128  # >= JL_ROWS, SLACK_LEN and CHECK_ROWS: each short vector fits one row
MAX_ATTEMPTS = 64
MAX_RING_BITS = 32
_LABEL = b"secagg/v2/verify/norm-rows"
_MAGIC = b"SNR2"
_HEADER = struct.Struct(">4sIIIHHBBB")  # magic, d, a, b, m, slack, IPA rounds, J, z bytes


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
class CheckStatement:
    """Public side of the consistency relation ``R x + 2^W q + M = Y`` (SPEC.md D12).

    ``seed`` fixes ``R`` (:class:`~secagg.verify.projection.Projection` of length ``d``);
    ``ring_bits`` is ``W``; ``y`` the ``J`` integers ``R y_u`` of the masked upload;
    ``masks`` the point ``C_M``; ``carry_bound`` a public bound on the carries of the masked
    sum (``|c_i| <= carry_bound``; the number of masks a client adds suffices).
    """

    seed: bytes
    ring_bits: int
    y: tuple[int, ...]
    masks: Any
    carry_bound: int

    def __post_init__(self) -> None:
        if not 1 <= self.ring_bits <= MAX_RING_BITS:
            raise InvalidProof("ring bits out of range")
        if len(self.y) != CHECK_ROWS or not 1 <= self.carry_bound < 1 << 32:
            raise InvalidProof("malformed consistency statement")
        if not 16 <= len(self.seed) <= 64:
            raise InvalidProof("projection seed must be 16..64 bytes")


@dataclass(frozen=True, slots=True)
class CheckWitness:
    """The prover's side of :class:`CheckStatement`: the opening of ``C_M``."""

    masks: tuple[int, ...]
    blinding: int


@dataclass(frozen=True, slots=True)
class NormProof:
    """Norm-bound proof; the messages are named after ``threat_models/verification.md``."""

    d: int
    D: tuple[Any, ...]  # H-side copies of the rows
    Cs: Any  # slack, G side
    Ds: Any  # slack, H side
    Cq: Any | None  # projected carries q (consistency only)
    Cmu: Any  # JL mask
    SG: Any
    SH: Any
    z: tuple[int, ...]
    T: tuple[Any, ...]  # coefficient commitments, in the order of _exponents
    t_hat: int
    tau: int
    mu: int
    Ls: tuple[Any, ...]
    Rs: tuple[Any, ...]
    a_fin: int
    b_fin: int
    z_bytes: int = 8

    @property
    def checked(self) -> bool:
        """Whether the proof carries the consistency relation."""
        return self.Cq is not None

    def _points(self) -> list[Any]:
        extra = [self.Cq] if self.Cq is not None else []
        return [
            *self.D, self.Cs, self.Ds, *extra, self.Cmu, self.SG, self.SH, *self.T,
            *self.Ls, *self.Rs,
        ]  # fmt: skip

    def to_bytes(self) -> bytes:
        """Header, points (compressed), ``z`` (signed, fixed width), scalars (32 bytes)."""
        a, b = layout(self.d)
        head = _HEADER.pack(
            _MAGIC, self.d, a, b, JL_ROWS, SLACK_LEN, len(self.Ls),
            CHECK_ROWS if self.checked else 0, self.z_bytes,
        )  # fmt: skip
        scs = [self.t_hat, self.tau, self.mu, self.a_fin, self.b_fin]
        return (
            head
            + b"".join(_pt_bytes(p) for p in self._points())
            + b"".join(v.to_bytes(self.z_bytes, "big", signed=True) for v in self.z)
            + b"".join(s.to_bytes(_SCALAR, "big") for s in scs)
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> NormProof:
        """Parse :meth:`to_bytes` with exact size checks; raises :class:`InvalidProof`."""
        if len(data) < _HEADER.size:
            raise InvalidProof("proof too short")
        magic, d, a, b, m, ell, rounds, j, zb = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise InvalidProof("bad proof magic")
        if not 1 <= d <= MAX_DIM or (a, b) != layout(d):
            raise InvalidProof("proof layout does not match its dimension")
        if (m, ell, rounds) != (JL_ROWS, SLACK_LEN, b.bit_length() - 1) or j not in (
            0,
            CHECK_ROWS,
        ):
            raise InvalidProof("proof parameters out of range")
        if not 1 <= zb <= 16:
            raise InvalidProof("projection width out of range")
        checked = j != 0
        nt = len(_exponents(a, checked))
        npts = a + 5 + int(checked) + nt + 2 * rounds
        if len(data) != _HEADER.size + npts * _POINT + zb * m + 5 * _SCALAR:
            raise InvalidProof("proof has the wrong length")
        off = _HEADER.size
        pts = [_pt_from(data[off + i * _POINT : off + (i + 1) * _POINT]) for i in range(npts)]
        off += npts * _POINT
        z = tuple(
            int.from_bytes(data[off + zb * i : off + zb * (i + 1)], "big", signed=True)
            for i in range(m)
        )
        off += zb * m
        scs = [_sc_from(data[off + i * _SCALAR : off + (i + 1) * _SCALAR]) for i in range(5)]
        it = iter(pts)
        big_d = tuple(next(it) for _ in range(a))
        c_s, d_s = next(it), next(it)
        c_q = next(it) if checked else None
        c_mu, s_g, s_h = next(it), next(it), next(it)
        big_t = tuple(next(it) for _ in range(nt))
        ls = tuple(next(it) for _ in range(rounds))
        rs = tuple(next(it) for _ in range(rounds))
        return cls(
            d, big_d, c_s, d_s, c_q, c_mu, s_g, s_h, z, big_t, scs[0], scs[1], scs[2], ls, rs,
            scs[3], scs[4], zb,
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


def _q_bound(d: int, check: CheckStatement | None) -> int:
    """A public bound on ``sum |q_j|`` for an honest prover: ``J * d * carry_bound``."""
    return 0 if check is None else CHECK_ROWS * d * check.carry_bound


def _mask_range(d: int, bound: int, check: CheckStatement | None = None) -> tuple[int, int]:
    """``(U, S)``: ``|<R'_j, v>| <= U`` for an honest ``v = (x, s, q)`` (Cauchy-Schwarz on
    ``(x, s)``, the L1 bound on ``q``); JL masks are uniform in ``[-S, S)``."""
    u = math.isqrt((d + SLACK_LEN) * bound) + 1 + _q_bound(d, check)
    return u, u << REJECTION_BITS


def _z_bytes(big_s: int) -> int:
    return (big_s.bit_length() + 8) // 8  # signed, |z| < S


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


def _statement(
    tr: _Transcript,
    d: int,
    a: int,
    b: int,
    bound: int,
    rows: Sequence[Any],
    check: CheckStatement | None,
) -> None:
    tr.absorb(
        b"params",
        struct.pack(">IIIHHBH", d, a, b, JL_ROWS, SLACK_LEN, REJECTION_BITS, CHECK_ROWS)
        + bound.to_bytes(8, "big"),
    )
    tr.absorb(b"C", b"".join(_pt_bytes(p) for p in rows))
    if check is None:
        tr.absorb(b"check", b"")
        return
    proj = projection_for(check.seed, d)
    tr.absorb(
        b"check",
        proj.digest
        + struct.pack(">BI", check.ring_bits, check.carry_bound)
        + b"".join(y.to_bytes(16, "big", signed=True) for y in check.y)
        + _pt_bytes(check.masks),
    )


def _first_message(tr: _Transcript, msg: Sequence[Any]) -> bytes:
    tr.absorb(b"first", b"".join(_pt_bytes(p) for p in msg))
    return tr.challenge_bytes(b"jl", 32)


@dataclass(frozen=True, slots=True)
class _Challenges:
    zeta: I64  # m x 8 limbs (128-bit entries)
    theta: I64  # b x 8 limbs
    eta: int
    gamma: int
    delta: int
    delta_h: int  # weight of the test that G-side commitments carry no H component
    zeta_c: I64 | None  # J x 8 limbs: batches the J consistency equations
    gamma_c: int


def _challenges(tr: _Transcript, z: Sequence[int], b: int, checked: bool) -> _Challenges:
    tr.absorb(b"z", b"".join(v.to_bytes(33, "big", signed=True) for v in z))
    zeta = _from_bytes_limbs(tr.challenge_bytes(b"zeta", 16 * JL_ROWS), JL_ROWS, 8)
    theta = _from_bytes_limbs(tr.challenge_bytes(b"theta", 16 * b), b, 8)
    eta, gamma, delta = tr.challenge(b"eta"), tr.challenge(b"gamma"), tr.challenge(b"delta")
    delta_h = tr.challenge(b"delta-h")
    zeta_c = None
    gamma_c = 0
    if checked:
        zeta_c = _from_bytes_limbs(tr.challenge_bytes(b"zeta-c", 16 * CHECK_ROWS), CHECK_ROWS, 8)
        gamma_c = tr.challenge(b"gamma-c")
    return _Challenges(zeta, theta, eta, gamma, delta, delta_h, zeta_c, gamma_c)


def _w_blocks(seed: bytes, count: int, b: int, zeta: I64) -> list[I64]:
    """``w_k = R'^(k)T zeta`` as 10-limb matrices (``b`` rows) for JL blocks ``0..count-1``.

    Every block covers all ``b`` positions of its row (the slack and carry rows too), so a
    cheater cannot hide large values in unused positions.
    """
    # float32 is exact here: |sum| <= JL_ROWS * 2^16 = 2^23 < 2^24, and twice as fast.
    zf = zeta.astype(np.float32)
    out = []
    for k in range(count):
        blk = _jl_block(seed, k, b).astype(np.float32)
        w = np.rint(blk.T @ zf).astype(np.int64)
        out.append(_normalise(w, 10))
    return out


# Rows up to this length take R^T zeta_c's raw sums (below 2^22) as limbs: every Gram entry
# (limbs of at most 2^16 against them, summed over a row) stays below 2^16 * 2^22 * 2^14 = 2^52.
_RAW_WC_MAX_ROW = 1 << 14


def _wc_grid(check: CheckStatement, d: int, a: int, b: int, zeta_c: I64) -> F64:
    """``R^T zeta_c`` (the consistency relation's coefficients on ``x``) as a ``b x a x L``
    float64 array of exact limbs: ``[:, k]`` is row ``k`` of the commitment, ``[k]``."""
    grid = projection_for(check.seed, d).transpose_grid(zeta_c, a, b)  # limbs below 2^22
    if b > _RAW_WC_MAX_ROW:  # keep every Gram entry below 2^52: 2^16 * 2^17 * b
        flat = cut_limbs(grid.reshape(a * b, -1).astype(np.int64))
        return flat.reshape(b, a, flat.shape[1]).astype(np.float64)
    return grid.astype(np.float64)


def _wc_blocks(check: CheckStatement, d: int, a: int, b: int, zeta_c: I64) -> list[I64]:
    """:func:`_wc_grid` cut into rows (the prover's table entries ``wc{k}``)."""
    grid = _wc_grid(check, d, a, b, zeta_c).astype(np.int64)
    return [np.ascontiguousarray(grid[:, k, :]) for k in range(a)]


def _is_wc(name: str) -> bool:
    return name.startswith("wc")


def _wc_terms(
    g_terms: Sequence[_Term], h_terms: Sequence[_Term], e: int
) -> tuple[list[int], list[int]]:
    """For each row ``k``: the coefficient of ``wc{k}`` in ``r(e)``, and the coefficient of
    ``<theta, wc{k}>`` in the constant term (theta is the only public G block it meets)."""
    ei = _inv(e)
    fold: dict[int, int] = {}
    const: dict[int, int] = {}
    for eh, chh, hn, kind in h_terms:
        if kind != "public" or not _is_wc(hn):
            continue
        k = int(hn[2:])
        fold[k] = (fold.get(k, 0) + chh * _power(e, ei, eh)) % P
        for eg, cg, gn, gkind in g_terms:
            if gkind == "public" and eg + eh == 0:
                if gn != "theta":  # pragma: no cover - the slot table pairs wc with theta only
                    raise AssertionError("unexpected public pair with the consistency block")
                const[k] = (const.get(k, 0) + cg * chh) % P
    rows = 1 + max(fold) if fold else 0
    return [fold.get(k, 0) for k in range(rows)], [const.get(k, 0) for k in range(rows)]


def _wc_contributions(wc: F64, theta: I64, fold: Sequence[int], const: Sequence[int]) -> tuple[
    F64, int
]:  # fmt: skip
    """The verifier's use of ``R^T zeta_c`` without stacking it beside the other blocks:
    ``sum_k fold[k] wc{k}`` (as ``b x 16`` field limbs, added to ``r(e)``'s public part) and
    ``sum_k const[k] <theta, wc{k}>`` (added to the constant term), from the ``b x a x L``
    grid of :func:`_wc_grid`. Each is one matrix product, exact in float64: limbs below 2^22
    against 16-bit limbs, summed over at most 33 rows of 9 limbs (fold: < 2^47) or over one
    row (Gram: < 2^52)."""
    b, a, width = wc.shape
    w2 = wc.reshape(b, a * width)  # a view: row i holds every commitment row's entry i
    coefs = _field_limbs([fold[k] << (_LIMB * j) for k in range(a) for j in range(width)])
    acc = w2 @ coefs.astype(np.float64)
    grams = np.rint(theta.T.astype(np.float64) @ w2).astype(np.int64)
    g = grams.reshape(theta.shape[1], a, width)
    # <theta, wc{k}> = sum_{i, l} g[i, k, l] 2^(16 (i + l)): gather each power's entries.
    spans = np.zeros((a, theta.shape[1] + width - 1), dtype=np.int64)
    for i in range(theta.shape[1]):
        spans[:, i : i + width] += g[i]  # below 8 * 2^52 < 2^63
    total = 0
    for k in range(a):
        if const[k]:
            ip = sum(int(v) << (_LIMB * s) for s, v in enumerate(spans[k].tolist()) if v)
            total += const[k] * ip
    return acc, total % P


# ----------------------------------------------------------------------------- the slot table
#
# Every term of l(X) (G side) and r(X) (H side) is (exponent, coefficient, block, kind):
# kind "commit" names a commitment (its opening is the block), kind "public" a public vector.
# threat_models/verification.md lists the table and what each pairing at exponent 0 proves.

_Term = tuple[int, int, str, str]


@dataclass(frozen=True, slots=True)
class _Exp:
    """Exponents of the commitments (rows at ``1..a``, ``D`` rows at ``-1..-a``)."""

    a: int

    @property
    def slack(self) -> int:
        return self.a + 1

    @property
    def jl_mask(self) -> int:
        return self.a + 2

    @property
    def blind_g(self) -> int:
        return self.a + 3

    @property
    def carries(self) -> int:
        return self.a + 4

    @property
    def masks(self) -> int:
        return self.a + 5

    @property
    def blind_h(self) -> int:  # mirrors no G-side commitment
        return -(self.a + 6)


def _exponents(a: int, checked: bool) -> list[int]:
    """Exponents of the ``T_s``: every non-zero sum of an l and an r exponent."""
    top = a + 4 if checked else a + 2
    return [s for s in range(-(2 * a + 7), top + 1) if s != 0]


def _terms(a: int, ch: _Challenges, w_bits: int, checked: bool) -> tuple[list[_Term], list[_Term]]:
    """The l (G side) and r (H side) terms. Blocks: ``row{k}``, ``slack``, ``mu``, ``sL``,
    ``q``, ``M`` (G); ``row{k}``, ``slack``, ``sR`` (H); public ``theta``, ``w{k}``, ``ws``,
    ``wq``, ``wc{k}``, ``zeta``, ``zetac``."""
    ex = _Exp(a)
    eta = [pow(ch.eta, k, P) for k in range(a + 2)]
    g: list[_Term] = []
    h: list[_Term] = []
    for k in range(a + 1):  # rows 0..a-1, then the slack row
        name = f"row{k}" if k < a else "slack"
        e = k + 1
        g.append((e, 1, name, "commit"))
        g.append((e, -ch.delta * eta[e] % P, "theta", "public"))  # row equality (delta)
        g.append((-e, ch.delta_h * eta[e] % P, "theta", "public"))  # no H part in C (delta_h)
        h.append((-e, 1, name, "commit"))
        h.append((-e, ch.gamma, f"w{k}" if k < a else "ws", "public"))  # JL (gamma)
        h.append((-e, ch.delta * eta[e] % P, "theta", "public"))
        if checked and k < a:
            h.append((-e, ch.gamma_c, f"wc{k}", "public"))  # consistency (gamma_c)
    g.append((ex.jl_mask, 1, "mu", "commit"))
    h.append((-ex.jl_mask, ch.gamma, "zeta", "public"))
    g.append((ex.blind_g, 1, "sL", "commit"))
    h.append((ex.blind_h, 1, "sR", "commit"))
    if checked:
        g.append((ex.carries, 1, "q", "commit"))
        h.append((-ex.carries, ch.gamma, "wq", "public"))
        h.append((-ex.carries, ch.gamma_c * (1 << w_bits) % P, "zetac", "public"))
        g.append((ex.masks, 1, "M", "commit"))
        h.append((-ex.masks, ch.gamma_c, "zetac", "public"))
    return g, h


def _public_blocks(
    seed: bytes,
    a: int,
    b: int,
    d: int,
    ch: _Challenges,
    check: CheckStatement | None,
    with_wc: bool = True,
) -> dict[str, I64]:
    """Every public vector of the table as a ``b x L`` limb matrix (the ``wc{k}`` only with
    ``with_wc``: the verifier handles them apart, :func:`_wc_contributions`)."""
    w = _w_blocks(seed, a + (2 if check is not None else 1), b, ch.zeta)
    blocks: dict[str, I64] = {f"w{k}": w[k] for k in range(a)}
    blocks["ws"] = w[a]
    blocks["theta"] = ch.theta
    blocks["zeta"] = _pad(ch.zeta, b)
    if check is not None:
        assert ch.zeta_c is not None
        blocks["wq"] = w[a + 1]
        blocks["zetac"] = _pad(ch.zeta_c, b)
        if with_wc:
            for k, blk in enumerate(_wc_blocks(check, d, a, b, ch.zeta_c)):
                blocks[f"wc{k}"] = blk
    return blocks


def _power(e: int, ei: int, s: int) -> int:
    return pow(e, s, P) if s >= 0 else pow(ei, -s, P)


def _fold_terms(
    terms: Sequence[_Term], blocks: dict[str, I64], e: int, kinds: tuple[str, ...]
) -> list[int]:
    """``sum coef * e^exp * block`` over the terms of the given kinds, as field elements."""
    ei = _inv(e)
    coef: dict[str, int] = {}
    for ex, c, name, kind in terms:
        if kind in kinds:
            coef[name] = (coef.get(name, 0) + c * _power(e, ei, ex)) % P
    names = [n for n in coef if coef[n]]
    if not names:
        return [0] * next(iter(blocks.values())).shape[0]
    mats = [blocks[n] for n in names]
    exps = [
        coef[n] << (_LIMB * j) for n, m in zip(names, mats, strict=True) for j in range(m.shape[1])
    ]
    return _fold(np.concatenate(mats, axis=1), exps)


class _Stack:
    """Named limb blocks concatenated once as float64 (the verifier folds and grams them)."""

    def __init__(self, blocks: dict[str, I64], names: Sequence[str]) -> None:
        self.names = list(dict.fromkeys(names))
        widths = [blocks[n].shape[1] for n in self.names]
        offs = np.cumsum([0, *widths]).tolist()
        self.span = {n: (offs[i], widths[i]) for i, n in enumerate(self.names)}
        self.matrix = np.concatenate([blocks[n] for n in self.names], axis=1).astype(np.float64)

    def fold(self, coef: dict[str, int], extra: npt.NDArray[np.float64] | None = None) -> list[int]:
        """``sum_name coef[name] * block`` as field elements (one matrix product), plus the
        field limbs ``extra`` (``b x 16``, exact) when given."""
        exps = [0] * self.matrix.shape[1]
        for n, c in coef.items():
            off, width = self.span[n]
            for j in range(width):
                exps[off + j] = (c % P) << (_LIMB * j)
        prod = self.matrix @ _field_limbs(exps).astype(np.float64)
        if extra is not None:
            prod += extra
        return _recombine(prod)


def _term_coefs(terms: Sequence[_Term], e: int, kind: str) -> dict[str, int]:
    ei = _inv(e)
    coef: dict[str, int] = {}
    for ex, c, name, k in terms:
        if k == kind:
            coef[name] = (coef.get(name, 0) + c * _power(e, ei, ex)) % P
    return coef


def _t0_public(
    bound: int, z: Sequence[int], ch: _Challenges, check: CheckStatement | None,
    g_terms: Sequence[_Term], h_terms: Sequence[_Term], blocks: dict[str, I64],
    stack_h: _Stack | None = None,
) -> int:  # fmt: skip
    """The constant coefficient of ``<l(X), r(X)>`` an honest prover has: the relations'
    values ``bound + gamma <zeta, z> + gamma_c <zeta_c, Y>`` plus every public x public pair
    at exponent 0 (module docstring; verification.md)."""
    zeta_vals = _recombine(ch.zeta)
    t0 = bound + ch.gamma * sum(zj * v for zj, v in zip(zeta_vals, z, strict=True))
    if check is not None:
        assert ch.zeta_c is not None
        zc = _recombine(ch.zeta_c)
        t0 += ch.gamma_c * sum(zj * y for zj, y in zip(zc, check.y, strict=True))
    pub_g = [t for t in g_terms if t[3] == "public"]
    pub_h = [t for t in h_terms if t[3] == "public"]
    pairs = [
        (cg * ch_ % P, gn, hn)
        for eg, cg, gn, _ in pub_g
        for eh, ch_, hn, _ in pub_h
        if eg + eh == 0
    ]
    if pairs and stack_h is not None and {gn for _, gn, _ in pairs} == {"theta"}:
        # Every public G block is theta: one gram of theta with the stacked H blocks.
        gram = np.rint(ch.theta.T.astype(np.float64) @ stack_h.matrix).astype(np.int64)
        for c, _, hn in pairs:
            off, width = stack_h.span[hn]
            t0 += c * _ip_blocks(gram, 0, ch.theta.shape[1], off, width)
    elif pairs:
        gnames = sorted({gn for _, gn, _ in pairs})
        hnames = sorted({hn for _, _, hn in pairs})
        gmat = np.concatenate([blocks[n] for n in gnames], axis=1)
        hmat = np.concatenate([blocks[n] for n in hnames], axis=1)
        gram = _gram(gmat, hmat)
        goff = dict(
            zip(
                gnames, np.cumsum([0] + [blocks[n].shape[1] for n in gnames]).tolist(), strict=False
            )
        )
        hoff = dict(
            zip(
                hnames, np.cumsum([0] + [blocks[n].shape[1] for n in hnames]).tolist(), strict=False
            )
        )
        for c, gn, hn in pairs:
            ipv = _ip_blocks(gram, goff[gn], blocks[gn].shape[1], hoff[hn], blocks[hn].shape[1])
            t0 += c * ipv
    return t0 % P


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


def commit_short(values: Sequence[int], blinding: int) -> Any:
    """``<values, G[:len]> + blinding * H0`` for up to :data:`CHECK_ROWS` integers: the mask
    projection claims of SPEC.md D12 (deterministic blinding, so both ends of a pair agree)."""
    if not 1 <= len(values) <= CHECK_ROWS:
        raise EncodingError(f"a short commitment holds 1..{CHECK_ROWS} values")
    return _msm([*_gens(b"G", len(values)), _base(b"H0")], [*(int(v) for v in values), blinding])


def point_bytes(point: Any) -> bytes:
    """The canonical 48-byte compressed encoding of a G1 point."""
    return _pt_bytes(point)


def point_from_bytes(data: bytes) -> Any:
    """Parse :func:`point_bytes`; raises :class:`InvalidProof` unless canonical."""
    if len(data) != _POINT:
        raise InvalidProof("a G1 point is 48 bytes")
    return _pt_from(data)


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


def prove_norm(
    opening: Opening,
    bound: int,
    context: bytes,
    rng: RandomSource,
    check: tuple[CheckStatement, CheckWitness] | None = None,
) -> NormProof:
    """Prove ``sum x_i^2 <= bound`` for the vector committed in ``opening.commitment`` and,
    with ``check``, the consistency relation of SPEC.md D12.

    Raises :class:`EncodingError` if the vector breaks the bound or the consistency data do
    not satisfy the relation over the integers (an honest prover never produces a proof that
    would fail).
    """
    _check_bound(bound)
    v = _as_vector(opening.x)
    norm2 = sum(int(t) * int(t) for t in v.tolist())
    if norm2 > bound:
        raise EncodingError("squared L2 norm exceeds the bound")
    q: list[int] | None = None
    if check is not None:
        q = _carries(v, check[0], check[1])
    return _prove(v, opening, bound, context, rng, _slack(bound - norm2), check, q)


def _carries(v: I64, st: CheckStatement, wit: CheckWitness) -> list[int]:
    """``q = (Y - R x - M) / 2^W``, exactly; raises unless it is an integer vector within the
    honest range (the client's own data are then inconsistent)."""
    if len(wit.masks) != CHECK_ROWS:
        raise EncodingError(f"the masks' projection has {CHECK_ROWS} entries")
    rx = projection_for(st.seed, v.shape[0]).apply(v)[0]
    q: list[int] = []
    for y, r, m in zip(st.y, rx, wit.masks, strict=True):
        num = y - r - m
        if num % (1 << st.ring_bits):
            raise EncodingError("upload, vector and masks are inconsistent modulo 2^W")
        q.append(num >> st.ring_bits)
    if sum(abs(t) for t in q) > _q_bound(v.shape[0], st):
        raise EncodingError("projected carries out of range: the masks do not match")
    return q


def _prove(
    v: I64,
    opening: Opening,
    bound: int,
    context: bytes,
    rng: RandomSource,
    slack: Sequence[int],
    check: tuple[CheckStatement, CheckWitness] | None = None,
    q: Sequence[int] | None = None,
    *,
    force: bool = False,
) -> NormProof:
    """The prover without honesty checks (tests pass a forged ``slack`` or ``q``).

    ``force`` (tests only) keeps the last ``z`` when rejection sampling never accepts.
    """
    d = v.shape[0]
    a, b = layout(d)
    ex = _Exp(a)
    st = check[0] if check is not None else None
    checked = st is not None
    rows = _rows(v, a, b)
    g, h, h0, ut, ui = _gens(b"G", b), _gens(b"H", b), _base(b"H0"), _base(b"Ut"), _base(b"Ui")
    big_u, big_s = _mask_range(d, bound, st)
    zb = _z_bytes(big_s)
    rho = list(opening.blindings)

    # First message, fixed across rejection attempts: H-side rows, slack, carries, blinding rows.
    sig = [_rand(rng) for _ in range(a)]
    big_d = [_msm_small(b"H", rows[k].tolist(), h0, sig[k]) for k in range(a)]
    s_vec = [int(t) for t in slack]  # honest: SLACK_LEN entries; a forger may use up to b
    rho_s, sig_s = _rand(rng), _rand(rng)
    c_s = _msm_small(b"G", [t % P for t in s_vec], h0, rho_s)
    d_s = _msm_small(b"H", [t % P for t in s_vec], h0, sig_s)
    q_vec = [int(t) for t in q] if q is not None else []
    rho_q = _rand(rng)
    c_q = _msm_small(b"G", q_vec, h0, rho_q) if checked else None
    s_l = [_rand(rng) for _ in range(b)]
    s_r = [_rand(rng) for _ in range(b)]
    rho_l, sig_r = _rand(rng), _rand(rng)
    s_g = _msm([*g, h0], [*s_l, rho_l])
    s_h = _msm([*h, h0], [*s_r, sig_r])
    fixed = [*big_d, c_s, d_s, *([c_q] if c_q is not None else [])]

    for _ in range(MAX_ATTEMPTS):
        mu_v = [_uniform_range(rng, -big_s, big_s) for _ in range(JL_ROWS)]
        rho_mu = _rand(rng)
        c_mu = _msm_small(b"G", mu_v, h0, rho_mu)
        tr = _Transcript(_LABEL, context)
        _statement(tr, d, a, b, bound, opening.commitment.points, st)
        seed = _first_message(tr, [*fixed, c_mu, s_g, s_h])
        acc = np.zeros(JL_ROWS, dtype=object)
        for k in range(a):
            blk = _jl_block(seed, k, b).astype(np.float64)
            acc += np.rint(blk @ rows[k].astype(np.float64)).astype(np.int64).astype(object)
        for k, vec in ((a, s_vec), (a + 1, q_vec)):
            if vec:
                blk = _jl_block(seed, k, b)[:, : len(vec)].astype(object)
                acc += blk.dot(np.array(vec, dtype=object))
        z = [_centred_int(int(r) + m) for r, m in zip(acc.tolist(), mu_v, strict=True)]
        if all(abs(zj) <= big_s - big_u for zj in z):
            break
    else:  # an honest prover gets here with probability about 0.12^64
        if not force:
            raise EncodingError("rejection sampling did not accept (is the slack forged?)")

    ch = _challenges(tr, z, b, checked)
    blocks = _public_blocks(seed, a, b, d, ch, st)
    gl = {f"row{k}": _split(rows[k], 2) for k in range(a)}
    gl["slack"] = _pad(_signed_limbs(s_vec), b)
    gl["mu"] = _pad(_signed_limbs(mu_v), b)
    gl["sL"] = _field_limbs(s_l)
    hl = {f"row{k}": gl[f"row{k}"] for k in range(a)}
    hl["slack"] = gl["slack"]
    hl["sR"] = _field_limbs(s_r)
    if checked:
        assert check is not None
        gl["q"] = _pad(_signed_limbs(q_vec), b)
        gl["M"] = _pad(_signed_limbs([int(m) for m in check[1].masks]), b)
    g_terms, h_terms = _terms(a, ch, st.ring_bits if st else 0, checked)
    gblocks = {**blocks, **gl}
    hblocks = {**blocks, **hl}

    coeff = _coefficients(g_terms, h_terms, gblocks, hblocks)
    exps = _exponents(a, checked)
    if any(s not in exps and s != 0 and coeff[s] for s in coeff):  # pragma: no cover
        raise AssertionError("a coefficient outside the committed exponents")
    taus = {s: _rand(rng) for s in exps}
    big_t = [_msm([ut, h0], [coeff.get(s, 0), taus[s]]) for s in exps]
    tr.absorb(b"T", b"".join(_pt_bytes(p) for p in big_t))
    e = tr.challenge(b"e")
    ei = _inv(e)

    l_vec = _fold_terms(g_terms, gblocks, e, ("commit", "public"))
    r_vec = _fold_terms(h_terms, hblocks, e, ("commit", "public"))
    t_hat = _ip(l_vec, r_vec)
    tau = sum(_power(e, ei, s) * taus[s] for s in exps) % P
    blind_of = {
        **{(k + 1): rho[k] for k in range(a)},
        ex.slack: rho_s, ex.jl_mask: rho_mu, ex.blind_g: rho_l,
        **{-(k + 1): sig[k] for k in range(a)},
        -ex.slack: sig_s, ex.blind_h: sig_r,
    }  # fmt: skip
    if checked:
        assert check is not None
        blind_of[ex.carries] = rho_q
        blind_of[ex.masks] = check[1].blinding
    mu = sum(_power(e, ei, s) * r for s, r in blind_of.items()) % P
    tr.absorb(b"scalars", b"".join(val.to_bytes(32, "big") for val in (t_hat, tau, mu)))
    u0 = tr.challenge(b"u")
    ls, rs_, a_fin, b_fin = _ipa_prove(tr, g, h, _msm([ui], [u0]), l_vec, r_vec)
    return NormProof(
        d, tuple(big_d), c_s, d_s, c_q, c_mu, s_g, s_h, tuple(z), tuple(big_t), t_hat, tau, mu,
        ls, rs_, a_fin, b_fin, zb,
    )  # fmt: skip


def _centred_int(v: int) -> int:
    v %= P
    return v - P if v > P // 2 else v


def _signed_limbs(values: Sequence[int]) -> I64:
    """Signed integers (below 2^62 in magnitude) or field elements as limb matrices."""
    if values and all(-(1 << 62) < int(t) < 1 << 62 for t in values):
        top = max(abs(int(t)) for t in values) + 1
        return _split(np.array([int(t) for t in values], dtype=np.int64), _limbs_needed(top))
    return _field_limbs([int(t) % P for t in values])


def _coefficients(
    g_terms: Sequence[_Term],
    h_terms: Sequence[_Term],
    gblocks: dict[str, I64],
    hblocks: dict[str, I64],
) -> dict[int, int]:
    """Every coefficient of ``<l(X), r(X)>`` from one Gram matrix of limb columns."""
    gnames = sorted({t[2] for t in g_terms})
    hnames = sorted({t[2] for t in h_terms})
    gmat = np.concatenate([gblocks[n] for n in gnames], axis=1)
    hmat = np.concatenate([hblocks[n] for n in hnames], axis=1)
    gram = _gram(gmat, hmat)
    goff = np.cumsum([0] + [gblocks[n].shape[1] for n in gnames]).tolist()
    hoff = np.cumsum([0] + [hblocks[n].shape[1] for n in hnames]).tolist()
    gi = {n: i for i, n in enumerate(gnames)}
    hi = {n: i for i, n in enumerate(hnames)}
    cache: dict[tuple[str, str], int] = {}

    def ip(gn: str, hn: str) -> int:
        key = (gn, hn)
        if key not in cache:
            i, j = gi[gn], hi[hn]
            cache[key] = _ip_blocks(
                gram, goff[i], goff[i + 1] - goff[i], hoff[j], hoff[j + 1] - hoff[j]
            )
        return cache[key]

    coeff: dict[int, int] = {}
    for eg, cg, gn, _ in g_terms:
        for eh, chh, hn, _ in h_terms:
            val = ip(gn, hn)
            if val:
                s = eg + eh
                coeff[s] = (coeff.get(s, 0) + cg * chh * val) % P
    return coeff


def verify_norm(
    commitment: Commitment,
    proof: NormProof,
    bound: int,
    context: bytes,
    check: CheckStatement | None = None,
) -> None:
    """Return if ``proof`` shows the committed vector has ``sum x_i^2 <= bound`` (and, with
    ``check``, satisfies its consistency relation); else raise :class:`InvalidProof`.

    Raises if the proof is malformed, was made for other parameters, another commitment,
    context or consistency statement, or does not verify.
    """
    try:
        _check_bound(bound)
    except EncodingError as exc:
        raise InvalidProof(str(exc)) from exc
    d = commitment.d
    checked = check is not None
    if proof.d != d:
        raise InvalidProof("proof dimension does not match the commitment")
    if proof.checked != checked:
        raise InvalidProof("the proof does not cover the consistency relation asked for")
    a, b = layout(d)
    ex = _Exp(a)
    rounds = b.bit_length() - 1
    exps = _exponents(a, checked)
    if (
        len(proof.D) != a
        or len(proof.T) != len(exps)
        or len(proof.Ls) != rounds
        or len(proof.Rs) != rounds
        or len(proof.z) != JL_ROWS
    ):
        raise InvalidProof("proof has the wrong shape")
    for val in (proof.t_hat, proof.tau, proof.mu, proof.a_fin, proof.b_fin):
        if not 0 <= val < P:
            raise InvalidProof("non-canonical scalar")
    big_u, big_s = _mask_range(d, bound, check)
    if proof.z_bytes != _z_bytes(big_s):
        raise InvalidProof("projection width does not match the statement")
    if any(abs(zj) > big_s - big_u for zj in proof.z):
        raise InvalidProof("projection outside the accepted range (vector too long)")
    g, h, h0, ut, ui = _gens(b"G", b), _gens(b"H", b), _base(b"H0"), _base(b"Ut"), _base(b"Ui")

    tr = _Transcript(_LABEL, context)
    _statement(tr, d, a, b, bound, commitment.points, check)
    fixed = [*proof.D, proof.Cs, proof.Ds, *([proof.Cq] if checked else [])]
    seed = _first_message(tr, [*fixed, proof.Cmu, proof.SG, proof.SH])
    ch = _challenges(tr, proof.z, b, checked)
    blocks = _public_blocks(seed, a, b, d, ch, check, with_wc=False)
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

    g_terms, h_terms = _terms(a, ch, check.ring_bits if check else 0, checked)
    h_rest = [t for t in h_terms if not (t[3] == "public" and _is_wc(t[2]))]
    stack_h = _Stack(blocks, [t[2] for t in h_rest if t[3] == "public"])
    # (1) t_hat Ut + tau H0 == t0 Ut + sum_s e^s T_s
    t0 = _t0_public(bound, proof.z, ch, check, g_terms, h_rest, blocks, stack_h)
    epow = [_power(e, ei, s) for s in exps]
    # (2) IPA: P + t_hat U' + sum(u^2 L + u^-2 R) == a s G + b s^-1 H + a b U', with
    # P = sum over commitments e^exp X + <public l(e), G> + <public r(e), H> - mu H0.
    pub_g = _fold_terms(g_terms, blocks, e, ("public",))
    add_h = None
    if check is not None:  # the consistency relation's coefficients R^T zeta_c
        assert ch.zeta_c is not None
        fold_c, const_c = _wc_terms(g_terms, h_terms, e)
        wc = _wc_grid(check, d, a, b, ch.zeta_c)
        add_h, add_t0 = _wc_contributions(wc, ch.theta, fold_c, const_c)
        t0 = (t0 + add_t0) % P
    pub_h = stack_h.fold(_term_coefs(h_rest, e, "public"), add_h)
    sg = [1]
    for u in us:
        uinv = _inv(u)
        sg = [val for s in sg for val in (s * uinv % P, s * u % P)]
    sg_inv = list(reversed(sg))
    coef_g = [(pg - proof.a_fin * s) % P for pg, s in zip(pub_g, sg, strict=True)]
    coef_h = [(ph - proof.b_fin * s) % P for ph, s in zip(pub_h, sg_inv, strict=True)]
    ab = proof.a_fin * proof.b_fin % P
    committed: list[tuple[Any, int]] = [
        *((commitment.points[k], k + 1) for k in range(a)),
        (proof.Cs, ex.slack), (proof.Cmu, ex.jl_mask), (proof.SG, ex.blind_g),
        *((proof.D[k], -(k + 1)) for k in range(a)),
        (proof.Ds, -ex.slack), (proof.SH, ex.blind_h),
    ]  # fmt: skip
    if check is not None:
        committed += [(proof.Cq, ex.carries), (check.masks, ex.masks)]
    pts = [
        *(pt for pt, _ in committed), h0, ui, *proof.Ls, *proof.Rs, *g, *h, ut, *proof.T,
    ]  # fmt: skip
    scs = [
        *(_power(e, ei, s) for _, s in committed),
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
