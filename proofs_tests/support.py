"""Shared test helpers: a hand-driven, reproducible round of the state machines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    ClientPolicy,
    DeterministicRandom,
    RoundConfig,
    SecAggClient,
    SecAggServer,
    Stage,
)
from secagg._crypto import ed25519_public
from secagg.messages import ClientMessage, ServerMessage

TEST_POLICY = ClientPolicy(allow_deterministic_rng=True)


@dataclass
class Round:
    """A reproducible round: the same ``seed`` gives the same keys, messages and masks."""

    config: RoundConfig
    seed: int
    identities: dict[int, Ed25519PrivateKey]
    registry: dict[int, bytes]
    inputs: dict[int, npt.NDArray[np.uint32]]
    policy: ClientPolicy = TEST_POLICY
    transcript: dict[int, list[ServerMessage]] = field(default_factory=dict)
    sent: dict[int, list[ClientMessage]] = field(default_factory=dict)

    def client(self, u: int) -> SecAggClient:
        return SecAggClient(
            self.config,
            u,
            self.identities[u],
            self.registry,
            self.inputs[u],
            policy=self.policy,
            rng=DeterministicRandom(f"round/{self.seed}/client/{u}"),
        )

    def server(self) -> SecAggServer:
        return SecAggServer(self.config, self.registry)


def make_round(config: RoundConfig, seed: int = 0) -> Round:
    """Identities, registry and ring inputs for every client of ``config``."""
    cfg = config if config.session_id is not None else config.with_session(bytes(16))
    ids = range(1, cfg.n + 1)
    identities = {
        u: Ed25519PrivateKey.from_private_bytes(DeterministicRandom(f"id/{seed}/{u}").bytes(32))
        for u in ids
    }
    registry = {u: ed25519_public(k) for u, k in identities.items()}
    mask = cfg.encoding.mask
    inputs = {
        u: np.frombuffer(DeterministicRandom(f"x/{seed}/{u}").bytes(4 * cfg.d), dtype=np.uint32)
        & np.uint32(mask)
        for u in ids
    }
    return Round(cfg, seed, identities, registry, inputs)


def run_honest(rnd: Round, drops: dict[Stage, Sequence[int]] | None = None) -> SecAggServer:
    """Drive every party by hand; record what each client was sent and sent back."""
    drop_from = {u: s.value for s, us in (drops or {}).items() for u in us}
    clients = {u: rnd.client(u) for u in rnd.inputs}
    server = rnd.server()
    rnd.transcript = {u: [] for u in clients}
    rnd.sent = {u: [] for u in clients}
    for u, c in clients.items():
        if drop_from.get(u, 9) > 0:
            m = c.advertise()
            rnd.sent[u].append(m)
            server.receive(m)
    for stage in rnd.config.stages:
        out = server.close_stage()
        nxt = rnd.config.next_stage(stage)
        if nxt is None:
            break
        for u, msg in out.items():
            rnd.transcript[u].append(msg)
            if drop_from.get(u, 9) > nxt.value:
                reply = clients[u].receive(msg)
                rnd.sent[u].append(reply)
                server.receive(reply)
    return server
