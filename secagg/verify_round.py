"""Contribution verification inside a round (protocol.md §7, SPEC.md D11): the glue between the
norm proofs of :mod:`secagg.verify` and the masked upload.

When a round's config has a ``norm_bound``, each client

1. lifts its encoded ring vector to signed integers (two's complement, :func:`centred`),
2. commits to it (one Pedersen commitment per row, :func:`secagg.verify.commit`) and proves
   ``sum x_i^2 <= norm_bound`` under ``make_context(client id, session id, round)``,
3. appends its blinding factors to the vector, as ring elements, before masking: the masked
   upload is ``d + extra_elements`` long and the server only ever sees the *sum* of the
   blindings, exactly like the sum of the vectors.

The blindings are field elements (mod ``FIELD_ORDER``, about 2^255) but the ring is
``Z_2^b`` with ``b <= 32``: each one is split into ``L``-bit limbs, ``L = b - ceil(log2(n+1))``,
so the limbs of at most ``n`` clients add up to less than ``n * 2^L < 2^b`` and the ring sum of
every limb position is the exact integer sum. The server recombines
``sum_j S_j 2^(jL) mod FIELD_ORDER`` (:func:`combine_limbs`), which is the sum of the
survivors' blindings, adds the survivors' commitments, and checks that the result opens to the
centred lift of the unmasked sum (:func:`check_aggregate`). A client whose masked vector is not
the vector it committed to makes that check fail (Pedersen binding) and the round publishes
nothing; which client it was cannot be told from the sum (threat_models/malicious-clients.md).

The limb helpers are pure integer arithmetic; everything that touches the group imports
:mod:`secagg.verify` (the optional ``verify`` extra) only when called.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secagg._errors import (
    AggregateMismatch,
    ConfigError,
    EncodingError,
    InvalidContribution,
    NormBoundExceeded,
)

if TYPE_CHECKING:
    from secagg._rng import RandomSource
    from secagg.config import RoundConfig
    from secagg.verify import Commitment

__all__ = [
    "MAX_BOUND",
    "MAX_PROOF_BYTES",
    "Contribution",
    "centred",
    "check_aggregate",
    "check_norm",
    "combine_limbs",
    "extra_elements",
    "limb_bits",
    "limb_count",
    "max_commitment_bytes",
    "prove_contribution",
    "split_limbs",
    "squared_norm",
    "verify_contribution",
]

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

MAX_BOUND = 1 << 64  # norm_bound must be below this (secagg.verify proves 64-bit bounds)
MAX_PROOF_BYTES = 1 << 16  # a norm proof is a few KB; anything larger is refused unparsed


def _verify() -> Any:
    try:
        import secagg.verify as v
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ConfigError(
            "rounds with a norm bound need the 'verify' extra (py-arkworks-bls12381)"
        ) from exc
    return v


# -- limbs: field elements through the ring ------------------------------------------------------


def limb_bits(ring_bits: int, n: int) -> int:
    """Bits per limb so that ``n`` clients' limbs never wrap ``Z_2^ring_bits``:
    ``L = ring_bits - ceil(log2(n + 1))``, hence ``n * (2^L - 1) < 2^ring_bits``."""
    if n < 1 or not 1 <= ring_bits <= 32:
        raise ConfigError("limbs need n >= 1 and a ring of 1..32 bits")
    bits = ring_bits - math.ceil(math.log2(n + 1))
    if bits < 1:
        raise ConfigError(f"a {ring_bits}-bit ring has no room for limbs of {n} clients")
    return bits


def limb_count(bits_per_limb: int, modulus: int) -> int:
    """Limbs per field element: enough ``bits_per_limb``-bit limbs for any value below
    ``modulus``."""
    if bits_per_limb < 1 or modulus < 2:
        raise ConfigError("limbs need at least one bit and a modulus of at least 2")
    return -(-(modulus - 1).bit_length() // bits_per_limb)


def split_limbs(values: Sequence[int], bits_per_limb: int, count: int) -> U32:
    """Each value as ``count`` little-endian limbs of ``bits_per_limb`` bits (uint32), one
    value after the other. Raises :class:`EncodingError` for a value that does not fit."""
    if not 1 <= bits_per_limb <= 32:
        raise EncodingError("limbs are 1..32 bits")
    top = 1 << (bits_per_limb * count)
    mask = (1 << bits_per_limb) - 1
    out = np.empty(len(values) * count, dtype=np.uint32)
    for i, v in enumerate(values):
        v = int(v)
        if not 0 <= v < top:
            raise EncodingError(f"value {i} does not fit in {count} limbs of {bits_per_limb} bits")
        for j in range(count):
            out[i * count + j] = (v >> (j * bits_per_limb)) & mask
    return out


def combine_limbs(
    sums: npt.ArrayLike, bits_per_limb: int, count: int, modulus: int
) -> tuple[int, ...]:
    """Inverse of :func:`split_limbs` on limb-wise *sums*: ``sum_j S_j 2^(j L) mod modulus``
    for each group of ``count`` limbs (exact as long as no limb sum wrapped the ring)."""
    arr = np.asarray(sums)
    if arr.ndim != 1 or arr.dtype.kind not in "ui" or arr.size % count:
        raise EncodingError(f"limb sums must be a 1-D integer vector of a multiple of {count}")
    if arr.size and int(arr.min()) < 0:
        raise EncodingError("limb sums cannot be negative")
    ints = [int(v) for v in arr]
    return tuple(
        sum(ints[i + j] << (j * bits_per_limb) for j in range(count)) % modulus
        for i in range(0, len(ints), count)
    )


def _limb_layout(config: RoundConfig) -> tuple[int, int, int]:
    """(rows, bits per limb, limbs per blinding) of a verified round."""
    v = _verify()
    bits = limb_bits(config.ring_bits, config.n)
    return int(v.num_rows(config.d)), bits, limb_count(bits, int(v.FIELD_ORDER))


def extra_elements(config: RoundConfig) -> int:
    """Ring elements appended to the vector: every blinding factor, in limbs (0 when off)."""
    if config.norm_bound is None:
        return 0
    rows, _, count = _limb_layout(config)
    return rows * count


def max_commitment_bytes(d: int) -> int:
    """An upper bound on ``len(Commitment.to_bytes())`` for vectors of length ``d``."""
    return 64 + 49 * int(_verify().num_rows(d))


# -- integers -------------------------------------------------------------------------------------


def centred(config: RoundConfig, ring: npt.ArrayLike) -> I64:
    """The signed (two's-complement) lift of ring elements: what is committed and proven."""
    return config.encoding.to_signed(np.asarray(ring, dtype=np.uint32))


def squared_norm(x: npt.ArrayLike) -> int:
    """Exact ``sum x_i^2`` of an integer vector with ``|x_i| <= 2^31`` and fewer than 2^32
    entries, summed in 31-bit halves so that int64 cannot overflow."""
    a = np.asarray(x, dtype=np.int64)
    sq = a * a  # < 2^63 each
    lo = int(np.sum(sq & ((1 << 31) - 1), dtype=np.int64))
    hi = int(np.sum(sq >> 31, dtype=np.int64))
    return (hi << 31) + lo


def check_norm(config: RoundConfig, ring: npt.ArrayLike) -> None:
    """Raise :class:`NormBoundExceeded` if the centred vector is above the round's bound."""
    if config.norm_bound is None:
        return
    s = squared_norm(centred(config, ring))
    if s > config.norm_bound:
        raise NormBoundExceeded(
            f"the encoded vector's squared norm {s} is above the round's bound "
            f"{config.norm_bound}: this client cannot take part"
        )


# -- the client's side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Contribution:
    """What a client sends beside its vector: commitment and proof bytes, and the limbs of its
    blinding factors (appended to the vector before masking, never sent in the clear)."""

    commitment: bytes
    proof: bytes
    limbs: U32


def prove_contribution(
    config: RoundConfig, client_id: int, ring: npt.ArrayLike, rng: RandomSource
) -> Contribution:
    """Commit to ``ring``'s centred lift and prove the round's norm bound (seconds at large d)."""
    bound = config.norm_bound
    if bound is None or config.session_id is None:
        raise ConfigError("the round asks for no verification")
    v = _verify()
    x = centred(config, ring)
    check_norm(config, ring)
    context = v.make_context(client_id, config.session_id, config.round)
    commitment, opening = v.commit(x, rng)
    proof = v.prove_norm(opening, bound, context, rng)
    _, bits, count = _limb_layout(config)
    limbs = split_limbs(opening.blindings, bits, count)
    return Contribution(commitment.to_bytes(), proof.to_bytes(), limbs)


# -- the server's side ----------------------------------------------------------------------------


def verify_contribution(
    config: RoundConfig, client_id: int, commitment: bytes, proof: bytes
) -> Commitment:
    """Parse and verify one client's commitment and norm proof; returns the commitment.

    Raises :class:`InvalidContribution` (the sender is then excluded, before any unmasking).
    Pure: no state, safe to call from several threads.
    """
    bound = config.norm_bound
    if bound is None or config.session_id is None:
        raise InvalidContribution("this round carries no commitments or proofs")
    v = _verify()
    if not commitment or not proof:
        raise InvalidContribution("the round asks for a commitment and a norm proof")
    if len(commitment) > max_commitment_bytes(config.d) or len(proof) > MAX_PROOF_BYTES:
        raise InvalidContribution("commitment or proof too large")
    try:
        c: Commitment = v.Commitment.from_bytes(commitment)
        if c.d != config.d:
            raise v.InvalidProof(f"commitment to {c.d} coordinates, the round has {config.d}")
        p = v.NormProof.from_bytes(proof)
        v.verify_norm(c, p, bound, v.make_context(client_id, config.session_id, config.round))
    except v.InvalidProof as exc:
        raise InvalidContribution(f"norm proof rejected: {exc}") from None
    return c


def check_aggregate(
    config: RoundConfig, commitments: Mapping[int, Commitment], ring_sum: npt.ArrayLike
) -> None:
    """After unmasking: the survivors' commitments, added, must open to the centred lift of the
    first ``d`` elements of ``ring_sum`` with the blinding sum recombined from the rest.

    Raises :class:`AggregateMismatch` otherwise (someone's masked vector is not the one it
    committed to, or the sum wrapped the ring): the round must publish nothing.
    """
    if config.norm_bound is None:
        return
    v = _verify()
    full = np.asarray(ring_sum, dtype=np.uint32)
    rows, bits, count = _limb_layout(config)
    if not commitments or full.shape != (config.d + rows * count,):
        raise AggregateMismatch("nothing to check the unmasked sum against")
    blindings = combine_limbs(full[config.d :], bits, count, int(v.FIELD_ORDER))
    try:
        total = functools.reduce(operator.add, (commitments[u] for u in sorted(commitments)))
        v.check_opening(total, centred(config, full[: config.d]), blindings)
    except v.InvalidProof as exc:
        raise AggregateMismatch(
            f"the unmasked sum does not match the sum of the {len(commitments)} survivors' "
            f"commitments ({exc}): a client's masked vector is not the one it proved; "
            "nothing is published"
        ) from None
