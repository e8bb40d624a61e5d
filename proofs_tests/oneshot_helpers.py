"""A one-shot round built by hand (clients, committee, aggregator), for tests that play one
party against the others."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import DeterministicRandom
from secagg._crypto import ed25519_public
from secagg.oneshot import (
    CommitteeMember,
    MemberKey,
    OneShotAggregator,
    OneShotClient,
    OneShotConfig,
    OneShotPolicy,
    OneShotUpload,
)

POLICY = OneShotPolicy(min_committee=1, min_threshold=1, min_cohort=2)


@dataclass
class Round:
    cfg: OneShotConfig
    ids: dict[int, Ed25519PrivateKey]
    registry: dict[int, bytes]
    members: dict[int, CommitteeMember]
    keys: list[MemberKey]
    inputs: dict[int, np.ndarray] = field(default_factory=dict)

    def client(self, u: int, seed: str = "") -> OneShotClient:
        return OneShotClient(
            self.cfg,
            u,
            self.ids[u],
            self.registry,
            policy=POLICY,
            rng=DeterministicRandom(f"c/{u}/{seed}/{self.cfg.round}"),
            allow_deterministic_rng=True,
        )

    def upload(self, u: int, x: np.ndarray | None = None) -> OneShotUpload:
        if x is None:
            x = grid_input(self.cfg, u)
        self.inputs[u] = x
        return self.client(u).upload(x, self.keys)

    def server(self) -> OneShotAggregator:
        return OneShotAggregator(self.cfg, self.registry, self.keys)

    def next_round(self) -> Round:
        """The same parties, a new session and round number (members keep their state)."""
        cfg = self.cfg.with_session(bytes([self.cfg.round + 1]) * 16, self.cfg.round + 1)
        return Round(
            cfg,
            self.ids,
            self.registry,
            self.members,
            [self.members[m].open_round(cfg) for m in cfg.committee],
        )


def grid_input(cfg: OneShotConfig, u: int) -> np.ndarray:
    """A vector on the encoding grid (randomized rounding is then exact), clipped range."""
    rng = np.random.default_rng(u)
    m = cfg.encoding.max_abs - 1
    return rng.integers(-m, m + 1, cfg.d).astype(np.float64) / cfg.encoding.scale


def make_round(
    n: int = 6,
    d: int = 300,
    committee: tuple[int, ...] = (1, 2, 3, 4, 5),
    threshold: int = 3,
    min_cohort: int = 3,
    seed: int = 0,
    round_: int = 0,
) -> Round:
    cfg = OneShotConfig(
        n=n, d=d, committee=committee, threshold=threshold, min_cohort=min_cohort
    ).with_session(bytes([seed]) * 16, round_)
    ids = {
        u: Ed25519PrivateKey.from_private_bytes(DeterministicRandom(f"id/{seed}/{u}").bytes(32))
        for u in range(1, n + 1)
    }
    registry = {u: ed25519_public(k) for u, k in ids.items()}
    members = {
        m: CommitteeMember(
            m,
            ids[m],
            registry,
            min_cohort=min_cohort,
            rng=DeterministicRandom(f"m/{seed}/{m}"),
            allow_deterministic_rng=True,
        )
        for m in committee
    }
    keys = [members[m].open_round(cfg) for m in committee]
    return Round(cfg, ids, registry, members, keys)


def run_committee(r: Round, server: OneShotAggregator, members: list[int] | None = None):
    """Check, sign and release with ``members`` (default: all); returns the result."""
    inc = server.close()
    ms = list(r.cfg.committee) if members is None else members
    for m in ms:
        r.members[m].check(server.check_request(m))
    for m in ms:
        server.add_signature(r.members[m].sign(r.cfg.session_id, r.cfg.round, inc))
    req = server.release_request()
    for m in ms:
        server.add_share_sum(r.members[m].release(req))
    return server.finish()


def encoded(r: Round, u: int) -> np.ndarray:
    return np.rint(r.inputs[u] * r.cfg.encoding.scale).astype(np.int64)
