"""The composed API over real gRPC (issue 16): one :class:`dp.DistributedDP` given to the
aggregator's :class:`aggregator.tasks.DpStatisticsTask` and to every member's
:class:`client.agent.DpStatisticsContributor`. The aggregator (the asyncio service, mTLS on
loopback) and five members (threads of this process, each with its own identity) run one
round; the published vector is the members' sum plus noise of the stated size, and the round's
record carries the resolved DP parameters."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from aggregator.aio_service import serve_aio
from aggregator.service import ServeOptions
from aggregator.tasks import DpStatisticsTask
from client.agent import AgentOptions, ClientAgent, DpStatisticsContributor
from dp import DistributedDP
from proofs_tests.e2e.cluster import Cluster, free_port
from protos.consortium import load_consortium

D, N, T = 48, 5, 3


@pytest.mark.timeout(180)
def test_one_distributed_dp_object_drives_aggregator_and_members_over_grpc(tmp_path: Path) -> None:
    dp = DistributedDP(l2_clip=1.0, noise_multiplier=0.3)
    task = DpStatisticsTask(D, dp, n=N, t=T)
    cfg = task.dp_config
    with Cluster(tmp_path, members=N, threshold=T, dimension=D) as c:
        port = free_port()
        address = f"127.0.0.1:{port}"
        opts = ServeOptions(
            d=cfg.encoded_dim,
            t=T,
            bits=cfg.bits,
            rounds=1,
            stage_timeout=20.0,
            first_round_wait=60.0,
            output=c.output,
        )
        stop = threading.Event()
        ready = threading.Event()
        served: list[int] = []

        def run_aggregator() -> None:
            served.append(
                serve_aio(
                    opts,
                    load_consortium(c.consortium),
                    c.state,
                    address,
                    task=task,
                    ready=lambda _p: ready.set(),
                    stop_event=stop,
                )
            )

        agg = threading.Thread(target=run_aggregator, daemon=True)
        agg.start()
        assert ready.wait(60), "the aggregator did not start"
        xs = {u: np.random.default_rng(u).uniform(-0.1, 0.1, D) for u in c.ids}
        reports: dict[int, object] = {}

        def member(u: int) -> None:
            options = AgentOptions(
                aggregator=address,
                consortium=c.consortium,
                client_id=u,
                rounds=1,
                wait_timeout=120.0,
            )
            agent = ClientAgent(options, DpStatisticsContributor(lambda _c, u=u: xs[u], dp))
            try:
                reports[u] = agent.run()
            except Exception as exc:  # reported below
                reports[u] = exc
            finally:
                agent.close()

        members = [threading.Thread(target=member, args=(u,), daemon=True) for u in c.ids]
        for m in members:
            m.start()
        for m in members:
            m.join(150)
        agg.join(60)
        stop.set()
        assert served == [1], (served, reports)
        summary = json.loads((c.output / "round-0.json").read_text())
        got = np.load(c.output / "round-0.npy")
        truth = sum(xs[u] for u in summary["included"])
        sd = summary["noise_stddev"]
        assert got.shape == (D,) and sd > 0
        assert np.abs(got - truth).max() < 6 * sd + 1e-3
        assert summary["dp"] == json.loads(cfg.canonical_bytes())
        assert sorted(summary["included"]) == c.ids
