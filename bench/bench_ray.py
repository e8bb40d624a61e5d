"""The Ray engine against the in-process engine: the server's bulk work of one round.

What is timed is what ``--engine ray`` moves to Ray: summing ``--n`` masked uploads of ``--d``
words as they arrive, then unmasking (the self masks of the survivors and the pairwise masks
of ``--dropped`` dropped clients with ``--partners`` surviving neighbours each, expanded from
their keys with the mask PRG). In process: :class:`secagg.accumulate.LocalAccumulator`. On
Ray: :class:`aggregator.ray_engine.RayAccumulator` with 1, 2 and 4 accumulation shards and
unmasking tasks of ``d / (2 * shards)`` coordinates, on a local three-node Ray cluster
(``ray.cluster_utils.Cluster``). Both must give the same sum. Run with

    .venv/bin/python bench/bench_ray.py [--n 40] [--d 1000000] [--dropped 4] [--partners 14]

It enters a private network namespace itself (``unshare --net``, loopback up, Ray's usage
statistics off), as every Ray test here does; it needs root for that.

The machine has 2 cores, so the figure of merit is parallel efficiency (speedup over the
in-process engine divided by the cores the shards could use, ``min(shards, 2)``) and where the
work went (seconds per shard and per unmasking task), not absolute speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORES = 2


def _inside(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster

    from aggregator.ray_engine import RayEngine
    from secagg.accumulate import LocalAccumulator

    rng = np.random.default_rng(0)
    n, d = args.n, args.d
    uploads = [rng.integers(0, 2**32, d, dtype=np.uint32) for _ in range(n)]
    minus = [os.urandom(16) for _ in range(n - args.dropped)]  # self masks of the survivors
    pairs = [os.urandom(16) for _ in range(args.dropped * args.partners)]
    plus, minus = pairs[: len(pairs) // 2], minus + pairs[len(pairs) // 2 :]
    mask = (1 << 23) - 1

    def run(acc: Any) -> tuple[np.ndarray[Any, Any], float, float]:
        t0 = time.perf_counter()
        for u, y in enumerate(uploads, 1):
            acc.add(u, y)
        t1 = time.perf_counter()
        out = acc.unmask(plus, minus, mask)
        t2 = time.perf_counter()
        return np.array(out, copy=True), t1 - t0, t2 - t1

    ref, add_local, unmask_local = run(LocalAccumulator(d))
    local = add_local + unmask_local
    node = {"object_store_memory": 400 << 20}
    c = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 2})
    for _ in range(2):
        c.add_node(**node, num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, configure_logging=False)
    rows = []
    try:
        for shards in (1, 2, 4):
            engine = RayEngine(shards=shards, chunk=-(-d // (2 * shards)), init=False)
            run(engine.accumulator(d, n))  # warm-up: workers started, functions shipped
            acc = engine.accumulator(d, n)
            out, add_s, unmask_s = run(acc)
            assert np.array_equal(out, ref), "the Ray engine's sum differs"
            wall = add_s + unmask_s
            speedup = local / wall
            rows.append(
                {
                    "shards": shards,
                    "add_wall_s": add_s,
                    "unmask_wall_s": unmask_s,
                    "wall_s": wall,
                    "add_work_per_shard_s": acc.stats.add_seconds,
                    "unmask_work_per_task_s": acc.stats.unmask_seconds,
                    "unmask_work_total_s": sum(acc.stats.unmask_seconds),
                    "speedup": speedup,
                    "efficiency": speedup / min(shards, CORES),
                    "unmask_speedup": unmask_local / unmask_s,
                    "unmask_efficiency": unmask_local / unmask_s / min(shards, CORES),
                    "workers": len(acc.stats.workers),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
        c.shutdown()
    return {
        "n": n,
        "d": d,
        "keys": len(plus) + len(minus),
        "local": {"add_s": add_local, "unmask_s": unmask_local, "wall_s": local},
        "ray": rows,
        "nodes": 3,
        "logical_cpus": 4,
        "cores": CORES,
    }


def render(r: dict[str, Any]) -> str:
    loc = r["local"]
    lines = [
        f"n = {r['n']} uploads of d = {r['d']:,} words, {r['keys']} mask keys to expand; "
        f"3-node local Ray cluster (4 logical CPUs) on {r['cores']} cores",
        "",
        "| engine | shards | sum uploads | unmask | total | unmask work / task | speedup | "
        "efficiency | unmask speedup | unmask efficiency |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| in process | - | {loc['add_s']:.2f} s | {loc['unmask_s']:.2f} s | "
        f"{loc['wall_s']:.2f} s | - | 1.00x | - | 1.00x | - |",
    ]
    for row in r["ray"]:
        per = row["unmask_work_per_task_s"]
        lines.append(
            f"| Ray | {row['shards']} | {row['add_wall_s']:.2f} s | {row['unmask_wall_s']:.2f} s "
            f"| {row['wall_s']:.2f} s | {min(per):.2f}-{max(per):.2f} s ({len(per)} tasks) | "
            f"{row['speedup']:.2f}x | {row['efficiency']:.0%} | {row['unmask_speedup']:.2f}x | "
            f"{row['unmask_efficiency']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--dropped", type=int, default=4)
    ap.add_argument("--partners", type=int, default=14)
    ap.add_argument("--out", default="bench/out/ray.json")
    args = ap.parse_args(argv)
    if os.environ.get("SECAGG_RAY_NETNS") != "1":
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", SECAGG_RAY_NETNS="1")
        env["PYTHONPATH"] = str(ROOT)
        script = 'ip link set lo up && exec "$0" "$@"'
        argv2 = [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
        return subprocess.run(["unshare", "--net", "sh", "-c", script, *argv2], env=env).returncode
    report = _inside(args)
    report["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
