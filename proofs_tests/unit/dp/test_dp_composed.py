"""Issue 16, item 3: distributed DP inside secure aggregation through one object, with the
ring, the encoded dimension and the seed matched inside the library, the same object for the
simulator, the aggregator's task and the members' contributors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from aggregator.fl import FlParams, choose_dp_config
from aggregator.tasks import DpStatisticsTask
from client.agent import AgentError, DpStatisticsContributor
from dp import DistributedDP, DistributedDPConfig, InvalidParameter, bind
from dp.composed import dp_digest, rotation_seed
from proofs_tests.support import make_round, run_honest
from secagg import RoundConfig, Stage, simulate

DP = DistributedDP(l2_clip=1.0, noise_multiplier=0.5, allow_seeded_rng=True)


def test_simulate_with_dp_matches_ring_dimension_and_seed() -> None:
    d, n = 300, 8
    inputs = [np.random.default_rng(i).normal(0, 0.02, d) for i in range(n)]
    res = simulate(
        RoundConfig(n=n, t=6, d=d), inputs, dp=DP, seed=3, drops={Stage.MASKED_INPUT: [2]}
    )
    dp_cfg = DP.resolve(d, n, 6, n - 1)
    assert res.config.d == dp_cfg.encoded_dim == 512
    assert res.config.ring_bits == dp_cfg.bits
    assert res.config.dp_digest == dp_digest(dp_cfg)
    assert res.dp is not None and res.aggregate.shape == (d,)
    truth = sum(inputs[u - 1] for u in res.included)
    err = res.aggregate - truth
    # noise of the stated size: a 3-sigma band on the sample standard deviation
    sd = res.dp.noise_stddev
    assert abs(err.std() - sd) < 3 * sd / np.sqrt(2 * d)
    assert res.included == frozenset(range(1, n + 1)) - {2}


def test_the_seed_is_fresh_per_session_and_round() -> None:
    cfg = RoundConfig(n=5, t=3, d=10).with_session(bytes(16))
    dp_cfg = DP.resolve(10, 5, 3)
    s0 = rotation_seed(cfg, dp_cfg)
    assert s0 != rotation_seed(cfg.with_session(bytes(15) + b"\x01"), dp_cfg)
    assert s0 != rotation_seed(replace(cfg, round=1), dp_cfg)
    with pytest.raises(InvalidParameter, match="session"):
        rotation_seed(RoundConfig(n=5, t=3, d=10), dp_cfg)


def test_a_full_config_is_checked_not_chosen() -> None:
    cfg = RoundConfig(n=5, t=3, d=100).with_session(bytes(16))
    full = DP.resolve(100, 5, 3)
    assert bind(cfg, full).dp == full
    with pytest.raises(InvalidParameter, match="dim"):
        bind(cfg, DP.resolve(99, 5, 3))
    with pytest.raises(InvalidParameter, match="fewer survivors"):
        bind(replace(cfg, t=4), full)
    with pytest.raises(InvalidParameter, match="ring bits"):
        bind(replace(cfg, bits=full.bits + 1), full)
    with pytest.raises(InvalidParameter):
        bind(cfg, {"noise_multiplier": 1.0})  # type: ignore[arg-type]


def test_aggregator_job_and_simulator_choose_the_same_parameters() -> None:
    params = FlParams.with_dp(DistributedDP(l2_clip=2.0, noise_multiplier=0.1))
    assert params.distributed_dp == DistributedDP(l2_clip=2.0, noise_multiplier=0.1)
    assert choose_dp_config(5000, 6, 4, params) == params.distributed_dp.resolve(5000, 6, 4, 5)


def test_grpc_task_and_members_share_one_object(tmp_path: Path) -> None:
    """The aggregator's DpStatisticsTask and each member's DpStatisticsContributor, given the
    same DistributedDP, agree; the masked sum (SecAgg state machines) decodes to the noisy sum."""
    d, n, t = 64, 5, 3
    dp = DistributedDP(l2_clip=1.0, noise_multiplier=0.3)
    task = DpStatisticsTask(d, dp, n=n, t=t)
    tr = task.begin(0)
    cfg = RoundConfig(n=n, t=t, d=tr.d, bits=tr.bits, dp_digest=tr.task_digest)
    xs = {u: np.random.default_rng(u).uniform(-0.05, 0.05, d) for u in range(1, n + 1)}
    rings = {
        u: DpStatisticsContributor(lambda c, u=u: xs[u], dp).contribute(cfg, tr.task, b"")
        for u in xs
    }
    rnd = make_round(cfg)
    rnd.inputs = rings
    server = run_honest(rnd)
    summary = task.publish(0, cfg, tr, server.result.ring_sum, server.result.included, tmp_path)
    got = np.load(summary["npy"])
    truth = sum(xs.values())
    assert np.abs(got - truth).max() < 6 * summary["noise_stddev"] + 1e-3
    assert float.fromhex(summary["dp"]["noise_multiplier"]) == 0.3


def test_a_member_refuses_weaker_noise_than_its_own() -> None:
    """The aggregator plays the attacker: it sends the round with less noise (or another ring)
    than the members' shared DistributedDP gives; a member refuses before encoding."""
    d, n, t = 64, 5, 3
    mine = DistributedDP(l2_clip=1.0, noise_multiplier=0.3)
    weak = DpStatisticsTask(d, DistributedDP(l2_clip=1.0, noise_multiplier=0.01), n=n, t=t)
    tr = weak.begin(0)
    cfg = RoundConfig(n=n, t=t, d=tr.d, bits=tr.bits, dp_digest=tr.task_digest)
    member = DpStatisticsContributor(lambda c: np.zeros(d), mine)
    with pytest.raises(AgentError, match="differ"):
        member.contribute(cfg, tr.task, b"")
    honest = DpStatisticsTask(d, mine, n=n, t=t).begin(0)
    wrong_ring = RoundConfig(n=n, t=t, d=honest.d, bits=(honest.bits or 0) + 1)
    with pytest.raises(AgentError, match="ring"):
        member.contribute(wrong_ring, honest.task, b"")
    with pytest.raises(AgentError, match="dp-statistics"):
        member.contribute(cfg, b'{"kind": "dp-lora/v1"}', b"")
    assert isinstance(DistributedDP().resolve(10, 5, 3), DistributedDPConfig)
