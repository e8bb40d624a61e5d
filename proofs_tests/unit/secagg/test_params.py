"""Parameter guidance (secagg/params.py): Bell et al. 2020 bounds computed for our ring graph,
consistent with the client policy (threats.md SA-03, SA-16, SA-17)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ClientPolicy, ConfigError, RoundConfig
from secagg.graph import neighbour_graph
from secagg.params import (
    ParameterChoice,
    binomial_cdf,
    choose_parameters,
    evaluate,
    hypergeometric_sf,
)


def _exact_binomial_cdf(m: int, p: Fraction, upto: int) -> Fraction:
    return sum(
        (Fraction(math.comb(m, x)) * p**x * (1 - p) ** (m - x) for x in range(upto + 1)),
        Fraction(0),
    )


def _exact_hyper_sf(population: int, marked: int, draws: int, atleast: int) -> Fraction:
    total = Fraction(math.comb(population, draws))
    return (
        sum(
            (
                Fraction(math.comb(marked, x) * math.comb(population - marked, draws - x))
                for x in range(max(atleast, 0), draws + 1)
            ),
            Fraction(0),
        )
        / total
    )


def _policy_accepts(n: int, choice: ParameterChoice) -> None:
    k = None if choice.complete_graph else choice.k
    ClientPolicy(max_corrupt=choice.c).check(RoundConfig(n=n, t=choice.t, d=1, k=k))


@pytest.mark.parametrize(("m", "p", "upto"), [(10, "1/10", 3), (40, "1/2", 5), (60, "9/10", 30)])
def test_binomial_cdf_matches_exact_rationals_deep_in_the_tail(m: int, p: str, upto: int) -> None:
    exact = _exact_binomial_cdf(m, Fraction(p), upto)
    assert binomial_cdf(m, float(Fraction(p)), upto) == pytest.approx(float(exact), rel=1e-9)


@pytest.mark.parametrize(
    ("population", "marked", "draws", "atleast"),
    [(99, 10, 20, 8), (999, 100, 40, 20), (50, 0, 10, 1), (50, 50, 10, 10), (30, 5, 10, 0)],
)
def test_hypergeometric_sf_matches_exact_rationals(
    population: int, marked: int, draws: int, atleast: int
) -> None:
    exact = _exact_hyper_sf(population, marked, draws, atleast)
    got = hypergeometric_sf(population, marked, draws, atleast)
    assert got == pytest.approx(float(exact), rel=1e-9, abs=0.0)


def test_no_dropout_and_no_corruption_needs_the_smallest_ring() -> None:
    choice = choose_parameters(1000, 0.0, 0.0)
    assert (choice.k, choice.t, choice.c) == (2, 2, 1)
    assert choice.failure_probability == choice.privacy_failure_probability == 0.0


@pytest.mark.parametrize(
    ("n", "dropout", "corrupt"),
    [(100, 0.05, 0.05), (1000, 0.1, 0.1), (10_000, 0.2, 0.1)],
)
def test_choice_meets_both_targets_passes_the_policy_and_is_minimal(
    n: int, dropout: float, corrupt: float
) -> None:
    choice = choose_parameters(n, dropout, corrupt)
    assert choice.failure_probability <= 2.0**-30
    assert choice.privacy_failure_probability <= 2.0**-40
    assert (choice.failure_probability, choice.privacy_failure_probability) == evaluate(
        n, choice.k, choice.t, dropout, corrupt
    )
    assert choice.corrupt == math.ceil(corrupt * n)
    _policy_accepts(n, choice)
    with pytest.raises(Exception, match="threshold"):  # one less corrupt-tolerance margin
        ClientPolicy(max_corrupt=choice.c + 1).check(
            RoundConfig(n=n, t=choice.t, d=1, k=None if choice.complete_graph else choice.k)
        )
    # Minimality: no smaller even degree has any threshold meeting both targets.
    smaller = range(2, choice.k if not choice.complete_graph else n - 1, 2)
    for k in list(smaller)[-3:]:
        for t in range(k // 2 + 1, k + 1):
            failure, privacy = evaluate(n, k, t, dropout, corrupt)
            assert failure > 2.0**-30 or privacy > 2.0**-40, (k, t)


def test_complete_graph_fallback_and_impossible_targets() -> None:
    choice = choose_parameters(1000, 0.3, 0.2)
    assert choice.complete_graph and choice.k == 999
    assert 2 * choice.t - choice.k > choice.corrupt  # the exact corrupt count is tolerated
    _policy_accepts(1000, choice)
    with pytest.raises(ConfigError):
        choose_parameters(100, 0.2, 0.1)
    with pytest.raises(ConfigError):
        choose_parameters(1000, 0.5, 0.1)


@pytest.mark.parametrize(
    "args",
    [(1, 0.1, 0.1), (100, -0.1, 0.1), (100, 1.0, 0.1), (100, 0.1, 1.0), (100, math.nan, 0.1)],
)
def test_bad_inputs_are_refused(args: tuple[int, float, float]) -> None:
    with pytest.raises(ConfigError):
        choose_parameters(*args)
    with pytest.raises(ConfigError):
        choose_parameters(100, 0.1, 0.1, sigma=0)


def test_threshold_at_most_half_the_degree_is_always_a_privacy_failure() -> None:
    assert evaluate(100, 10, 5, 0.1, 0.0)[1] == 1.0
    with pytest.raises(ConfigError):
        evaluate(100, 9, 5, 0.1, 0.0)  # odd ring degree


def test_union_bounds_dominate_the_real_ring_by_monte_carlo() -> None:
    """The bounds are for the graph secagg.graph actually builds: on n = 30, k = 8, the
    frequency with which some client has >= 2t - k corrupt neighbours, over random ring seeds,
    stays below the computed bound (a loose target, so both the union bound and sampling noise
    leave plenty of room)."""
    n, k, t, corrupt = 30, 8, 6, 6  # 2t - k = 4 corrupt neighbours is the split condition
    bad = 0
    trials = 400
    corrupt_ids = set(range(1, corrupt + 1))
    for seed in range(trials):
        graph = neighbour_graph(range(1, n + 1), k, seed.to_bytes(32, "big"))
        if any(len(graph[u] & corrupt_ids) >= 2 * t - k for u in graph if u not in corrupt_ids):
            bad += 1
    bound = (n - corrupt) * hypergeometric_sf(n - 1, corrupt, k, 2 * t - k)
    assert 0 < bad / trials <= bound


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 400),
    dropout=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.15]),
    corrupt=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2]),
    sigma=st.sampled_from([20, 40]),
    eta=st.sampled_from([20, 30]),
)
def test_any_choice_is_policy_consistent_and_meets_its_targets(
    n: int, dropout: float, corrupt: float, sigma: int, eta: int
) -> None:
    try:
        choice = choose_parameters(n, dropout, corrupt, sigma=sigma, eta=eta)
    except ConfigError:
        # Only when the complete graph itself misses a target, for every threshold.
        for t in range((n - 1) // 2 + 1, n):
            failure, privacy = evaluate(n, n - 1, t, dropout, corrupt)
            assert failure > 2.0**-eta or privacy > 2.0**-sigma
        return
    assert choice.failure_probability <= 2.0**-eta
    assert choice.privacy_failure_probability <= 2.0**-sigma
    assert choice.k == n - 1 if choice.complete_graph else choice.k % 2 == 0
    assert choice.k // 2 < choice.t <= choice.k
    assert choice.c == 2 * choice.t - choice.k - 1 >= 0
    _policy_accepts(n, choice)
    if not choice.complete_graph and choice.k > 2:
        k = choice.k - 2
        assert all(
            failure > 2.0**-eta or privacy > 2.0**-sigma
            for failure, privacy in (
                evaluate(n, k, t, dropout, corrupt) for t in range(k // 2 + 1, k + 1)
            )
        )


# -- parameters an aggregator picks by itself (issue 15): the clients' policy accepts them --------


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(3, 400),
    dropout=st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.2, 0.3]),
    fraction=st.sampled_from([Fraction(1, 3), Fraction(1, 4), Fraction(1, 5), Fraction(1, 10)]),
)
def test_policy_parameters_are_accepted_by_that_policy(
    n: int, dropout: float, fraction: Fraction
) -> None:
    """Every automatic choice passes the client policy built from the same corruption
    assumption, down to the smallest cohort, and never trades privacy for liveness."""
    from secagg.params import parameters_for_policy, policy_corrupt_count

    policy = ClientPolicy(max_corrupt_fraction=float(fraction))
    choice = parameters_for_policy(n, dropout, policy)
    k = None if choice.complete_graph else choice.k
    policy.check(RoundConfig(n=n, t=choice.t, d=8, k=k))
    assert choice.privacy_failure_probability <= 2.0**-40
    assert choice.corrupt == policy_corrupt_count(n, policy)
    if choice.complete_graph:  # exact: the corrupt members cannot reach 2t - k shares
        assert choice.corrupt < 2 * choice.t - (n - 1)
    if choice.meets_targets:
        assert choice.failure_probability <= 2.0**-30
    else:  # the most dropout-tolerant t that keeps privacy: one less would not
        smaller = choice.t - 1
        assert smaller < policy.min_threshold(n - 1) or choice.corrupt >= 2 * smaller - (n - 1)


@pytest.mark.parametrize("n, want_t", [(50, 33), (100, 67), (200, 133)])
def test_the_issue_cases_now_meet_the_default_policy(n: int, want_t: int) -> None:
    """Issue 15: for 10% dropout the old default picked t=28/53/73 for n=50/100/200, below
    the default client floor of 33/56/74; the policy-aware choice is accepted."""
    from secagg.params import parameters_for_policy

    choice = parameters_for_policy(n, 0.1)
    assert choice.t == want_t and choice.t >= ClientPolicy().min_threshold(choice.k)


def test_below_the_smallest_cohort_there_is_no_choice() -> None:
    from secagg.params import parameters_for_policy

    with pytest.raises(ConfigError, match="below the smallest cohort"):
        parameters_for_policy(2, 0.1)
    tiny = parameters_for_policy(3, 0.1)
    assert (tiny.k, tiny.t, tiny.meets_targets) == (2, 2, False)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=40, max_value=5000),
    g=st.floats(min_value=0.0, max_value=60.0),
)
def test_grinding_multiplies_the_ring_privacy_failure_by_the_tries(n: int, g: float) -> None:
    """SPEC.md D14: 2^g seeds tried charge exactly 2^g times one seed's privacy failure on a
    ring (capped at 1), nothing on the complete graph, and never lower the chosen degree."""
    k = min(2 * math.ceil(math.log2(n)) + 10, n - 2) // 2 * 2
    t = k // 2 + k // 4 + 1
    f0, p0 = evaluate(n, k, t, 0.05, 0.05, grinding_bits=0.0)
    f1, p1 = evaluate(n, k, t, 0.05, 0.05, grinding_bits=g)
    assert f0 == f1
    assert p1 == pytest.approx(min(1.0, p0 * 2.0**g), rel=1e-9, abs=1e-300)
    assert evaluate(n, n - 1, n - 1, 0.05, 0.05, grinding_bits=g) == evaluate(
        n, n - 1, n - 1, 0.05, 0.05, grinding_bits=0.0
    )
    if n >= 100:
        assert (
            choose_parameters(n, 0.05, 0.05, grinding_bits=g).k
            >= choose_parameters(n, 0.05, 0.05, grinding_bits=0.0).k
        )
