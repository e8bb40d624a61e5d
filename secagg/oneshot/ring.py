"""Exact arithmetic in R_q = Z_q[X] / (X^N + 1) for the one-shot variant (SPEC.md O2, O3).

``q`` is a product of two NTT-friendly primes ``q_i = 1 mod 2N`` below 2^31, and every
polynomial is kept as its two residues (CRT). A product of two residues is below 2^62, so
every operation is exact in ``uint64`` numpy arithmetic: no float, no overflow. Polynomial
products use the negacyclic number-theoretic transform (twist by a primitive 2N-th root, then a
radix-2 Cooley-Tukey transform batched over chunks).

Sampling is exact: uniform residues by rejection (for the public ``a_k``, from an AES-256-CTR
stream keyed by the session; for secrets and Shamir coefficients, from the injected CSPRNG),
ternary secrets by rejection on bytes, errors from the centred binomial distribution CBD(21)
(standard deviation 3.24, bounded by 21).

Vector Shamir sharing over GF(q_i), coefficient-wise, with holders at positions 1..c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg._errors import ConfigError, InvalidShare
from secagg._rng import RandomSource

__all__ = [
    "CBD_ETA",
    "NttTables",
    "RingParams",
    "cbd_errors",
    "crt_combine",
    "is_prime",
    "lagrange_at_zero",
    "ntt_prime_below",
    "schoolbook_negacyclic",
    "shamir_share",
    "ternary",
    "uniform_mod",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

CBD_ETA = 21  # errors: difference of two sums of 21 coin flips, sigma = sqrt(21 / 2) = 3.24


def is_prime(p: int) -> bool:
    """Trial division; enough for the primes below 2^31 this module uses."""
    if p < 2:
        return False
    if p % 2 == 0:
        return p == 2
    r = math.isqrt(p)
    f = 3
    while f <= r:
        if p % f == 0:
            return False
        f += 2
    return True


def _factors(n: int) -> list[int]:
    out, f = [], 2
    while f * f <= n:
        if n % f == 0:
            out.append(f)
            while n % f == 0:
                n //= f
        f += 1
    if n > 1:
        out.append(n)
    return out


@lru_cache(maxsize=64)
def ntt_prime_below(bits: int, two_n: int, skip: int = 0) -> int:
    """The ``skip``-th largest prime ``p < 2^bits`` with ``p = 1 mod two_n``."""
    if not 2 <= bits <= 31:
        raise ConfigError("NTT primes are between 2 and 31 bits here")
    p = ((1 << bits) - 1) // two_n * two_n + 1
    if p >= 1 << bits:
        p -= two_n
    found = 0
    while p > two_n:
        if is_prime(p):
            if found == skip:
                return p
            found += 1
        p -= two_n
    raise ConfigError(f"no {bits}-bit prime = 1 mod {two_n}")


class NttTables:
    """Twiddles of the negacyclic NTT of length ``n`` modulo the prime ``q`` (q = 1 mod 2n)."""

    def __init__(self, q: int, n: int) -> None:
        if n < 2 or n & (n - 1):
            raise ConfigError("the ring dimension must be a power of two")
        if not is_prime(q) or (q - 1) % (2 * n) or q >= 1 << 31:
            raise ConfigError(f"{q} is not a prime = 1 mod {2 * n} below 2^31")
        self.q, self.n = q, n
        fs = _factors(q - 1)
        g = next(g for g in range(2, q) if all(pow(g, (q - 1) // f, q) != 1 for f in fs))
        psi = pow(g, (q - 1) // (2 * n), q)
        assert pow(psi, n, q) == q - 1  # primitive 2n-th root of unity
        psi_inv = pow(psi, -1, q)
        n_inv = pow(n, -1, q)
        self.twist = np.array([pow(psi, i, q) for i in range(n)], dtype=np.uint64)
        self.untwist = np.array([pow(psi_inv, i, q) * n_inv % q for i in range(n)], dtype=np.uint64)
        bits = n.bit_length() - 1
        self.bitrev = np.array(
            [int(format(i, f"0{bits}b")[::-1], 2) for i in range(n)], dtype=np.int64
        )
        omega, omega_inv = psi * psi % q, psi_inv * psi_inv % q
        self.fwd: list[U64] = []
        self.inv: list[U64] = []
        m = 1
        while m < n:
            w, wi = pow(omega, n // (2 * m), q), pow(omega_inv, n // (2 * m), q)
            self.fwd.append(np.array([pow(w, j, q) for j in range(m)], dtype=np.uint64))
            self.inv.append(np.array([pow(wi, j, q) for j in range(m)], dtype=np.uint64))
            m *= 2

    def _transform(self, a: U64, tw: list[U64]) -> U64:
        q = np.uint64(self.q)
        lead = a.shape[:-1]
        x = a[..., self.bitrev]
        m = 1
        for w in tw:
            x = x.reshape(*lead, self.n // (2 * m), 2, m)
            u = x[..., 0, :]
            v = x[..., 1, :] * w % q
            x = np.stack(((u + v) % q, (u + q - v) % q), axis=-2)
            m *= 2
        return x.reshape(*lead, self.n)

    def forward(self, a: U64) -> U64:
        """Coefficients (values in [0, q), last axis length n) -> evaluations."""
        return self._transform(a * self.twist % np.uint64(self.q), self.fwd)

    def inverse(self, a: U64) -> U64:
        """Evaluations -> coefficients (inverse of :meth:`forward`)."""
        return self._transform(a, self.inv) * self.untwist % np.uint64(self.q)


def schoolbook_negacyclic(a: list[int], b: list[int], q: int) -> list[int]:
    """Reference product in Z_q[X]/(X^n + 1), for tests."""
    n = len(a)
    out = [0] * n
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            k = i + j
            if k < n:
                out[k] += ai * bj
            else:
                out[k - n] -= ai * bj
    return [v % q for v in out]


@dataclass(frozen=True)
class RingParams:
    """Ring dimension ``n`` and the two primes; ``delta`` scales the plaintext."""

    n: int
    primes: tuple[int, int]
    delta: int
    tables: tuple[NttTables, NttTables] = field(compare=False, repr=False)

    @classmethod
    @lru_cache(maxsize=16)
    def make(cls, n: int, primes: tuple[int, int], delta: int) -> RingParams:
        if primes[0] == primes[1]:
            raise ConfigError("the two primes must differ")
        tables = (NttTables(primes[0], n), NttTables(primes[1], n))
        if not 1 <= delta < primes[0] * primes[1]:
            raise ConfigError("delta must be in [1, q)")
        return cls(n, primes, delta, tables)

    @property
    def q(self) -> int:
        return self.primes[0] * self.primes[1]

    @property
    def log_q(self) -> float:
        return math.log2(self.q)

    @property
    def residue_bits(self) -> tuple[int, int]:
        return (self.primes[0].bit_length(), self.primes[1].bit_length())

    def mul_public(self, a_hat: tuple[U64, U64], s: tuple[U64, U64]) -> tuple[U64, U64]:
        """``a * s`` per chunk, with ``a`` given in the NTT domain (shape (chunks, n)) and one
        polynomial ``s`` (residues, shape (n,))."""
        out = []
        for i, t in enumerate(self.tables):
            s_hat = t.forward(s[i])
            out.append(t.inverse(a_hat[i] * s_hat % np.uint64(t.q)))
        return out[0], out[1]


def crt_combine(r1: U64, r2: U64, q1: int, q2: int) -> I64:
    """Residues -> the centred representative in (-q/2, q/2], exact in 64 bits (q < 2^62)."""
    inv = np.uint64(pow(q1, -1, q2))
    qq1, qq2 = np.uint64(q1), np.uint64(q2)
    t = (r2 + qq2 - r1 % qq2) % qq2 * inv % qq2
    v = (r1 + qq1 * t).astype(np.int64)
    q = q1 * q2
    return np.where(v > q // 2, v - np.int64(q), v)


def _aes_stream(key: bytes) -> Cipher[modes.CTR]:
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16)))


def uniform_mod(
    q: int, count: int, *, key: bytes | None = None, rng: RandomSource | None = None
) -> U64:
    """``count`` residues uniform on [0, q), exactly, by rejection on ``bits(q)``-bit words:
    from AES-256-CTR under ``key`` (public, reproducible) or from ``rng`` (secret)."""
    if (key is None) == (rng is None):
        raise ValueError("give exactly one of key and rng")
    bits = q.bit_length()
    mask = np.uint32((1 << bits) - 1)
    enc = _aes_stream(key).encryptor() if key is not None else None
    out = np.empty(count, dtype=np.uint64)
    have = 0
    while have < count:
        want = (count - have) * 2 + 64  # acceptance is above 1/2
        raw = enc.update(bytes(4 * want)) if enc is not None else rng.bytes(4 * want)  # type: ignore[union-attr]
        cand = np.frombuffer(raw, dtype="<u4") & mask
        ok = cand[cand < q][: count - have]
        out[have : have + ok.size] = ok
        have += ok.size
    return out


def ternary(count: int, rng: RandomSource) -> I64:
    """``count`` coefficients uniform on {-1, 0, 1} (rejection: bytes below 255, mod 3)."""
    out = np.empty(count, dtype=np.int64)
    have = 0
    while have < count:
        raw = np.frombuffer(rng.bytes((count - have) + 16), dtype=np.uint8)
        ok = raw[raw < 255][: count - have]
        out[have : have + ok.size] = ok.astype(np.int64) % 3 - 1
        have += ok.size
    return out


def cbd_errors(count: int, rng: RandomSource) -> I64:
    """``count`` errors from CBD(21): popcount of 21 random bits minus popcount of 21 more.
    One 16-byte key from ``rng`` expands by AES-CTR (one keystream pass per upload)."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    enc = _aes_stream(rng.bytes(32)).encryptor()
    w = np.frombuffer(enc.update(bytes(8 * count)), dtype="<u8")
    m = np.uint64((1 << CBD_ETA) - 1)
    a: I64 = np.bitwise_count(w & m).astype(np.int64)
    b: I64 = np.bitwise_count((w >> np.uint64(CBD_ETA)) & m).astype(np.int64)
    return a - b


