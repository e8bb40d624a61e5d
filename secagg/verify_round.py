"""Contribution verification inside a round (docs/protocol.md §7, SPEC.md D11 and D12): the glue
between the proofs of :mod:`secagg.verify` and the masked upload.

When a round's config has a ``norm_bound``:

1. MaskedInput: each client lifts its encoded ring vector to signed integers (:func:`centred`),
   commits to it row by row (:func:`commit_input`) and sends the commitment with its masked
   upload ``y``.
2. CHECK: once every upload is in, the server reveals a fresh seed; it fixes a public binary
   Toeplitz matrix ``R`` (:func:`projection`). Each client projects its own masks: the self
   mask ``A = R PRG(b_u)`` and, for every neighbour ``v`` it masked with, ``P_uv =
   R PRG(s_uv)``. It commits to each with a blinding derived from the mask's own key
   (:func:`claim_point`), so both ends of a pair produce the *same* point, and proves in zero
   knowledge (:func:`answer_check`) that its committed vector has the bounded norm and that
   ``R x + 2^b q + M = R y`` with ``M = A + sum_v sign(u, v) P_uv`` and a small ``q``.
3. The server verifies each proof (:func:`verify_check`) and compares the two claims of every
   pair of responders; a failing proof excludes its sender, and a disagreeing pair excludes
   both, before anything is unmasked. After unmasking it recomputes every claim it can from the
   reconstructed secrets (each survivor's self mask, each dropped neighbour's pair masks): a
   false one names its author (signed evidence) and the round publishes nothing.

Why it works (SPEC.md D12): if all claims are true, the proven relation says ``R (y - x - m)``
is ``0 mod 2^b``, and for a random binary Toeplitz ``R`` that forces ``y = x + m (mod 2^b)``
except with probability ``2^-J``: the upload is the committed vector, masked. Nothing about
``x`` is revealed: the claims are hiding commitments, their blindings stay secret for every
pair of survivors, and the proof is zero knowledge.

Everything that touches the group imports :mod:`secagg.verify` (the optional ``verify`` extra)
only when called.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from secagg._crypto import ct_equal
from secagg._errors import ConfigError, EncodingError, InvalidContribution, NormBoundExceeded
from secagg.prg import prg_slice

if TYPE_CHECKING:
    from secagg._rng import RandomSource
    from secagg.config import RoundConfig
    from secagg.verify import Commitment, Opening, Projection

__all__ = [
    "CHECK_SEED_BYTES",
    "MAX_BOUND",
    "MAX_PROOF_BYTES",
    "POINT_BYTES",
    "CheckAnswer",
    "answer_check",
    "centred",
    "check_digest",
    "check_norm",
    "claim_bytes",
    "claim_point",
    "claims_hold",
    "commit_input",
    "mask_projection",
    "mask_projections",
    "max_commitment_bytes",
    "parse_commitment",
    "parse_point",
    "projected_sum_matches",
    "projection",
    "squared_norm",
    "verify_check",
]

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]

MAX_BOUND = 1 << 64  # norm_bound must be below this (secagg.verify proves 64-bit bounds)
MAX_PROOF_BYTES = 1 << 16  # a proof is under 10 KB; anything larger is refused unparsed
POINT_BYTES = 48
CHECK_SEED_BYTES = 32
_SEED_LABEL = b"secagg/v1/check-seed"
_BLIND_LABEL = b"secagg/v1/claim-blinding"


def _verify() -> Any:
    try:
        import secagg.verify as v
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ConfigError(
            "rounds with a norm bound need the 'verify' extra (py-arkworks-bls12381)"
        ) from exc
    return v


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


# -- the public challenge and the claims -----------------------------------------------------------


def _session_seed(config: RoundConfig, seed: bytes) -> bytes:
    """The projection seed, bound to the round: a seed from another round is another ``R``."""
    if len(seed) != CHECK_SEED_BYTES:
        raise InvalidContribution(f"the check seed must be {CHECK_SEED_BYTES} bytes")
    return hashlib.sha256(_SEED_LABEL + config.digest + seed).digest()


def projection(config: RoundConfig, seed: bytes) -> Projection:
    """The round's public ``J x d`` binary Toeplitz matrix for the revealed ``seed``."""
    return _verify().projection_for(_session_seed(config, seed), config.d)  # type: ignore[no-any-return]


