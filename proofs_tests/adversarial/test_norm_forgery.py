"""A malicious prover against the norm and consistency proofs (threats.md IV-04; the review).

Every test builds a proof with :func:`norm_forger.forge`, which follows the protocol exactly
for whatever it committed to, and asserts that no vector over the bound (or an upload that
does not match its commitment) verifies. ``test_review_forgery_verifies_without_the_test``
shows the harness is a real attacker: with the verifier's no-H-component test switched off,
the review's forgery of |x|^2 = 10^6 under bound 100 goes through.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proofs_tests.adversarial.norm_forger import Deviation, forge, statement_with
from secagg.verify import (
    CHECK_ROWS,
    CheckStatement,
    InvalidProof,
    Projection,
    commit_short,
    make_context,
    norm,
    verify_norm,
)
from secagg.verify._algebra import P
from secagg.verify.norm import layout

CTX = make_context(5, bytes(range(16)), 2)
SQRT_M1 = pow(5, (P - 1) // 4, P)


def _check_for(x: list[int], masks: list[list[int]], signs: list[int], w: int, seed: bytes):
    """An honest consistency statement for ``x`` masked with ``masks`` (and its witness)."""
    d = len(x)
    ring = [t % (1 << w) for t in x]
    y = [
        (r + sum(s * m[i] for s, m in zip(signs, masks, strict=True))) % (1 << w)
        for i, r in enumerate(ring)
    ]
    proj = Projection(seed, d)
    yp = proj.apply(np.array(y, dtype=np.int64))[0]
    pm = proj.apply(np.array(masks, dtype=np.int64))
    m_proj = [sum(s * pm[k][j] for k, s in enumerate(signs)) for j in range(CHECK_ROWS)]
    rx = proj.apply(np.array(x, dtype=np.int64))[0]
    q = [(a - b - c) >> w for a, b, c in zip(yp, rx, m_proj, strict=True)]
    st_ = CheckStatement(seed, w, tuple(yp), commit_short(m_proj, 99), len(masks) + 1)
    return st_, m_proj, q, y


def _verifies(f, bound: int, check: CheckStatement | None = None) -> bool:
    st_ = statement_with(check, f.masks_point) if check is not None else None
    try:
        verify_norm(f.commitment, f.proof, bound, CTX, st_)
    except InvalidProof:
        return False
    return True


def _review_forgery(x: list[int], bound: int) -> Deviation:
    """The review's attack: an H component h in row commitment 0 and a G component g in its
    copy D_0, with <g, h> = bound - |x|^2 (mod p); supports away from every other block."""
    b = layout(len(x))[1]
    pos = b - 1
    h = [0] * b
    g = [0] * b
    h[pos] = 1
    g[pos] = (bound - sum(t * t for t in x)) % P
    return Deviation(vectors=[("row0", "H", h), ("D0", "G", g)], blind_zeros=[pos])


def test_honest_forger_proofs_verify() -> None:
    """Self-test: without deviations the harness is an honest prover."""
    x = [3, -4, 12] + [0] * 200
    bound = 169
    f = forge(x, bound, CTX, slack=[0] * 16)
    assert not f.dropped and _verifies(f, bound)
    masks = [[(7 * i + j) % 256 for i in range(len(x))] for j in range(3)]
    check, m_proj, q, _ = _check_for(x, masks, [1, 1, -1], 8, bytes(32))
    f = forge(x, bound, CTX, slack=[0] * 16, check=(check, m_proj, 99), q=q)
    assert _verifies(f, bound, check)


def test_both_limb_layouts_of_the_consistency_coefficients_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows longer than 2^14 take R^T zeta_c cut into limbs below 2^17; forcing that layout at
    a small size, honest proofs still verify and a deviating upload still fails."""
    x = [5, -6, 7] + [0] * 250
    masks = [[(11 * i + 3 * j) % 256 for i in range(len(x))] for j in range(2)]
    check, m_proj, q, y = _check_for(x, masks, [1, -1], 8, bytes(range(32)))
    proj = Projection(check.seed, len(x))
    y[4] = (y[4] + 1) % 256
    bad = CheckStatement(
        check.seed, 8, tuple(proj.apply(np.array(y))[0]), check.masks, check.carry_bound
    )
    for raw_max in (norm._RAW_WC_MAX_ROW, 0):
        monkeypatch.setattr(norm, "_RAW_WC_MAX_ROW", raw_max)
        f = forge(x, 110, CTX, slack=[0] * 16, check=(check, m_proj, 99), q=q)
        assert _verifies(f, 110, check)
        f = forge(x, 110, CTX, slack=[0] * 16, check=(bad, m_proj, 99), q=q)
        assert not _verifies(f, 110, bad)


