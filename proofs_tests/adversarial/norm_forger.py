"""A malicious prover for :mod:`secagg.verify.norm` (threats.md IV-04, IV-08; issue review).

It runs every step of the protocol *correctly* for whatever it committed to, so the only
thing that can stop it is the verifier's equations:

* every commitment it sends (the statement's row commitments and mask commitment included)
  may carry extra components on any generator: ``G``, ``H`` (vectors) or ``H0``, ``Ut``,
  ``Ui`` (scalars) -- the review's forgery hides an ``H`` part in a row commitment and a ``G``
  part in its copy;
* the slack, the carries ``q`` and the JL mask may be any field elements (``sqrt(-1)``,
  values that wrap the field, non-integers);
* every later message may be chosen after seeing the challenges: ``z`` (``choose_z``),
  the coefficient commitments (``choose_t``, default: the true coefficients of its own
  polynomial), the revealed scalars.

The polynomial ``<l(X), r(X)>`` is computed from the *actual* openings (injected parts
included), so a forgery fails only where the verifier's constant term, the exponent window or
the inner-product argument catch it. With no deviation the forger is an honest prover, and a
self-test checks that its proofs verify, so the harness cannot silently drift from the code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from secagg import DeterministicRandom
from secagg.verify import norm
from secagg.verify._algebra import (
    P,
    _base,
    _field_limbs,
    _gens,
    _inv,
    _ip,
    _ipa_prove,
    _msm,
    _msm_small,
    _pt_bytes,
    _rand,
    _split,
    _Transcript,
)
from secagg.verify.norm import (
    JL_ROWS,
    MAX_ATTEMPTS,
    CheckStatement,
    Commitment,
    NormProof,
    _centred_int,
    _challenges,
    _coefficients,
    _Exp,
    _exponents,
    _first_message,
    _fold_terms,
    _jl_block,
    _mask_range,
    _pad,
    _power,
    _public_blocks,
    _rows,
    _statement,
    _z_bytes,
    layout,
)

# Commitment names: "row{k}" (statement), "D{k}", "Cs", "Ds", "Cq", "Cmu", "SG", "SH", "CM".


@dataclass
class Deviation:
    """What the forger hides and chooses.

    ``vectors``: ``(commitment, "G" | "H", vector of length b)`` extra vector components;
    ``scalars``: ``(commitment, "H0" | "Ut" | "Ui", value)`` extra scalar components.
    """

    vectors: list[tuple[str, str, Sequence[int]]] = field(default_factory=list)
    scalars: list[tuple[str, str, int]] = field(default_factory=list)
    choose_z: Callable[[list[int]], list[int]] | None = None
    choose_t: Callable[[dict[int, int]], dict[int, int]] | None = None
    mu_values: Sequence[int] | None = None  # the JL mask, instead of a uniform one
    blind_zeros: Sequence[int] = ()  # positions where the blinding rows s_L, s_R are 0


@dataclass
class Forgery:
    commitment: Commitment
    proof: NormProof
    masks_point: Any | None
    dropped: dict[int, int]  # coefficients outside the window it could not commit to


def _exp_of(name: str, a: int) -> int:
    ex = _Exp(a)
    if name.startswith("row"):
        return int(name[3:]) + 1
    if name.startswith("D") and name[1:].isdigit():
        return -(int(name[1:]) + 1)
    return {
        "Cs": ex.slack,
        "Ds": -ex.slack,
        "Cq": ex.carries,
        "Cmu": ex.jl_mask,
        "SG": ex.blind_g,
        "SH": ex.blind_h,
        "CM": ex.masks,
    }[name]


def _row_blindings(a: int, seed: bytes) -> dict[str, int]:
    rng = DeterministicRandom(seed + b"/rows")
    return {f"row{k}": _rand(rng) for k in range(a)}


def forge_commitment(
    x: Sequence[int], deviation: Deviation | None = None, seed: bytes = b"forger"
) -> Commitment:
    """The row commitments :func:`forge` will use for ``x`` (what a cheater uploads first)."""
    dev = deviation or Deviation()
    v = np.array([int(t) for t in x], dtype=np.int64)
    a, b = layout(v.shape[0])
    rows = _rows(v, a, b)
    h0 = _base(b"H0")
    blind = _row_blindings(a, seed)
    gens = {
        "G": _gens(b"G", b),
        "H": _gens(b"H", b),
        "H0": h0,
        "Ut": _base(b"Ut"),
        "Ui": _base(b"Ui"),
    }
    pts = []
    for k in range(a):
        pt = _msm_small(b"G", rows[k].tolist(), h0, blind[f"row{k}"])
        for n, side, vec in dev.vectors:
            if n == f"row{k}":
                pt = pt + _msm(gens[side][: len(vec)], [int(t) for t in vec])
        for n, which, val in dev.scalars:
            if n == f"row{k}":
                pt = pt + _msm([gens[which]], [val])
        pts.append(pt)
    return Commitment(tuple(pts), v.shape[0])


def forge(
    x: Sequence[int],
    bound: int,
    context: bytes,
    *,
    slack: Sequence[int] | None = None,
    deviation: Deviation | None = None,
    check: tuple[CheckStatement, Sequence[int], int] | None = None,
    q: Sequence[int] | None = None,
    seed: bytes = b"forger",
) -> Forgery:
    """Build a proof for ``x`` under ``bound`` with the given deviation.

    ``check`` is ``(statement, M, blinding)``: the statement's ``masks`` point is replaced by
    ``<M, G> + blinding H0`` plus any ``"CM"`` injections.
    """
    dev = deviation or Deviation()
    rng = DeterministicRandom(seed)
    v = np.array([int(t) for t in x], dtype=np.int64)
    d = v.shape[0]
    a, b = layout(d)
    rows = _rows(v, a, b)
    g, h, h0, ut, ui = _gens(b"G", b), _gens(b"H", b), _base(b"H0"), _base(b"Ut"), _base(b"Ui")
    gens = {"G": g, "H": h, "H0": h0, "Ut": ut, "Ui": ui}

    def extra_point(name: str) -> Any:
        pts: list[Any] = []
        scs: list[int] = []
        for n, side, vec in dev.vectors:
            if n == name:
                pts += gens[side][: len(vec)]
                scs += [int(t) for t in vec]
        for n, which, val in dev.scalars:
            if n == name:
                pts.append(gens[which])
                scs.append(val)
        return _msm(pts, scs) if pts else None

    def with_extra(name: str, pt: Any) -> Any:
        add = extra_point(name)
        return pt if add is None else pt + add

    blind: dict[str, int] = dict(_row_blindings(a, seed))
    for k in range(a):
        blind[f"D{k}"] = _rand(rng)
    for n in ("Cs", "Ds", "Cq", "Cmu", "SG", "SH"):
        blind[n] = _rand(rng)
    row_pts = [
        with_extra(f"row{k}", _msm_small(b"G", rows[k].tolist(), h0, blind[f"row{k}"]))
        for k in range(a)
    ]
    commitment = Commitment(tuple(row_pts), d)
    st = None
    masks_vals: list[int] = []
    if check is not None:
        st0, masks_vals, m_blind = check[0], [int(t) for t in check[1]], check[2]
        blind["CM"] = m_blind
        cm = with_extra("CM", _msm([*_gens(b"G", len(masks_vals)), h0], [*masks_vals, m_blind]))
        st = CheckStatement(st0.seed, st0.ring_bits, st0.y, cm, st0.carry_bound)
    checked = st is not None
    s_vec = [int(t) for t in (slack if slack is not None else [0] * 16)]
    q_vec = [int(t) for t in (q or [])] if checked else []
    big_d = [
        with_extra(f"D{k}", _msm_small(b"H", rows[k].tolist(), h0, blind[f"D{k}"]))
        for k in range(a)
    ]
    c_s = with_extra("Cs", _msm_small(b"G", [t % P for t in s_vec], h0, blind["Cs"]))
    d_s = with_extra("Ds", _msm_small(b"H", [t % P for t in s_vec], h0, blind["Ds"]))
    c_q = (
        with_extra("Cq", _msm_small(b"G", [t % P for t in q_vec], h0, blind["Cq"]))
        if checked
        else None
    )
    s_l = [0 if i in dev.blind_zeros else _rand(rng) for i in range(b)]
    s_r = [0 if i in dev.blind_zeros else _rand(rng) for i in range(b)]
    s_g = with_extra("SG", _msm([*g, h0], [*s_l, blind["SG"]]))
    s_h = with_extra("SH", _msm([*h, h0], [*s_r, blind["SH"]]))
    fixed = [*big_d, c_s, d_s, *([c_q] if c_q is not None else [])]
    big_u, big_s = _mask_range(d, bound, st)

    # The G-side content the JL rows see: rows, slack, carries plus any injected G parts.
    def g_vec(name: str, base: Sequence[int]) -> list[int]:
        out = [int(t) for t in base] + [0] * (b - len(base))
        for n, side, vec in dev.vectors:
            if n == name and side == "G":
                for i, t in enumerate(vec):
                    out[i] += int(t)
        return out

    for _ in range(MAX_ATTEMPTS):
        if dev.mu_values is not None:
            mu_v = [int(t) for t in dev.mu_values]
        else:
            mu_v = [
                int.from_bytes(rng.bytes(16), "big") % (2 * big_s) - big_s for _ in range(JL_ROWS)
            ]
        blind["Cmu"] = _rand(rng)
        c_mu = with_extra("Cmu", _msm_small(b"G", [t % P for t in mu_v], h0, blind["Cmu"]))
        tr = _Transcript(norm._LABEL, context)
        _statement(tr, d, a, b, bound, commitment.points, st)
        seed_jl = _first_message(tr, [*fixed, c_mu, s_g, s_h])
        z_true = [0] * JL_ROWS
        sources = [(k, g_vec(f"row{k}", rows[k].tolist())) for k in range(a)]
        sources.append((a, g_vec("Cs", s_vec)))
        if checked:
            sources.append((a + 1, g_vec("Cq", q_vec)))
        for k, vec in sources:
            blk = _jl_block(seed_jl, k, b).astype(object)
            prod = blk.dot(np.array(vec, dtype=object))
            z_true = [zt + int(pv) for zt, pv in zip(z_true, prod, strict=True)]
        mu_g = g_vec("Cmu", mu_v)[:JL_ROWS]
        z_true = [_centred_int(zt + m) for zt, m in zip(z_true, mu_g, strict=True)]
        if dev.choose_z is not None or all(abs(t) <= big_s - big_u for t in z_true):
            break
    z = dev.choose_z(z_true) if dev.choose_z is not None else z_true

    ch = _challenges(tr, z, b, checked)
    blocks = _public_blocks(seed_jl, a, b, d, ch, st)
    g_terms, h_terms = norm._terms(a, ch, st.ring_bits if st else 0, checked)

    def limbs(vals: Sequence[int]) -> Any:
        return _pad(_field_limbs([int(t) % P for t in vals]), b)

    gl: dict[str, Any] = {f"row{k}": _split(rows[k], 2) for k in range(a)}
    gl["slack"] = limbs(s_vec)
    gl["mu"] = limbs(mu_v)
    gl["sL"] = _field_limbs(s_l)
    hl: dict[str, Any] = {f"row{k}": gl[f"row{k}"] for k in range(a)}
    hl["slack"] = gl["slack"]
    hl["sR"] = _field_limbs(s_r)
    if checked:
        gl["q"] = limbs(q_vec)
        gl["M"] = limbs(masks_vals)
    for i, (n, side, vec) in enumerate(dev.vectors):
        key = f"inj{i}"
        e_n = _exp_of(n, a)
        (gl if side == "G" else hl)[key] = limbs(vec)
        (g_terms if side == "G" else h_terms).append((e_n, 1, key, "commit"))
    gblocks = {**blocks, **gl}
    hblocks = {**blocks, **hl}
    coeff = _coefficients(g_terms, h_terms, gblocks, hblocks)
    exps = _exponents(a, checked)
    dropped = {s: c for s, c in coeff.items() if s != 0 and s not in exps and c}
    committed_t = {s: coeff.get(s, 0) for s in exps}
    if dev.choose_t is not None:
        committed_t = dev.choose_t(dict(coeff))
    taus = {s: _rand(rng) for s in exps}
    big_t = [_msm([ut, h0], [committed_t.get(s, 0), taus[s]]) for s in exps]
    tr.absorb(b"T", b"".join(_pt_bytes(p) for p in big_t))
    e = tr.challenge(b"e")
    ei = _inv(e)
    l_vec = _fold_terms(g_terms, gblocks, e, ("commit", "public"))
    r_vec = _fold_terms(h_terms, hblocks, e, ("commit", "public"))
    t_hat = _ip(l_vec, r_vec)
    tau = sum(_power(e, ei, s) * taus[s] for s in exps) % P
    names = [f"row{k}" for k in range(a)] + [f"D{k}" for k in range(a)]
    names += ["Cs", "Ds", "Cmu", "SG", "SH"] + (["Cq", "CM"] if checked else [])
    mu = 0
    for n in names:
        extra_h0 = sum(val for m, which, val in dev.scalars if m == n and which == "H0")
        mu += _power(e, ei, _exp_of(n, a)) * (blind[n] + extra_h0)
    mu %= P
    tr.absorb(b"scalars", b"".join(val.to_bytes(32, "big") for val in (t_hat, tau, mu)))
    u0 = tr.challenge(b"u")
    ls, rs, a_fin, b_fin = _ipa_prove(tr, g, h, _msm([ui], [u0]), l_vec, r_vec)
    proof = NormProof(
        d, tuple(big_d), c_s, d_s, c_q, c_mu, s_g, s_h, tuple(z), tuple(big_t), t_hat, tau, mu,
        ls, rs, a_fin, b_fin, _z_bytes(big_s),
    )  # fmt: skip
    return Forgery(commitment, proof, st.masks if st is not None else None, dropped)


def statement_with(check: CheckStatement, masks_point: Any | None) -> CheckStatement:
    """The statement a verifier sees for a forgery (the forger chose the masks point)."""
    return CheckStatement(check.seed, check.ring_bits, check.y, masks_point, check.carry_bound)


def field_vector(values: Sequence[int], length: int) -> list[int]:
    out = [int(t) % P for t in values]
    return out + [0] * (length - len(out))
