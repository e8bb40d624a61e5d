"""Zero-knowledge L2-norm proofs and upload-consistency proofs for committed client vectors
(docs/protocol.md §7; ``secagg/SPEC.md`` D11, D12).

Pure: no I/O, no clocks, no global RNG; randomness comes from a :class:`secagg.RandomSource`.
See :mod:`secagg.verify.norm` for the construction and ``threat_models/verification.md`` for
its soundness argument.
"""

from secagg.verify.norm import (
    CHECK_ROWS,
    FIELD_ORDER,
    JL_ROWS,
    MAX_BOUND_BITS,
    MAX_COORD_BITS,
    MAX_DIM,
    CheckStatement,
    CheckWitness,
    Commitment,
    InvalidProof,
    NormProof,
    Opening,
    check_opening,
    commit,
    commit_short,
    layout,
    make_context,
    num_rows,
    point_bytes,
    point_from_bytes,
    prove_norm,
    verify_norm,
)
from secagg.verify.projection import Projection, projection_for

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
    "Projection",
    "check_opening",
    "commit",
    "commit_short",
    "layout",
    "make_context",
    "num_rows",
    "point_bytes",
    "point_from_bytes",
    "projection_for",
    "prove_norm",
    "verify_norm",
]