def test_review_forgery_is_rejected() -> None:
    """|x|^2 = 10^6 against bound 100: the cross term of the hidden components would balance
    the norm, but the delta_h test sees the H component of row commitment 0."""
    x = [1000] + [0] * 4199  # rows of 256: position 255 is beyond the JL mask
    f = forge(x, 100, CTX, deviation=_review_forgery(x, 100))
    assert not f.dropped  # every other cross term stays in the committed window
    assert not _verifies(f, 100)


def test_review_forgery_verifies_without_the_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same forgery with the verifier's no-H-component terms removed: it verifies. This
    is the hole of the previous construction, and proof that the harness attacks for real."""
    real = norm._terms

    def without_test(a, ch, w_bits, checked):  # type: ignore[no-untyped-def]
        g, h = real(a, ch, w_bits, checked)
        return [t for t in g if not (t[0] < 0 and t[2] == "theta")], h

    monkeypatch.setattr(norm, "_terms", without_test)
    x = [1000] + [0] * 4199
    f = forge(x, 100, CTX, deviation=_review_forgery(x, 100))
    assert _verifies(f, 100)


def test_colluding_components_in_the_slack_and_copies_are_rejected() -> None:
    """The slack's commitments hide the same swap (H part in C_s, G part in D_s)."""
    x = [500, 500] + [0] * 254
    bound = 1000
    b = layout(len(x))[1]
    h = [0] * b
    g = [0] * b
    h[b - 2] = 1
    g[b - 2] = (bound - 500_000) % P
    f = forge(x, bound, CTX, deviation=Deviation(vectors=[("Cs", "H", h), ("Ds", "G", g)]))
    assert not _verifies(f, bound)


# Every commitment, every generator family: extra components of random values.
_VECTOR_TARGETS = [
    ("row0", "H"), ("row1", "H"), ("D0", "G"), ("D1", "G"), ("Cs", "H"), ("Ds", "G"),
    ("Cmu", "H"), ("SG", "H"), ("SH", "G"), ("row0", "G"), ("D0", "H"), ("Cs", "G"),
]  # fmt: skip
_SCALAR_TARGETS = [
    (n, w) for n in ("row0", "D1", "Cs", "Ds", "Cmu", "SG", "SH") for w in ("Ut", "Ui")
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    targets=st.lists(st.sampled_from(_VECTOR_TARGETS), min_size=1, max_size=3, unique=True),
    scalars=st.lists(st.sampled_from(_SCALAR_TARGETS), max_size=2, unique=True),
    vals=st.lists(st.integers(1, P - 1), min_size=6, max_size=6),
    pos=st.integers(0, 255),
)
def test_any_extra_component_in_any_commitment_is_rejected(targets, scalars, vals, pos) -> None:
    """A vector 1000x over the bound, with extra G/H/Ut/Ui components anywhere: never verifies."""
    x = [2000, -3000] + [0] * 254
    bound = 13_000  # |x|^2 = 1.3e7
    b = layout(len(x))[1]
    vectors = []
    for i, (name, side) in enumerate(targets):
        vec = [0] * b
        vec[(pos + 7 * i) % b] = vals[i]
        vectors.append((name, side, vec))
    dev = Deviation(
        vectors=vectors, scalars=[(n, w, vals[3 + i]) for i, (n, w) in enumerate(scalars)]
    )
    f = forge(x, bound, CTX, deviation=dev)
    assert not _verifies(f, bound)


def test_permuted_copies_lower_the_norm_and_are_rejected() -> None:
    """Rows v and -v with swapped copies: sum <C_k, D_k> = -2|v|^2. The delta (row equality)
    term sees that the copies are not the committed rows."""
    b = 128
    v = [40] * 10 + [0] * (b - 10)
    x = v + [-t for t in v]
    diff0 = [(-t - t) % P for t in v]  # D_0 = row1 = -v: add -2v
    diff1 = [(t + t) % P for t in v]  # D_1 = row0 = v: add 2v
    bound = 0
    f = forge(x, bound, CTX, deviation=Deviation(vectors=[("D0", "H", diff0), ("D1", "H", diff1)]))
    assert not _verifies(f, bound)


