"""The Ray engine on a local three-node Ray cluster (``ray.cluster_utils.Cluster``).

Not collected on its own (no ``test_`` prefix): ``test_ray_engine.py`` runs this file inside a
private network namespace (``unshare --net``, loopback only, ``RAY_USAGE_STATS_ENABLED=0``),
so that the Ray processes can reach nothing but each other.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
if os.environ.get("SECAGG_RAY_NETNS") != "1":
    pytest.skip("run through test_ray_engine.py (a private network)", allow_module_level=True)

from ray.cluster_utils import Cluster as RayCluster  # noqa: E402

from aggregator.ray_engine import RayEngine  # noqa: E402
from proofs_tests.e2e.cluster import Cluster  # noqa: E402
from secagg import ProtocolAbort, RoundConfig, Stage, simulate  # noqa: E402
from secagg.accumulate import AccumulatorLost, LocalAccumulator  # noqa: E402
from secagg.messages import ClientMessage  # noqa: E402

_NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    c = RayCluster(
        initialize_head=True,
        head_node_args={**_NODE, "include_dashboard": False},
    )
    for _ in range(2):
        c.add_node(**_NODE)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    try:
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _round(n: int = 10, d: int = 3000) -> tuple[RoundConfig, list[Any]]:
    cfg = RoundConfig(n=n, t=6, d=d, k=n - 1 if (n - 1) % 2 == 0 else n - 2)
    rng = np.random.default_rng(7)
    return cfg, [rng.normal(0, 0.4, d) for _ in range(n)]


def test_same_sum_as_the_in_process_engine(cluster: Any) -> None:
    cfg, xs = _round()
    engine = RayEngine(shards=3, chunk=700, init=False)
    drops = {Stage.MASKED_INPUT: [4], Stage.UNMASK: [9]}  # a dropped client's masks rebuilt
    acc = engine.accumulator(cfg.upload_dim, cfg.n)
    on_ray = simulate(cfg, xs, drops=drops, seed=3, accumulator=acc)
    local = simulate(cfg, xs, drops=drops, seed=3)
    assert np.array_equal(on_ray.ring_sum, local.ring_sum)
    assert on_ray.included == local.included and 4 not in on_ray.included
    assert len(acc.stats.add_seconds) == 3
    assert len(acc.stats.unmask_seconds) == -(-cfg.upload_dim // 700)  # one per coordinate range
    assert len(acc.stats.workers) >= 2, "the work was spread over several worker processes"


def test_mergeable_partial_sums_and_exclusion() -> None:
    rng = np.random.default_rng(1)
    dim, ys = 1000, {u: rng.integers(0, 2**32, 1000, dtype=np.uint32) for u in range(1, 7)}
    engine = RayEngine(shards=4, chunk=300, init=False)
    acc, ref = engine.accumulator(dim, 6), LocalAccumulator(dim)
    keys = ([bytes(range(16))], [bytes(range(1, 17))])
    for u, y in ys.items():
        acc.add(u, y)
        ref.add(u, y)
    acc.subtract(5, ys[5])  # a verified round takes an excluded upload out again
    ref.subtract(5, ys[5])
    assert np.array_equal(acc.unmask(*keys, 0xFFFFF), ref.unmask(*keys, 0xFFFFF))


def test_a_worker_killed_during_unmasking_is_retried(cluster: Any, tmp_path: Path) -> None:
    cfg, xs = _round()
    engine = RayEngine(shards=2, chunk=1000, init=False)
    marker = tmp_path / "killed"
    acc = engine.accumulator(cfg.upload_dim, cfg.n, kill_once=str(marker))
    on_ray = simulate(cfg, xs, drops={Stage.MASKED_INPUT: [2]}, seed=5, accumulator=acc)
    assert marker.exists(), "the first task on the first range killed its worker"
    dead = int(marker.read_text())
    assert dead not in acc.stats.workers, "the range was recomputed by another worker"
    local = simulate(cfg, xs, drops={Stage.MASKED_INPUT: [2]}, seed=5)
    assert np.array_equal(on_ray.ring_sum, local.ring_sum)


def test_a_shard_killed_during_accumulation_aborts_the_round(cluster: Any) -> None:
    cfg, xs = _round()
    engine = RayEngine(shards=3, chunk=1000, init=False)
    acc = engine.accumulator(cfg.upload_dim, cfg.n)
    killed = []

    def kill_a_shard(stage: Stage, sender: int, msg: ClientMessage) -> ClientMessage:
        if stage is Stage.MASKED_INPUT and sender == 5 and not killed:
            ray.kill(acc.actors[0], no_restart=True)  # holds clients 1..3's partial sum
            killed.append(sender)
        return msg

    with pytest.raises(ProtocolAbort) as err:
        simulate(cfg, xs, client_tamper=kill_a_shard, seed=9, accumulator=acc)
    assert killed
    assert isinstance(err.value, AccumulatorLost), err.value
    assert "nothing is published" in str(err.value)


@pytest.mark.timeout(240)
def test_grpc_round_on_the_ray_engine(cluster: Any, tmp_path: Path) -> None:
    """The real service (asyncio transport) with ``--engine ray`` joined to the cluster."""
    with Cluster(tmp_path, members=5, threshold=3, dimension=2000, stage_timeout=20.0) as c:
        c.start_aggregator(
            rounds=1,
            extra=["--engine", "ray", "--ray-address", cluster.address, "--ray-shards", "2"],
            wait_ready=120,
        )
        c.start_clients(c.ids)
        summary = c.assert_aggregate(0, included=c.ids)
        assert summary["dropped"] == []
        assert c.aggregator is not None and "engine: Ray at" in c.aggregator.text()
