"""Zero-knowledge L2-norm proofs for committed client vectors (protocol.md §7, threats.md IV).

Pure: no I/O, no clocks, no global RNG; randomness comes from a :class:`secagg.RandomSource`.
See :mod:`secagg.verify.norm` for the construction and its security argument.
"""

from secagg.verify.norm import (
    FIELD_ORDER,
    JL_ROWS,
    MAX_BOUND_BITS,
    MAX_COORD_BITS,
    MAX_DIM,
    Commitment,
    InvalidProof,
    NormProof,
    Opening,
    check_opening,
    commit,
    layout,
    make_context,
    num_rows,
    prove_norm,
    verify_norm,
)

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