def shamir_share(secret: U64, q: int, t: int, holders: int, rng: RandomSource) -> U64:
    """Share each coefficient of ``secret`` (residues mod the prime ``q``) with a random
    polynomial of degree ``t - 1``; returns shape (holders, len(secret)), holder ``j`` at x = j+1.
    """
    if not 1 <= t <= holders < q:
        raise ConfigError(f"threshold {t} impossible with {holders} holders")
    qq = np.uint64(q)
    coeffs = [uniform_mod(q, secret.size, rng=rng) for _ in range(t - 1)]
    out = np.empty((holders, secret.size), dtype=np.uint64)
    for j in range(holders):
        x = np.uint64(j + 1)
        acc = np.zeros(secret.size, dtype=np.uint64)
        for c in reversed(coeffs):  # Horner from the top coefficient down
            acc = (acc + c) * x % qq
        out[j] = (acc + secret) % qq
    return out


@lru_cache(maxsize=256)
def lagrange_at_zero(xs: tuple[int, ...], q: int) -> tuple[int, ...]:
    """Weights ``w_j`` with ``f(0) = sum_j w_j f(x_j)`` over GF(q); ``xs`` distinct in [1, q)."""
    if len(set(xs)) != len(xs) or any(not 0 < x < q for x in xs):
        raise InvalidShare("share positions must be distinct and non-zero")
    out = []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * xj % q
                den = den * (xj - xi) % q
        out.append(num * pow(den, -1, q) % q)
    return tuple(out)