def _claim_blinding(config: RoundConfig, seed: bytes, key: bytes) -> int:
    """The blinding of a mask claim, derived from the mask's own AES key: both ends of a pair
    derive the same value, and the server learns it only if it learns the key. Uniform mod
    the group order by rejection from a SHAKE-256 stream."""
    v = _verify()
    order = int(v.FIELD_ORDER)
    stream = hashlib.shake_256(_BLIND_LABEL + config.digest + seed + key).digest(32 * 8)
    for i in range(0, len(stream), 32):
        val = int.from_bytes(stream[i : i + 32], "little") & ((1 << 255) - 1)
        if val < order:
            return val
    raise AssertionError("unreachable")  # pragma: no cover: 8 tries each fail w.p. < 0.1


def mask_projection(config: RoundConfig, proj: Projection, key: bytes) -> list[int]:
    """``R PRG(key)`` with the mask reduced mod ``2^b``, exactly (``J`` integers)."""
    return mask_projections(config, proj, [key])[0]


_PROJECT_BATCH = 16  # masks expanded and projected together (16 x d x 8 bytes at a time)


def mask_projections(
    config: RoundConfig, proj: Projection, keys: Sequence[bytes]
) -> list[list[int]]:
    """:func:`mask_projection` of every key, a batch of masks per matrix product: the server
    recomputes one per survivor after unmasking, and a client one per neighbour."""
    out: list[list[int]] = []
    for i in range(0, len(keys), _PROJECT_BATCH):
        batch = [prg_slice(k, 0, config.d) for k in keys[i : i + _PROJECT_BATCH]]
        out.extend(proj.apply(np.stack(batch) & np.uint32(config.encoding.mask)))
    return out


_BATCH_GROUP = 1 << 15  # claims combined per projection: every combined entry stays below 2^48


def claims_hold(
    config: RoundConfig,
    seed: bytes,
    proj: Projection,
    keys: Sequence[bytes],
    claims: Sequence[bytes],
    signs: Sequence[int],
    rng: RandomSource,
) -> list[int] | None:
    """Check every mask claim at once; return ``sum_e signs[e] * R PRG(keys[e])`` if all hold.

    Small-exponent batch verification (Bellare, Garay and Rabin, EUROCRYPT 1998): with secret
    64-bit weights ``r_e`` from the server's own randomness, the claims hold together iff
    ``sum r_e C_e == commit(R (sum r_e m_e), sum r_e beta_e)``, except with probability
    ``2^-64`` (G1 has prime order, so a non-zero ``C_e - commit(R m_e, beta_e)`` cancels only
    for one value of ``r_e``). One projection of the combined masks replaces one per claim.
    ``None`` (some claim is false, or malformed, or not canonically encoded): the caller
    checks them one by one, which names the liar.
    """
    v = _verify()
    from secagg.verify._algebra import _msm  # the extra is present: _verify() checked

    rows = proj.rows
    total = [0] * rows
    combined = [0] * rows
    weights = [int.from_bytes(rng.bytes(8), "little") for _ in keys]
    for g0 in range(0, len(keys), _BATCH_GROUP):
        g1 = min(g0 + _BATCH_GROUP, len(keys))
        acc = np.zeros((2, 5, config.d), dtype=np.float64)  # (mask limb, weight limb / sign, d)
        for b0 in range(g0, g1, _PROJECT_BATCH):
            b1 = min(b0 + _PROJECT_BATCH, g1)
            masks = np.stack([prg_slice(k, 0, config.d) for k in keys[b0:b1]])
            masks &= np.uint32(config.encoding.mask)
            coef = np.array(
                [[(weights[e] >> (16 * j)) & 0xFFFF for e in range(b0, b1)] for j in range(4)]
                + [[signs[e] for e in range(b0, b1)]],
                dtype=np.float64,
            )
            acc[0] += coef @ (masks & np.uint32(0xFFFF)).astype(np.float64)
            acc[1] += coef @ (masks >> np.uint32(16)).astype(np.float64)
        # Exact: every entry is a sum of at most 2^15 products below 2^32.
        got = proj.apply(np.rint(acc.reshape(10, config.d)).astype(np.int64))
        for j in range(rows):
            for h in range(2):
                part = got[5 * h : 5 * h + 5]
                combined[j] += sum(part[w][j] << (16 * w) for w in range(4)) << (16 * h)
                total[j] += part[4][j] << (16 * h)
    try:
        points = [v.point_from_bytes(c) for c in claims]
    except v.InvalidProof:
        return None
    if any(v.point_bytes(p) != c for p, c in zip(points, claims, strict=True)):
        return None  # a non-canonical encoding: the one-by-one byte comparison decides
    blind = sum(w * _claim_blinding(config, seed, k) for w, k in zip(weights, keys, strict=True))
    lhs = _msm(points, weights)
    rhs = v.commit_short(combined, blind)
    if not ct_equal(v.point_bytes(lhs), v.point_bytes(rhs)):
        return None
    return total


