"""A malicious server pads the survivor list U3 past the cohort floor (threats.md SA-05, SA-17;
secagg/SPEC.md D13).

The attack: n = 6, t = 4, every client's ``min_cohort = 6``, one client dropped before its
masked input. The server sends U3 = {1..5, X} with X an id that never advertised keys (an
unregistered id, or a registered member outside U1). Before the fix every survivor counted
six survivors, signed and revealed its shares, and the server unmasked a sum of five inputs
although every client's floor was six. Now each client refuses before signing anything.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proofs_tests.adversarial.harness import TEST_POLICY, make_cohort
from secagg import (
    ClientState,
    DeterministicRandom,
    InconsistentView,
    InsufficientSurvivors,
    RoundConfig,
    SecAggClient,
    Stage,
)
from secagg._crypto import ed25519_public
from secagg.messages import ConsistencySignature, SurvivorList

CFG = RoundConfig(n=6, t=4, d=16)  # k = 5, c = 1: t = 4 is the policy floor
FLOOR = replace(TEST_POLICY, min_cohort=6)


def _cohort_with_one_dropout(extra_member: bool = False):  # type: ignore[no-untyped-def]
    coh = make_cohort(CFG, seed=1401, policy=FLOOR)
    if extra_member:  # member 7 is registered but takes no part in this round
        seven = Ed25519PrivateKey.from_private_bytes(DeterministicRandom("member-7").bytes(32))
        coh.registry[7] = ed25519_public(seven)
        for u, c in list(coh.clients.items()):
            coh.clients[u] = SecAggClient(
                c.config, u, coh.identities[u], coh.registry, c._input, policy=FLOOR, rng=c.rng
            )
    opening = coh.run_to(Stage.CONSISTENCY, drops={Stage.MASKED_INPUT: [6]})
    assert set(opening) == {1, 2, 3, 4, 5}
    return coh


@pytest.mark.parametrize("padding", [4242, 7], ids=["unregistered", "registered-not-in-U1"])
def test_sa05_survivor_list_padded_past_the_floor_is_refused(padding: int) -> None:
    """SA-05 / SA-17: U3 = {1..5, X} with X outside U1. Every survivor refuses with
    InconsistentView and sends no consistency signature, so nobody reveals a share."""
    coh = _cohort_with_one_dropout(extra_member=padding == 7)
    forged = frozenset({1, 2, 3, 4, 5, padding})
    for u in (1, 2, 3, 4, 5):
        with pytest.raises(InconsistentView, match="U1"):
            coh.clients[u].receive(SurvivorList(u, forged))
        assert coh.clients[u].state is ClientState.ABORTED


def test_sa17_true_survivor_list_below_the_floor_is_refused_and_six_of_six_signs() -> None:
    """SA-17 control: the honest U3 = {1..5} is below every client's floor of six and is
    refused; a round where all six survive is signed."""
    coh = _cohort_with_one_dropout()
    with pytest.raises(InsufficientSurvivors):
        coh.clients[1].receive(SurvivorList(1, frozenset({1, 2, 3, 4, 5})))
    full = make_cohort(CFG, seed=1402, policy=FLOOR)
    opening = full.run_to(Stage.CONSISTENCY)
    assert all(
        isinstance(full.clients[u].receive(m), ConsistencySignature) for u, m in opening.items()
    )