def test_field_wrapping_slack_with_chosen_projection_is_rejected() -> None:
    """IV-04: slack sqrt(-1) makes the field norm exact for a vector one unit over; the JL
    projection is then out of range, and one clipped into range breaks the JL relation."""
    x = [30, 40, 1] + [0] * 197
    bound = 2500  # |x|^2 = 2501
    slack = [SQRT_M1] + [0] * 15
    f = forge(x, bound, CTX, slack=slack)
    assert not _verifies(f, bound)
    u, s = norm._mask_range(len(x), bound)
    clip = Deviation(choose_z=lambda z: [max(-(s - u), min(s - u, t)) for t in z])
    f = forge(x, bound, CTX, slack=slack, deviation=clip)
    assert not _verifies(f, bound)


def test_chosen_coefficient_commitments_do_not_absorb_the_discrepancy() -> None:
    """Committing any T_s other than the true coefficients cannot fix the constant term: the
    evaluation point e is drawn after the T_s."""
    x = [1000] + [0] * 299

    def shift(coeff: dict[int, int]) -> dict[int, int]:
        out = {s: c for s, c in coeff.items() if s != 0}
        out[1] = (out.get(1, 0) + 100 - 10**6) % P
        return out

    f = forge(x, 100, CTX, deviation=Deviation(choose_t=shift))
    assert not _verifies(f, 100)


def test_upload_that_does_not_match_the_commitment_is_rejected() -> None:
    """Consistency: the upload carries +1 on one coordinate beyond x + masks. The integer q
    does not exist; a q computed in the field (dividing by 2^W mod p) is huge, so the JL
    projection rejects it, and a clipped projection breaks the JL relation."""
    x = [5, -6, 7] + [0] * 250
    w = 8
    masks = [[(11 * i + 3 * j) % 256 for i in range(len(x))] for j in range(2)]
    check, m_proj, _, y = _check_for(x, masks, [1, -1], w, bytes(range(32)))
    y[9] = (y[9] + 1) % (1 << w)
    proj = Projection(check.seed, len(x))
    yp = proj.apply(np.array(y, dtype=np.int64))[0]
    bad = CheckStatement(check.seed, w, tuple(yp), check.masks, check.carry_bound)
    rx = proj.apply(np.array(x, dtype=np.int64))[0]
    inv = pow(1 << w, P - 2, P)
    q_field = [(a - b_ - c) * inv % P for a, b_, c in zip(yp, rx, m_proj, strict=True)]
    bound = 110
    f = forge(x, bound, CTX, slack=[0] * 16, check=(bad, m_proj, 99), q=q_field)
    assert not _verifies(f, bound, bad)
    u, s = norm._mask_range(len(x), bound, bad)
    clip = Deviation(choose_z=lambda z: [max(-(s - u), min(s - u, t)) for t in z])
    f = forge(x, bound, CTX, slack=[0] * 16, check=(bad, m_proj, 99), q=q_field, deviation=clip)
    assert not _verifies(f, bound, bad)
    # ... and with integer q of the honest upload, the deviating one fails the relation
    _, _, q_honest, _ = _check_for(x, masks, [1, -1], w, bytes(range(32)))
    f = forge(x, bound, CTX, slack=[0] * 16, check=(bad, m_proj, 99), q=q_honest)
    assert not _verifies(f, bound, bad)


def test_mask_commitment_with_hidden_components_is_rejected() -> None:
    """The server assembles C_M from the client's claims; an H or Ut part in it does not let
    a false mask projection through."""
    x = [5, -6, 7] + [0] * 250
    masks = [[(11 * i + 3 * j) % 256 for i in range(len(x))] for j in range(2)]
    check, m_proj, q, _ = _check_for(x, masks, [1, -1], 8, bytes(range(32)))
    b = layout(len(x))[1]
    wrong = [m + 1 for m in m_proj]  # a lie about the masks
    for dev in (
        Deviation(vectors=[("CM", "H", [0] * (b - 1) + [1])]),
        Deviation(scalars=[("CM", "Ut", 12345)]),
        Deviation(),
    ):
        f = forge(x, 110, CTX, slack=[0] * 16, check=(check, wrong, 99), q=q, deviation=dev)
        assert not _verifies(f, 110, check)
