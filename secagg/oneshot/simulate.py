"""An in-memory one-shot round: clients, committee and aggregator joined by function calls
(the counterpart of :func:`secagg.simulate` and :func:`secagg.he.simulate_he`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg._crypto import ed25519_public
from secagg._errors import ConfigError
from secagg._rng import DeterministicRandom, RandomSource, SystemRandom
from secagg.oneshot.client import OneShotClient
from secagg.oneshot.committee import CommitteeMember
from secagg.oneshot.config import OneShotConfig, OneShotPolicy
from secagg.oneshot.server import OneShotAggregator

__all__ = ["MEMBER_STAGES", "OneShotSimulationResult", "simulate_oneshot"]

MEMBER_STAGES = ("check", "sign", "release")


@dataclass(frozen=True)
class OneShotSimulationResult:
    """What one simulated round produced; ``timings`` are medians per client and totals per
    role, ``member_bytes_in`` the median bytes a committee member received (shares + set)."""

    aggregate: npt.NDArray[np.float64] = field(compare=False)
    int_sum: npt.NDArray[np.int64] = field(compare=False)
    included: frozenset[int]
    decryptors: tuple[int, ...]
    error_bound: float
    upload_bytes: int
    masked_bytes: int
    member_bytes_in: int
    timings: Mapping[str, float]
    config: OneShotConfig


def simulate_oneshot(
    config: OneShotConfig,
    inputs: Sequence[npt.ArrayLike],
    drops: Collection[int] | None = None,
    *,
    member_drops: Mapping[str, Collection[int]] | None = None,
    seed: int | None = None,
    clock: Callable[[], float] = time.process_time,
) -> OneShotSimulationResult:
    """Run one round. ``inputs[i]`` is client ``i + 1``'s vector; ``drops`` never upload;
    ``member_drops`` maps a member stage (``check``, ``sign``, ``release``) to the members
    silent from that stage on. ``seed`` makes everything reproducible (tests only)."""
    n = config.n
    if len(inputs) != n:
        raise ConfigError(f"{len(inputs)} inputs for n={n} clients")
    if not set(config.committee) <= set(range(1, n + 1)):
        raise ConfigError("committee members are clients 1..n here")
    test = seed is not None
    root: RandomSource = SystemRandom() if not test else DeterministicRandom(f"oneshot/{seed}")

    def rng(name: str) -> RandomSource:
        return root if not test else DeterministicRandom(f"oneshot/{seed}/{name}")

    if config.session_id is None:
        config = config.with_session(root.bytes(16))
    assert config.session_id is not None
    ids = {
        u: Ed25519PrivateKey.from_private_bytes(rng(f"id/{u}").bytes(32)) for u in range(1, n + 1)
    }
    registry = {u: ed25519_public(k) for u, k in ids.items()}
    members = {
        m: CommitteeMember(
            m,
            ids[m],
            registry,
            min_cohort=config.min_cohort,
            rng=rng(f"m/{m}"),
            allow_deterministic_rng=test,
        )
        for m in config.committee
    }
    keys = [members[m].open_round(config) for m in config.committee]
    server = OneShotAggregator(config, registry, keys)
    gone = set(drops or ())
    mdrop = {k: set(v) for k, v in (member_drops or {}).items()}
    if set(mdrop) - set(MEMBER_STAGES):
        raise ConfigError(f"member stages are {MEMBER_STAGES}")
    silent: set[int] = set()
    t_client: list[float] = []
    t_add: list[float] = []
    sizes: list[int] = []
    policy = OneShotPolicy(min_committee=1, min_threshold=1, min_cohort=2)
    for u in range(1, n + 1):
        if u in gone:
            continue
        t0 = clock()
        c = OneShotClient(
            config,
            u,
            ids[u],
            registry,
            policy=policy,
            rng=rng(f"c/{u}"),
            allow_deterministic_rng=test,
        )
        up = c.upload(inputs[u - 1], keys)
        t_client.append(clock() - t0)
        sizes.append(up.nbytes)
        t0 = clock()
        server.add(up)
        t_add.append(clock() - t0)
    included = server.close()
    member_t: dict[int, float] = {}
    member_in: list[int] = []
    for stage in MEMBER_STAGES:
        silent |= mdrop.get(stage, set())
        for m in config.committee:
            if m in silent:
                continue
            t0 = clock()
            if stage == "check":
                req = server.check_request(m)
                member_in.append(
                    sum(len(s.sealed) + len(s.share_digests) + 132 for s in req.shares)
                )
                members[m].check(req)  # a Complaint ends the round here, naming the clients
            elif stage == "sign":
                server.add_signature(members[m].sign(config.session_id, config.round, included))
            else:
                server.add_share_sum(members[m].release(server.release_request()))
            member_t[m] = member_t.get(m, 0.0) + clock() - t0
    t0 = clock()
    result = server.finish()
    t_finish = clock() - t0

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else 0.0

    timings = {
        "client_median_s": med(t_client),
        "server_add_median_s": med(t_add),
        "server_add_total_s": sum(t_add),
        "server_unmask_s": t_finish,
        "member_median_s": med(list(member_t.values())),
    }
    return OneShotSimulationResult(
        aggregate=result.aggregate,
        int_sum=result.int_sum,
        included=frozenset(result.included),
        decryptors=result.decryptors,
        error_bound=result.error_bound,
        upload_bytes=int(statistics.median(sizes)) if sizes else 0,
        masked_bytes=config.masked_bytes,
        member_bytes_in=int(statistics.median(member_in)) if member_in else 0,
        timings=timings,
        config=config,
    )
