"""A malicious server pads the survivor list U3 past the cohort floor (threats.md SA-05, SA-17;
secagg/SPEC.md D13).

The attack: n = 6, t = 4, every client's ``min_cohort = 6``, one client dropped before its
masked input. The server sends U3 = {1..5, X} with X an id that never advertised keys (an
unregistered id, which the registry bitmap can only express as a bit past the cohort, or a
registered member outside U1). Before the fix every survivor counted
six survivors, signed and revealed its shares, and the server unmasked a sum of five inputs
although every client's floor was six. Now each client refuses before signing anything.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from proofs_tests.adversarial.harness import TEST_POLICY, make_cohort
from secagg import (
    ClientState,
    InconsistentView,
    InsufficientSurvivors,
    InvalidMessage,
    RoundConfig,
    Stage,
)
from secagg.messages import ConsistencySignature, SurvivorList

CFG = RoundConfig(n=6, t=4, d=16)  # k = 5, c = 1: t = 4 is the policy floor
CFG7 = RoundConfig(n=7, t=4, d=16)  # k = 6, c = 1: t = 4 is the policy floor
FLOOR = replace(TEST_POLICY, min_cohort=6)


def _cohort_with_one_dropout(extra_member: bool = False):  # type: ignore[no-untyped-def]
    """Clients 1..5 survive, 6 drops before masking; with ``extra_member`` a seventh member is
    registered but never advertises keys (outside U1)."""
    cfg = CFG7 if extra_member else CFG
    drops = {Stage.MASKED_INPUT: [6], Stage.ADVERTISE_KEYS: [7] if extra_member else []}
    coh = make_cohort(cfg, seed=1401, policy=FLOOR)
    opening = coh.run_to(Stage.CONSISTENCY, drops=drops)
    assert set(opening) == {1, 2, 3, 4, 5}
    return coh


def test_sa05_survivor_list_naming_an_unregistered_id_is_refused() -> None:
    """SA-05: U3 is a bitmap over the registry (SPEC.md D14), so an unregistered id can only
    be a bit past the cohort: every survivor refuses it (InvalidMessage) and signs nothing."""
    coh = _cohort_with_one_dropout()
    padded = bytes([coh.survivors(1, {1, 2, 3, 4, 5}).bitmap[0] | 0x80])
    for u in (1, 2, 3, 4, 5):
        with pytest.raises(InvalidMessage, match="past the cohort"):
            coh.clients[u].receive(SurvivorList(u, padded))
        assert coh.clients[u].state is ClientState.ABORTED


def test_sa05_survivor_list_padded_with_a_member_outside_u1_is_refused() -> None:
    """SA-05 / SA-17: U3 = {1..5, 7} with member 7 registered but outside U1. Every survivor
    refuses with InconsistentView and sends no consistency signature, so nobody reveals a
    share."""
    coh = _cohort_with_one_dropout(extra_member=True)
    for u in (1, 2, 3, 4, 5):
        with pytest.raises(InconsistentView, match="U1"):
            coh.clients[u].receive(coh.survivors(u, {1, 2, 3, 4, 5, 7}))
        assert coh.clients[u].state is ClientState.ABORTED


def test_sa17_true_survivor_list_below_the_floor_is_refused_and_six_of_six_signs() -> None:
    """SA-17 control: the honest U3 = {1..5} is below every client's floor of six and is
    refused; a round where all six survive is signed."""
    coh = _cohort_with_one_dropout()
    with pytest.raises(InsufficientSurvivors):
        coh.clients[1].receive(coh.survivors(1, {1, 2, 3, 4, 5}))
    full = make_cohort(CFG, seed=1402, policy=FLOOR)
    opening = full.run_to(Stage.CONSISTENCY)
    assert all(
        isinstance(full.clients[u].receive(m), ConsistencySignature) for u, m in opening.items()
    )
