"""The allow-list of encryption parameters (docs/threats.md HE-04): nothing else is ever built or
accepted, whether asked for by name, constructed by hand, or found inside a serialized context.

Every set meets the HomomorphicEncryption.org standard for 128-bit classical security with a
ternary secret: ``N = 4096`` allows a total coefficient modulus of at most 109 bits, ``N = 8192``
at most 218. The moduli are written out as primes (what SEAL's ``CoeffModulus.Create`` returns
for the bit sizes), so a context carrying other primes of the same sizes is refused too. The last
prime is SEAL's special (key-switching) prime; ciphertexts live modulo the others.

Why these sets (measured with TenSEAL 0.3.18, see ``bench/bench_he.py``):

* ``bfv-4096`` (the default): a 72-bit ciphertext modulus holds a 50-bit plaintext modulus with
  about 15 bits of noise budget to spare after encryption, and 10 after 1000 additions; two
  23-bit fields fit in each slot, so one 88.5 KB ciphertext carries 8192 coordinates: 2.7x the
  float32 vector.
* ``ckks-4096``: the same moduli with scale ``2^22``; slots carry integers (see
  :mod:`secagg.he.config`) with an error below ``2^-6`` after 100 additions, which rounding
  removes exactly. 2048 slots per ciphertext: 5.4x.
* ``ckks-8192``: NVFlare's moduli ([60, 40, 40], scale ``2^40``), for comparison and for
  deployments that already use them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from secagg.he._errors import WeakParameters

__all__ = [
    "ALLOWED_PARAMS",
    "BFV_4096",
    "CKKS_4096",
    "CKKS_8192",
    "DEFAULT_PARAMS",
    "HE_STANDARD_MAX_BITS",
    "HeParams",
    "HeScheme",
    "check_standard",
    "find_params",
    "get_params",
]

# HomomorphicEncryption.org security standard (2018), Table 1, 128-bit classical, ternary secret.
HE_STANDARD_MAX_BITS: Mapping[int, int] = MappingProxyType({4096: 109, 8192: 218})

_CKKS_MAX_PAYLOAD_BITS = 48  # a CKKS slot decodes to a float64: keep integers well inside 2^53


class HeScheme(enum.Enum):
    """BFV adds integers exactly; CKKS adds approximate reals (here: integers, then rounded)."""

    BFV = "bfv"
    CKKS = "ckks"


@dataclass(frozen=True, slots=True)
class HeParams:
    """One encryption parameter set. Construction checks the HE standard; use
    :func:`get_params` to obtain an allow-listed one."""

    name: str
    scheme: HeScheme
    poly_modulus_degree: int
    coeff_modulus: tuple[int, ...]
    plain_modulus: int = 0
    scale_bits: int = 0
    max_clients: int = 1024

    def __post_init__(self) -> None:
        check_standard(self)

    @property
    def coeff_bits(self) -> tuple[int, ...]:
        return tuple(q.bit_length() for q in self.coeff_modulus)

    @property
    def total_bits(self) -> int:
        """Bits of the whole coefficient modulus, the figure the HE standard bounds."""
        return sum(self.coeff_bits)

    @property
    def data_bits(self) -> int:
        """Bits of the modulus ciphertexts live under (every prime but the special one)."""
        return sum(self.coeff_bits[:-1])

    @property
    def slots(self) -> int:
        """Values one ciphertext holds: ``N`` for BFV batching, ``N / 2`` for CKKS."""
        n = self.poly_modulus_degree
        return n if self.scheme is HeScheme.BFV else n // 2

    @property
    def payload_bits(self) -> int:
        """Bits of signed integer one slot carries without wrapping: ``|v| < 2^(payload - 1)``.

        BFV: below ``t / 2``. CKKS: ``v * 2^scale`` stays below ``q / 8`` (room for noise) and
        ``v`` inside float64's exact range.
        """
        if self.scheme is HeScheme.BFV:
            return self.plain_modulus.bit_length() - 1
        return min(self.data_bits - self.scale_bits - 2, _CKKS_MAX_PAYLOAD_BITS)

    def chunk_bounds(self) -> tuple[int, int]:
        """Tight bounds on the serialized size of one fresh ciphertext (two polynomials).

        Lower: the entropy of two uniform polynomials modulo the data modulus (compression
        cannot go below it; a truncated or degenerate ciphertext does). Upper: the uncompressed
        size, 8 bytes per coefficient per prime, plus the headers.
        """
        n, primes = self.poly_modulus_degree, len(self.coeff_modulus) - 1
        return (2 * n * self.data_bits) // 8, 2 * n * primes * 8 + 1024

    def public_context_bounds(self) -> tuple[int, int]:
        """Bounds on a serialized public context: one public key (two polynomials at the key
        level) and the parameters."""
        n, primes = self.poly_modulus_degree, len(self.coeff_modulus)
        return (2 * n * self.total_bits) // 8, 2 * n * primes * 8 + 4096


def check_standard(p: HeParams) -> None:
    """Raise :class:`WeakParameters` unless ``p`` gives 128-bit security and can work at all."""
    n = p.poly_modulus_degree
    limit = HE_STANDARD_MAX_BITS.get(n)
    if limit is None:
        raise WeakParameters(
            f"poly_modulus_degree {n} is not one of {sorted(HE_STANDARD_MAX_BITS)} "
            "(docs/threats.md HE-04)"
        )
    if len(p.coeff_modulus) < 2:
        raise WeakParameters("the coefficient modulus needs a data prime and a special prime")
    if any(not 2 <= b <= 60 for b in p.coeff_bits):
        raise WeakParameters("every coefficient prime must have 2..60 bits")
    if any(q % (2 * n) != 1 for q in p.coeff_modulus):
        raise WeakParameters(f"every coefficient prime must be 1 mod {2 * n} (NTT-friendly)")
    if p.total_bits > limit:
        raise WeakParameters(
            f"a {p.total_bits}-bit coefficient modulus with N={n} is below 128-bit security "
            f"(at most {limit} bits; docs/threats.md HE-04)"
        )
    if p.scheme is HeScheme.BFV:
        t = p.plain_modulus
        if t < 3 or t % (2 * n) != 1 or t in p.coeff_modulus:
            raise WeakParameters("the BFV plain modulus must be a batching prime (1 mod 2N)")
        if p.scale_bits:
            raise WeakParameters("BFV has no scale")
    else:
        if p.plain_modulus:
            raise WeakParameters("CKKS has no plain modulus")
        if not 8 <= p.scale_bits <= p.data_bits - 8:
            raise WeakParameters("the CKKS scale must leave room in the data modulus")
    if p.payload_bits < 8:
        raise WeakParameters("the parameter set carries less than 8 bits per slot")
    if not 2 <= p.max_clients <= 1 << 20:
        raise WeakParameters("max_clients must be in [2, 2^20]")


_Q_4096 = (68719230977, 68719403009, 137438822401)  # CoeffModulus.Create(4096, [36, 36, 37])

BFV_4096 = HeParams(
    "bfv-4096",
    HeScheme.BFV,
    4096,
    _Q_4096,
    plain_modulus=1125899906826241,  # PlainModulus.Batching(4096, 50)
    max_clients=4096,
)
CKKS_4096 = HeParams("ckks-4096", HeScheme.CKKS, 4096, _Q_4096, scale_bits=22, max_clients=1024)
CKKS_8192 = HeParams(
    "ckks-8192",
    HeScheme.CKKS,
    8192,
    (1152921504606830593, 1099510890497, 1099511480321),  # Create(8192, [60, 40, 40])
    scale_bits=40,
    max_clients=1 << 16,
)

ALLOWED_PARAMS: Mapping[str, HeParams] = MappingProxyType(
    {p.name: p for p in (BFV_4096, CKKS_4096, CKKS_8192)}
)
DEFAULT_PARAMS = BFV_4096


def get_params(name: str) -> HeParams:
    """The allow-listed set called ``name``; anything else is :class:`WeakParameters`."""
    p = ALLOWED_PARAMS.get(name)
    if p is None:
        raise WeakParameters(
            f"{name!r} is not an allow-listed parameter set {sorted(ALLOWED_PARAMS)}"
        )
    return p


def find_params(
    scheme: HeScheme,
    poly_modulus_degree: int,
    coeff_modulus: tuple[int, ...],
    plain_modulus: int,
    scale_bits: int,
) -> HeParams:
    """The allow-listed set with exactly these values (as read from a context), or
    :class:`WeakParameters` naming what is wrong."""
    for p in ALLOWED_PARAMS.values():
        if (
            p.scheme is scheme
            and p.poly_modulus_degree == poly_modulus_degree
            and p.coeff_modulus == coeff_modulus
            and p.plain_modulus == plain_modulus
            and p.scale_bits == scale_bits
        ):
            return p
    bits = sum(q.bit_length() for q in coeff_modulus)
    limit = HE_STANDARD_MAX_BITS.get(poly_modulus_degree)
    why = (
        f" ({bits}-bit modulus with N={poly_modulus_degree}: below 128-bit security)"
        if limit is None or bits > limit
        else ""
    )
    raise WeakParameters(
        f"context parameters ({scheme.value}, N={poly_modulus_degree}, {bits}-bit modulus, "
        f"t={plain_modulus}, scale 2^{scale_bits}) are not allow-listed{why} "
        "(docs/threats.md HE-04)"
    )