def claim_point(config: RoundConfig, seed: bytes, projected: Sequence[int], key: bytes) -> Any:
    """The commitment to ``projected = R PRG(key)`` (:func:`mask_projection`) with the
    key-derived blinding (a G1 point)."""
    v = _verify()
    return v.commit_short(projected, _claim_blinding(config, seed, key))


def claim_bytes(config: RoundConfig, seed: bytes, projected: Sequence[int], key: bytes) -> bytes:
    """:func:`claim_point`, encoded (48 bytes)."""
    return _verify().point_bytes(claim_point(config, seed, projected, key))  # type: ignore[no-any-return]


# -- the client's side ----------------------------------------------------------------------------


def commit_input(
    config: RoundConfig, ring: npt.ArrayLike, rng: RandomSource
) -> tuple[bytes, Opening]:
    """Commit to ``ring``'s centred lift (at the MaskedInput stage); the opening stays here."""
    if config.norm_bound is None:
        raise ConfigError("the round asks for no verification")
    check_norm(config, ring)
    commitment, opening = _verify().commit(centred(config, ring), rng)
    return commitment.to_bytes(), opening


@dataclass(frozen=True, slots=True)
class CheckAnswer:
    """What a client sends at the CHECK stage: its self-mask claim, one claim per neighbour it
    masked with, and the proof."""

    self_claim: bytes
    pair_claims: tuple[tuple[int, bytes], ...]
    proof: bytes


def answer_check(
    config: RoundConfig,
    client_id: int,
    opening: Opening,
    upload: U32,
    seed: bytes,
    self_key: bytes,
    pair_keys: Sequence[tuple[int, bytes, int]],
    rng: RandomSource,
) -> CheckAnswer:
    """Claims and the norm + consistency proof (SPEC.md D12). ``pair_keys`` lists
    ``(neighbour, mask key, sign)`` for every pairwise mask this client added.

    Security: the claims' blindings come from the mask keys; the proof is zero knowledge.
    """
    bound = config.norm_bound
    if bound is None or config.session_id is None:
        raise ConfigError("the round asks for no verification")
    v = _verify()
    proj = projection(config, seed)
    masks = [(1, self_key)] + [(sign, key) for _, key, sign in pair_keys]
    projected = proj.apply(
        np.stack([prg_slice(k, 0, config.d) & np.uint32(config.encoding.mask) for _, k in masks])
    )
    order = int(v.FIELD_ORDER)
    m_vals = [
        sum(s * p[j] for (s, _), p in zip(masks, projected, strict=True))
        for j in range(v.CHECK_ROWS)
    ]
    blinds = [_claim_blinding(config, seed, k) for _, k in masks]
    m_blind = sum(s * b for (s, _), b in zip(masks, blinds, strict=True)) % order
    points = [v.commit_short(p, b) for p, b in zip(projected, blinds, strict=True)]
    m_point = points[0]
    for (sign, _), pt in zip(masks[1:], points[1:], strict=True):
        m_point = m_point + pt if sign > 0 else m_point - pt
    statement = v.CheckStatement(
        _session_seed(config, seed),
        config.ring_bits,
        tuple(proj.apply(upload)[0]),
        m_point,
        len(pair_keys) + 1,
    )
    context = v.make_context(client_id, config.session_id, config.round)
    try:
        proof = v.prove_norm(
            opening, bound, context, rng, (statement, v.CheckWitness(tuple(m_vals), m_blind))
        )
    except EncodingError as exc:
        raise EncodingError(f"cannot prove this contribution: {exc}") from None
    return CheckAnswer(
        v.point_bytes(points[0]),
        tuple((u, v.point_bytes(pt)) for (u, _, _), pt in zip(pair_keys, points[1:], strict=True)),
        proof.to_bytes(),
    )


