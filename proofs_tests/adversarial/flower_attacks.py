"""A malicious server inside Flower: :class:`aggregator.flower.SecAggWorkflow` with its
outgoing messages rewritten (the workflow's ``outgoing_messages``), delivered through Flower's
Grid to nodes running our client mod, on the simulation engine's Ray backend.

Not collected on its own: ``test_flower_attacks.py`` runs it as ``python -m`` inside a private
network namespace and compares what it prints (``RESULT {...}``) with the refusals of
:class:`secagg.SecAggClient` driven directly under the same rewrite.

Rounds: 1, a key list naming an unregistered id in place of a neighbour (SA-05); 2, a key
list whose neighbour entry carries a forged signature (SA-04); 3, a survivor list padded with
a registered member that never advertised keys (SA-05, SPEC.md D13); 4, honest.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from secagg import Stage
from secagg.messages import KeyList, ServerMessage, SurvivorList

N = 8
T = 5
ABSENT = 1  # member 1 (partition 0) never advertises keys: outside U1 in every round
UNREGISTERED = 4242
ATTACKS = {1: "unregistered-key", 2: "forged-signature", 3: "padded-survivors"}


def tamper(
    kind: str | None, stage: Stage, msgs: Mapping[int, ServerMessage], cohort: list[int]
) -> dict[int, ServerMessage]:
    """What the malicious server sends instead of ``msgs`` (member id -> message)."""
    out = dict(msgs)
    for u, m in msgs.items():
        if kind in ("unregistered-key", "forged-signature") and isinstance(m, KeyList):
            entries = list(m.entries)
            others = [i for i, e in enumerate(entries) if e.sender != u]
            if kind == "unregistered-key":
                i = others[-1]
                entries[i] = replace(entries[i], sender=UNREGISTERED)
            else:
                i = others[0]
                sig = entries[i].signature
                entries[i] = replace(entries[i], signature=bytes([sig[0] ^ 1]) + sig[1:])
            out[u] = replace(m, entries=tuple(entries))
        elif kind == "padded-survivors" and isinstance(m, SurvivorList):
            out[u] = SurvivorList.of(u, cohort, m.members(cohort) | {ABSENT})
    return out


def main() -> None:
    if os.environ.get("SECAGG_FLOWER_NETNS") != "1":
        sys.exit("run through test_flower_attacks.py (a private network namespace)")
    from aggregator.consortium import init_consortium
    from aggregator.flower import SecAggWorkflow
    from proofs_tests.flower_sim import LEVEL_BITS, MAX_WEIGHT, build_apps, simulate

    class MaliciousWorkflow(SecAggWorkflow):
        def outgoing_messages(
            self, stage: Stage, outgoing: Mapping[int, ServerMessage]
        ) -> Mapping[int, ServerMessage]:
            kind = ATTACKS.get(self.rounds[-1].round)
            return tamper(kind, stage, outgoing, list(range(1, N + 1)))

    tmp = Path(tempfile.mkdtemp(prefix="secagg-flower-attack-"))
    bundle = init_consortium(N, tmp / "consortium")
    workflow = MaliciousWorkflow(
        bundle,
        None,
        T,
        max_weight=MAX_WEIGHT,
        level_bits=LEVEL_BITS,
        timeout=60,
    )
    plan = {ABSENT - 1: "ADVERTISE_KEYS"}
    server_app, client_app, _ = build_apps(bundle, N, plan, tmp / "trace", workflow, rounds=4)
    simulate(server_app, client_app, N, workers=2)
    rounds: list[dict[str, Any]] = []
    for r in workflow.rounds:
        member_of = {nid: u for u, nid in r.node_of.items()}
        rounds.append(
            {
                "round": r.round,
                "completed": r.completed,
                "reason": r.reason,
                "included": list(r.included),
                "refusals": {
                    str(member_of[nid]): why for nid, why in r.refusals.items() if nid in member_of
                },
                "published": r.ring_sum is not None,
            }
        )
    print("RESULT " + json.dumps({"rounds": rounds}), flush=True)


if __name__ == "__main__":
    main()
