"""Zero-knowledge L2-norm proofs for committed client vectors (protocol.md §7, threats.md IV).

Pure: no I/O, no clocks, no global RNG; randomness comes from a :class:`secagg.RandomSource`.
See :mod:`secagg.verify.norm` for the construction and its security argument.
"""

from secagg.verify.norm import (
    DEFAULT_BOUND_BITS,
    DEFAULT_COORD_BITS,
    Commitment,
    InvalidProof,
    NormProof,
    Opening,
    commit,
    make_context,
    prove_norm,
    verify_norm,
)

__all__ = [
    "DEFAULT_BOUND_BITS",
    "DEFAULT_COORD_BITS",
    "Commitment",
    "InvalidProof",
    "NormProof",
    "Opening",
    "commit",
    "make_context",
    "prove_norm",
    "verify_norm",
]