# -- the server's side ----------------------------------------------------------------------------


def parse_commitment(config: RoundConfig, data: bytes) -> Commitment:
    """Parse one client's row commitments; :class:`InvalidContribution` if malformed."""
    v = _verify()
    if not data or len(data) > max_commitment_bytes(config.d):
        raise InvalidContribution("the round asks for a commitment of bounded size")
    try:
        c: Commitment = v.Commitment.from_bytes(data)
    except v.InvalidProof as exc:
        raise InvalidContribution(f"commitment rejected: {exc}") from None
    if c.d != config.d:
        raise InvalidContribution(f"commitment to {c.d} coordinates, the round has {config.d}")
    return c


def parse_point(data: bytes) -> Any:
    """Parse a 48-byte claim; :class:`InvalidContribution` if not a canonical G1 point."""
    v = _verify()
    try:
        return v.point_from_bytes(data)
    except v.InvalidProof as exc:
        raise InvalidContribution(f"claim rejected: {exc}") from None


def verify_check(
    config: RoundConfig,
    client_id: int,
    commitment: Commitment,
    seed: bytes,
    upload_projection: Sequence[int],
    self_claim: Any,
    pair_claims: Sequence[tuple[Any, int]],
    proof: bytes,
) -> None:
    """Verify one client's proof against its commitment, its upload's projection and the
    point ``C_M`` assembled from its claims (``pair_claims``: ``(point, sign)``).

    Raises :class:`InvalidContribution`. Pure and thread-safe.
    """
    bound = config.norm_bound
    if bound is None or config.session_id is None:
        raise InvalidContribution("this round carries no proofs")
    v = _verify()
    if not proof or len(proof) > MAX_PROOF_BYTES:
        raise InvalidContribution("the round asks for a proof of bounded size")
    m_point = self_claim
    for pt, sign in pair_claims:
        m_point = m_point + pt if sign > 0 else m_point - pt
    try:
        statement = v.CheckStatement(
            _session_seed(config, seed),
            config.ring_bits,
            tuple(int(y) for y in upload_projection),
            m_point,
            len(pair_claims) + 1,
        )
        p = v.NormProof.from_bytes(proof)
        context = v.make_context(client_id, config.session_id, config.round)
        v.verify_norm(commitment, p, bound, context, statement)
    except v.InvalidProof as exc:
        raise InvalidContribution(f"proof rejected: {exc}") from None


def projected_sum_matches(
    config: RoundConfig,
    proj: Projection,
    ring_sum: U32,
    uploads: Sequence[int],
    masks: Sequence[int],
) -> bool:
    """The last line of defence: ``R S = sum R y_u - sum M_u (mod 2^b)`` for the unmasked sum
    ``S``, with every mask projection ``M_u`` recomputed from the reconstructed secrets."""
    mod = 1 << config.ring_bits
    got = proj.apply(np.asarray(ring_sum, dtype=np.uint32))[0]
    return all((g - (y - m)) % mod == 0 for g, y, m in zip(got, uploads, masks, strict=True))


def check_digest(
    seed: bytes, self_claim: bytes, pair_claims: Sequence[tuple[int, bytes]], proof: bytes
) -> bytes:
    """What a CheckResponse's signature covers (with the sender and the config digest)."""
    h = hashlib.sha256(b"secagg/v1/check-response")
    h.update(seed + self_claim)
    for v, c in sorted(pair_claims):
        h.update(struct.pack(">I", v) + c)
    h.update(hashlib.sha256(proof).digest())
    return h.digest()
