"""A malicious server's messages, injected through Flower's Grid (``flwr==1.42``, Ray
backend), are refused by our client mod exactly as :class:`secagg.SecAggClient` refuses them:
a key list naming an unregistered id (SA-05), a neighbour's key with a forged signature
(SA-04), a survivor list padded with a member that never advertised keys (SA-05, SPEC.md D13).
Every node answers the rewritten message with an error naming the same exception and message
as the state machine driven directly under the same rewrite, sends nothing for that stage,
the round publishes nothing, and the next (honest) round completes. Skipped without Flower or
without network namespaces."""

from __future__ import annotations

import pytest

from proofs_tests.adversarial.flower_attacks import ABSENT, ATTACKS, N, T, tamper
from proofs_tests.adversarial.harness import make_cohort
from proofs_tests.flower_sim import flower_available, run_in_netns
from proofs_tests.netns import require_netns
from secagg import ClientState, ProtocolAbort, RoundConfig, Stage

_STAGE = {"unregistered-key": Stage.SHARE_KEYS, "forged-signature": Stage.SHARE_KEYS}


def _direct_refusals(kind: str) -> dict[str, str]:
    """What each SecAggClient raises when the same rewrite reaches it without Flower."""
    stage = _STAGE.get(kind, Stage.CONSISTENCY)
    coh = make_cohort(RoundConfig(n=N, t=T, d=18), seed=1801, tag=kind)
    opening = coh.run_to(stage, drops={Stage.ADVERTISE_KEYS: [ABSENT]})
    out: dict[str, str] = {}
    for u, m in tamper(kind, stage, opening, coh.cohort).items():
        with pytest.raises(ProtocolAbort) as exc:
            coh.clients[u].receive(m)
        assert coh.clients[u].state is ClientState.ABORTED
        out[str(u)] = f"{stage.name}: {type(exc.value).__name__}: {exc.value}"
    return out


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flower_grid_injected_server_messages_are_refused_as_in_secagg() -> None:
    if not flower_available():
        pytest.skip("Flower is not installed (the 'flower' extra)")
    require_netns()
    r = run_in_netns("proofs_tests.adversarial.flower_attacks", timeout=280)
    rounds = {x["round"]: x for x in r["rounds"]}
    assert sorted(rounds) == [1, 2, 3, 4], r["_log"][-4000:]
    for number, kind in ATTACKS.items():
        got = rounds[number]
        assert not got["completed"] and not got["published"] and got["included"] == []
        want = _direct_refusals(kind)
        assert set(want) == {str(u) for u in range(1, N + 1) if u != ABSENT}
        assert got["refusals"] == want, (kind, got["refusals"], want)
    honest = rounds[4]
    assert honest["completed"] and honest["published"] and honest["refusals"] == {}
    assert honest["included"] == [u for u in range(1, N + 1) if u != ABSENT]
