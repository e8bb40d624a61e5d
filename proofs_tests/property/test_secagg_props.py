"""Hypothesis properties of the protocol core (house-style: a property is worth ten examples).

* Shamir: any t of the shares reconstruct; t - 1 shares fit every possible secret equally.
* Rounds: for random n, k, t, d and random drop schedules, the aggregate equals the numpy sum of
  the included clients' clipped inputs within ``error_bound``, or the round aborts, exactly when
  the oracle below (the spec's conditions, protocol.md §4) says it must.
* Masks are uniform: a masked zero vector passes a chi-square test.
* A rule-based state machine drives one client with right, wrong and replayed messages.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from proofs_tests.support import make_round, run_honest
from secagg import (
    ClientPolicy,
    ClientState,
    ProtocolAbort,
    RoundConfig,
    Stage,
    UnexpectedMessage,
    simulate,
)
from secagg._rng import DeterministicRandom
from secagg.graph import graph_seed, neighbour_graph
from secagg.messages import KeyList, MaskedInput
from secagg.shamir import PRIME, reconstruct, reconstruct_many, split

# ---------------------------------------------------------------------------------------------
# Shamir


@settings(max_examples=60, deadline=None)
@given(
    secret=st.integers(0, 2**256 - 1),
    holders=st.integers(1, 9),
    data=st.data(),
)
def test_any_t_subset_reconstructs(secret: int, holders: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, holders))
    xs = data.draw(
        st.lists(st.integers(1, 2**32 - 1), min_size=holders, max_size=holders, unique=True)
    )
    shares = split(secret, t, xs, DeterministicRandom(secret))
    subsets = list(itertools.combinations(xs, t))[:20]
    for subset in subsets:
        assert reconstruct({x: shares[x] for x in subset}, t) == secret


@settings(max_examples=40, deadline=None)
@given(
    owners=st.integers(1, 12),
    t=st.integers(1, 6),
    data=st.data(),
)
def test_batch_reconstruction_matches_single(owners: int, t: int, data: st.DataObject) -> None:
    """reconstruct_many (shared Lagrange base + downdates) equals one-by-one reconstruction."""
    universe = list(range(1, 16))
    sets: dict[int, dict[int, int]] = {}
    secrets: dict[int, int] = {}
    for o in range(owners):
        holders = data.draw(st.lists(st.sampled_from(universe), min_size=t, unique=True))
        secrets[o] = data.draw(st.integers(0, 2**256 - 1))
        shares = split(secrets[o], t, holders, DeterministicRandom(o))
        sets[o] = shares
    got = reconstruct_many(sets, t)
    assert got == secrets
    assert got == {o: reconstruct(s, t) for o, s in sets.items()}


def _interpolate_at(points: Mapping[int, int], x0: int) -> int:
    total = 0
    for xi, yi in points.items():
        num = den = 1
        for xj in points:
            if xj != xi:
                num = num * (x0 - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total += yi * num * pow(den, -1, PRIME)
    return total % PRIME


@settings(max_examples=40, deadline=None)
@given(
    secret=st.integers(0, 2**256 - 1),
    other=st.integers(0, 2**256 - 1),
    t=st.integers(2, 7),
)
def test_fewer_than_t_shares_fit_every_secret(secret: int, other: int, t: int) -> None:
    """Perfect hiding: for t - 1 shares and ANY candidate secret there is a degree-(t-1)
    polynomial through both, so the shares say nothing about which secret was shared."""
    xs = list(range(1, t + 2))
    shares = split(secret, t, xs, DeterministicRandom(other))
    seen = {x: shares[x] for x in xs[: t - 1]}
    candidate = dict(seen)
    candidate[0] = other  # the polynomial through (0, other) and the t - 1 shares
    for x in range(t, t + 3):
        y = _interpolate_at(candidate, x)
        assert 0 <= y < PRIME
    # ...and it is a genuine sharing of `other`: t points of it reconstruct `other`.
    fake = dict(seen)
    fake[xs[t - 1]] = _interpolate_at(candidate, xs[t - 1])
    assert reconstruct(fake, t) == other


# ---------------------------------------------------------------------------------------------
# Whole rounds against the spec's oracle


def _expected_outcome(
    graph: Mapping[int, frozenset[int]],
    n: int,
    t: int,
    drop_from: Mapping[int, int],
    min_cohort: int,
) -> frozenset[int] | None:
    """Who is included, or None if protocol.md §4 says the round cannot complete."""

    def alive(stage: int) -> frozenset[int]:
        return frozenset(u for u in range(1, n + 1) if drop_from.get(u, 9) > stage)

    u1, u2, u3, u4, u5 = (alive(s) for s in range(5))
    if len(u1) - 1 < t or len(u1) < min_cohort:
        return None
    if any(len(graph[u]) < t for u in u1):
        return None
    for us in (u2, u3, u4):
        if len(us) - 1 < t or any(len(graph[u] & us) < t for u in us):
            return None
    if len(u3) < min_cohort:
        return None
    for v in u3:
        if len(graph[v] & u5) < t:
            return None
    for v in u2 - u3:
        if graph[v] & u3 and len(graph[v] & u5) < t:
            return None
    return u3


@st.composite
def rounds(draw: st.DrawFn) -> tuple[RoundConfig, dict[int, int], int]:
    n = draw(st.integers(3, 10))
    complete = draw(st.booleans()) or n < 5
    k = None if complete else draw(st.sampled_from([e for e in range(2, n - 1, 2)]))
    degree = n - 1 if k is None else k
    policy = ClientPolicy()
    t = draw(st.integers(policy.min_threshold(degree), degree))
    d = draw(st.integers(1, 40))
    weight = draw(st.sampled_from([3, 10, 25, 10**6]))  # honest clients per drop stage
    stages = st.sampled_from([None] * weight + [0, 1, 2, 3, 4])
    schedule = draw(st.lists(stages, min_size=n, max_size=n))
    drop_from = {u + 1: s for u, s in enumerate(schedule) if s is not None}
    seed = draw(st.integers(0, 2**16))
    return RoundConfig(n=n, t=t, d=d, k=k, session_id=os.urandom(16)), drop_from, seed


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(rounds(), st.data())
def test_aggregate_or_abort_exactly_as_the_spec_says(
    case: tuple[RoundConfig, dict[int, int], int], data: st.DataObject
) -> None:
    config, drop_from, seed = case
    rng = np.random.default_rng(seed)
    inputs = [rng.uniform(-2.0, 2.0, config.d) for _ in range(config.n)]
    drops = {s: [u for u, v in drop_from.items() if v == s.value] for s in Stage}
    seen: dict[str, KeyList] = {}

    def watch(stage: Stage, recipient: int, msg):  # type: ignore[no-untyped-def]
        if isinstance(msg, KeyList):
            seen["keys"] = msg
        return msg

    try:
        result = simulate(config, inputs, drops=drops, tamper=watch)
    except ProtocolAbort:
        result = None
    u1 = frozenset(u for u in range(1, config.n + 1) if drop_from.get(u, 9) > 0)
    if "keys" in seen:
        kl = seen["keys"]
        seed = graph_seed(config.digest, kl.present, kl.key_root)
        # The ring is over the whole cohort; U1 only decides who is present (SPEC.md D14).
        graph = neighbour_graph(range(1, config.n + 1), config.degree, seed, present=u1)
    else:  # the server aborted before sending keys: only the size of U1 matters
        graph = {u: u1 - {u} for u in u1}
    expected = _expected_outcome(graph, config.n, config.t, drop_from, ClientPolicy().min_cohort)
    event("abort" if expected is None else "complete")
    if expected is None:
        assert result is None, "the round completed where the spec requires an abort"
        return
    assert result is not None, "the round aborted where the spec allows it to complete"
    assert result.included == expected
    truth = np.sum([np.clip(inputs[u - 1], -1.0, 1.0) for u in sorted(expected)], axis=0)
    assert np.max(np.abs(result.aggregate - truth)) <= result.error_bound + 1e-9


# ---------------------------------------------------------------------------------------------
# Uniform masks (threats.md SA-11)


@pytest.mark.parametrize("bits", [4, 5])
def test_masked_zero_vector_is_uniform(bits: int) -> None:
    n, d = 3, 32_000
    config = RoundConfig(n=n, t=2, d=d, bits=bits)
    captured: dict[int, np.ndarray] = {}

    def grab(stage: Stage, sender: int, msg):  # type: ignore[no-untyped-def]
        if isinstance(msg, MaskedInput):
            captured[sender] = msg.masked
        return msg

    simulate(config, [np.zeros(d)] * n, client_tamper=grab, seed=bits)
    m = 1 << bits
    for y in captured.values():
        counts = np.bincount(y.astype(np.int64), minlength=m)
        assert counts.shape == (m,) and counts.min() > 0
        expected = d / m
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        # 99.99% quantiles of chi-square with 15 and 31 degrees of freedom; the seed is fixed.
        assert chi2 < {4: 44.3, 5: 66.6}[bits]


# ---------------------------------------------------------------------------------------------
# Rule-based state machine over stage transitions

_ROUND = make_round(RoundConfig(n=4, t=2, d=8), seed=21)
run_honest(_ROUND)
_TRANSCRIPT = _ROUND.transcript[2]


class ClientTransitions(RuleBasedStateMachine):
    """One client fed right, wrong and replayed server messages in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.client = _ROUND.client(2)
        self.client.advertise()
        self.step = 0  # index of the next message it should accept
        self.aborted = False

    @precondition(lambda self: not self.aborted and self.step < 4)
    @rule()
    def right_message(self) -> None:
        self.client.receive(_TRANSCRIPT[self.step])
        self.step += 1

    @precondition(lambda self: self.step > 0 or self.aborted)
    @rule(data=st.data())
    def replayed_message(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, max(self.step - 1, 0)))
        with pytest.raises(UnexpectedMessage):
            self.client.receive(_TRANSCRIPT[i])
        self.aborted = True

    @precondition(lambda self: self.step < 3 or self.aborted)
    @rule(data=st.data())
    def future_message(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(min(self.step + 1, 3), 3))
        with pytest.raises(UnexpectedMessage):
            self.client.receive(_TRANSCRIPT[i])
        self.aborted = True

    @invariant()
    def state_matches(self) -> None:
        if self.aborted:
            assert self.client.state is ClientState.ABORTED
        else:
            states = ["advertised", "shared", "masked", "signed", "done"]
            assert self.client.state.value == states[self.step]


ClientTransitions.TestCase.settings = settings(
    max_examples=40, stateful_step_count=8, deadline=None
)
test_client_transitions = ClientTransitions.TestCase
