"""One-run canary audit statistics (Steinke, Nasr, Jagielski 2023) on synthetic guesses."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from dp._errors import InvalidParameter
from dp.empirical import audit_guesses, epsilon_lower_bound, guesses_from_scores, p_value


def reference_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """App. D's p_value_DP_audit, transcribed with exact binomial coefficients."""
    q = 1 / (1 + math.exp(-eps))

    def pmf(k: int) -> float:
        return math.comb(r, k) * q**k * (1 - q) ** (r - k)

    beta = math.fsum(pmf(k) for k in range(v, r + 1))
    alpha, acc = 0.0, 0.0
    for i in range(1, v + 1):
        acc += pmf(v - i)
        if acc > i * alpha:
            alpha = acc / i
    return min(beta + alpha * delta * 2 * m, 1.0)


@pytest.mark.parametrize(
    ("m", "r", "v", "eps", "delta"),
    [
        (1000, 100, 80, 1.0, 0.0),
        (1000, 100, 80, 1.0, 1e-5),
        (200, 200, 150, 0.7, 1e-3),
        (50, 20, 3, 0.1, 0.01),
        (10, 10, 10, 3.0, 0.0),
    ],
)
def test_p_value_matches_the_papers_procedure(
    m: int, r: int, v: int, eps: float, delta: float
) -> None:
    assert p_value(m, r, v, eps, delta) == pytest.approx(
        reference_p_value(m, r, v, eps, delta), rel=1e-9
    )


def test_all_correct_guesses_match_the_closed_form() -> None:
    # v = r: P[Bin(r, q) >= r] = q^r = beta  =>  eps = logit(beta^(1/r)).
    for r in (10, 100, 1000):
        q = 0.05 ** (1 / r)
        exact = math.log(q / (1 - q))
        got = epsilon_lower_bound(r, r, r)
        assert got <= exact + 1e-12 and got == pytest.approx(exact, abs=1e-9)


def test_no_evidence_gives_zero() -> None:
    assert epsilon_lower_bound(1000, 0, 0) == 0.0
    assert epsilon_lower_bound(1000, 100, 50) == 0.0
    assert epsilon_lower_bound(1000, 100, 10) == 0.0


def test_delta_and_confidence_only_lower_the_bound() -> None:
    base = epsilon_lower_bound(5000, 1000, 800)
    assert 0 < epsilon_lower_bound(5000, 1000, 800, delta=1e-4) < base
    assert epsilon_lower_bound(5000, 1000, 800, confidence=0.99) < base
    assert epsilon_lower_bound(5000, 1000, 800, confidence=0.5) > base


def randomized_response(
    rng: np.random.Generator, m: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Canaries in or out at random; an eps-DP 'model' (randomized response) lets the auditor
    guess right with probability e^eps / (1 + e^eps), the worst case the bound allows."""
    included = rng.random(m) < 0.5
    correct = rng.random(m) < 1 / (1 + math.exp(-eps))
    guesses = np.where(correct == included, 1, -1)
    return included, guesses


def test_the_bound_is_valid_at_95_percent() -> None:
    """Against a truly 1-DP mechanism, the bound exceeds 1 in at most ~5% of audits."""
    rng = np.random.default_rng(20230508)
    trials = 300
    over = sum(
        audit_guesses(*randomized_response(rng, 500, 1.0)).epsilon_lower_bound > 1.0
        for _ in range(trials)
    )
    assert over / trials <= 0.08  # 5% plus sampling slack (sd ~ 1.3%)


def test_the_bound_has_power() -> None:
    rng = np.random.default_rng(7)
    result = audit_guesses(*randomized_response(rng, 5000, 4.0))
    # A 95% lower bound: close to the truth, and above it in about 5% of seeds.
    assert 3.0 < result.epsilon_lower_bound < 4.5
    assert result.canaries == result.guesses == 5000 and result.confidence == 0.95


def test_abstentions_are_not_counted() -> None:
    included = [True, True, False, False, True, False]
    guesses = [1, 0, -1, 0, -1, 1]
    res = audit_guesses(included, guesses)
    assert (res.canaries, res.guesses, res.correct) == (6, 4, 2)


def test_guesses_from_scores() -> None:
    scores = [0.9, 0.1, 0.5, 0.95, 0.2, 0.5]
    assert guesses_from_scores(scores, 2, 2).tolist() == [1, -1, 0, 1, -1, 0]
    assert guesses_from_scores(scores, 0, 0).tolist() == [0] * 6
    with pytest.raises(InvalidParameter):
        guesses_from_scores(scores, 4, 3)
    with pytest.raises(InvalidParameter):
        guesses_from_scores([0.1, math.nan], 1, 0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: epsilon_lower_bound(10, 11, 1),
        lambda: epsilon_lower_bound(10, 5, 6),
        lambda: epsilon_lower_bound(10, 5, 2, delta=2.0),
        lambda: epsilon_lower_bound(10, 5, 2, confidence=1.0),
        lambda: epsilon_lower_bound(10, 5, 2.0),  # type: ignore[arg-type]
        lambda: p_value(10, 5, 2, -1.0),
        lambda: audit_guesses([True, False], [1, 2]),
        lambda: audit_guesses([True, False], [1]),
        lambda: audit_guesses([2, 0], [1, 1]),
    ],
)
def test_bad_inputs_raise(call: object) -> None:
    with pytest.raises(InvalidParameter):
        call()  # type: ignore[operator]


def test_exact_rational_cross_check_of_a_small_tail() -> None:
    """P[Bin(4, 1/2) >= 3] = 5/16 at eps = 0 (q = 1/2)."""
    assert p_value(4, 4, 3, 0.0) == pytest.approx(float(Fraction(5, 16)), rel=1e-12)
