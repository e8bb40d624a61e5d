"""The key-additive masking itself (SPEC.md O4, O5):

    y_k = a_k * s + e_k + delta * x_k  (mod q),  k = 1 .. ceil(d / N)

with ``a_k`` public (derived from the round's config digest, sampled directly in the NTT
domain, where uniform is uniform), ``s`` a fresh ternary secret per client and round, ``e_k``
CBD(21) errors and ``x_k`` the signed ring encoding of the client's input. Summing over the
included clients gives ``a_k * S + E_k + delta * X_k`` with ``S`` the sum of secrets; once the
committee releases ``S``, subtracting ``a_k * S`` and rounding to the nearest multiple of
``delta`` leaves ``X_k`` exactly (``|E_k| < delta / 2``, ``|delta X_k| + |E_k| < q / 2``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from secagg._crypto import hkdf
from secagg._errors import EncodingError
from secagg.encoding import pack_bits, unpack_bits
from secagg.oneshot._errors import UnmaskFailed
from secagg.oneshot.config import OneShotConfig, error_bound
from secagg.oneshot.ring import crt_combine, uniform_mod

__all__ = [
    "mask",
    "pack_residues",
    "public_a_hat",
    "unmask",
    "unpack_residues",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
LABEL_PUBLIC_A = b"secagg/oneshot/v1/public-a"


@lru_cache(maxsize=2)
def public_a_hat(cfg: OneShotConfig) -> tuple[U64, U64]:
    """The public ``a_k`` of every chunk, NTT domain, shape (chunks, N) per prime: AES-256-CTR
    keyed by HKDF of the config digest (a new session gives new ``a_k``)."""
    ring = cfg.ring
    out = []
    for i, q in enumerate(ring.primes):
        key = hkdf(cfg.digest, LABEL_PUBLIC_A + bytes([i]), 32)
        out.append(uniform_mod(q, cfg.chunks * ring.n, key=key).reshape(cfg.chunks, ring.n))
    return out[0], out[1]


def pack_residues(r: tuple[U64, U64], bits: tuple[int, int]) -> bytes:
    return b"".join(
        pack_bits(x.reshape(-1).astype(np.uint32), b) for x, b in zip(r, bits, strict=True)
    )


def unpack_residues(
    raw: bytes, count: int, primes: tuple[int, int], bits: tuple[int, int]
) -> tuple[U64, U64]:
    """Inverse of :func:`pack_residues`; raises :class:`EncodingError` on a wrong length or a
    residue not below its prime."""
    n1 = (count * bits[0] + 7) // 8
    if len(raw) != n1 + (count * bits[1] + 7) // 8:
        raise EncodingError("packed residues have the wrong length")
    out = []
    for part, q, b in ((raw[:n1], primes[0], bits[0]), (raw[n1:], primes[1], bits[1])):
        v = unpack_bits(part, b, count).astype(np.uint64)
        if v.size and int(v.max()) >= q:
            raise EncodingError("a residue is not below its modulus")
        out.append(v)
    return out[0], out[1]


def mask(cfg: OneShotConfig, ints: I64, s: I64, e: I64) -> tuple[U64, U64]:
    """``a_k * s + e_k + delta * x_k`` per prime, shape (chunks * N,). ``ints`` are the signed
    encoded inputs (length d), ``s`` the ternary secret (length N), ``e`` the errors."""
    ring = cfg.ring
    total = cfg.chunks * ring.n
    if ints.shape != (cfg.d,) or s.shape != (ring.n,) or e.shape != (total,):
        raise EncodingError("mask inputs have the wrong shapes")
    x = np.zeros(total, dtype=np.int64)
    x[: cfg.d] = ints
    a_hat = public_a_hat(cfg)
    s_res = tuple(np.mod(s, q).astype(np.uint64) for q in ring.primes)
    as_ = ring.mul_public(a_hat, (s_res[0], s_res[1]))
    out = []
    for i, q in enumerate(ring.primes):
        qq = np.uint64(q)
        dq = np.uint64(ring.delta % q)
        y = as_[i].reshape(-1) + np.mod(e, q).astype(np.uint64)
        y += dq * np.mod(x, q).astype(np.uint64) % qq
        out.append(y % qq)
    return out[0], out[1]


def unmask(
    cfg: OneShotConfig, y_sum: tuple[U64, U64], s_sum: tuple[U64, U64], included: int
) -> I64:
    """Remove ``a_k * S`` from the summed masked chunks and round to the grid: the sum of the
    included clients' encoded inputs (length d). Raises :class:`UnmaskFailed` unless every
    coefficient is within the error bound of a multiple of delta and in the sum's range."""
    ring = cfg.ring
    a_hat = public_a_hat(cfg)
    as_ = ring.mul_public(a_hat, s_sum)
    v = []
    for i, q in enumerate(ring.primes):
        qq = np.uint64(q)
        v.append((y_sum[i] + qq - as_[i].reshape(-1)) % qq)
    centred = crt_combine(v[0], v[1], ring.primes[0], ring.primes[1])
    delta = np.int64(ring.delta)
    x = np.floor_divide(centred + delta // 2, delta)
    residual = centred - x * delta
    bound = error_bound(included)
    if np.any(np.abs(residual) > bound):
        raise UnmaskFailed("the unmasked sum is not near the grid: some upload is inconsistent")
    reach = included * cfg.encoding.max_abs
    if np.any(np.abs(x[: cfg.d]) > reach) or np.any(x[cfg.d :]):
        raise UnmaskFailed("the unmasked sum is out of range: some upload is inconsistent")
    out: I64 = x[: cfg.d].astype(np.int64)
    return out
