"""SecAgg+ at fleet scale (issue 17): one simulated round per cohort size, the server in its own
process, every message crossing the process boundary as the bytes the gRPC wire carries.

What it reports per n: per-client bytes down and up (protobuf envelopes, median and max),
per-client CPU (decode + state machine + encode, median and max), the server process's CPU and
its peak resident memory above its start, whether the unmasked sum is right, and the fitted
growth exponents (log-log least squares against n). The degree is ``k = 2 ceil(log2 n)``
with the default client policy's threshold (the steering defence on: SPEC.md D14); 5% of the
clients drop before their masked input. Inputs are drawn when each client reaches the masked
input stage and never kept, so memory measures the protocol, not the harness.

    .venv/bin/python bench/bench_scale.py                       # n = 100 ... 10,000, d = 1e5
    .venv/bin/python bench/bench_scale.py --sizes 100000 --d 100  # n = 100,000, small d
    .venv/bin/python bench/bench_scale.py --render bench/out/a.json bench/out/b.json  # join
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protos import wire
from protos.secagg.v1 import secagg_pb2 as pb
from secagg import ClientPolicy, RoundConfig, SecAggClient, SecAggServer, Stage, SystemRandom
from secagg._crypto import ed25519_public
from secagg.graph import Cohort

BATCH = 512


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _server_main(conn: Connection, cfg: RoundConfig, registry: dict[int, bytes]) -> None:
    """The aggregator's core alone: decode, receive, close stages, encode."""
    base = _rss_kib()
    t0 = time.process_time()
    server = SecAggServer(cfg, registry)
    while True:
        cmd, arg = conn.recv()
        if cmd == "recv":
            for raw in arg:
                server.receive(wire.client_from_pb(pb.ClientEnvelope.FromString(raw), cfg))
            conn.send(None)
        elif cmd == "close":
            stage = server.stage
            out = server.close_stage()
            items = [(u, wire.server_to_pb(m, cfg).SerializeToString()) for u, m in out.items()]
            for i in range(0, len(items), BATCH):
                conn.send(("part", items[i : i + BATCH]))
            conn.send(("done", stage.name))
        else:  # "result"
            res = server.result
            conn.send(
                {
                    "ring_sum": res.ring_sum.tobytes(),
                    "included": sorted(res.included),
                    "server_cpu_s": time.process_time() - t0,
                    "server_peak_rss_mib": (_rss_kib() - base) / 1024,
                    "server_start_rss_mib": base / 1024,
                }
            )
            return


def _input(u: int, d: int, mask: int) -> np.ndarray:
    """Client ``u``'s input (benchmark data, not a secret: numpy's generator is fine here)."""
    return np.random.default_rng(u).integers(0, mask + 1, size=d, dtype=np.uint32)


def run_round(n: int, d: int, drop: float = 0.05) -> dict[str, Any]:
    k = min(2 * math.ceil(math.log2(n)), n - 1)
    policy = ClientPolicy()
    t = policy.min_threshold(k)
    cfg = RoundConfig(n=n, t=t, d=d, k=k).with_session(os.urandom(16))
    ids = list(range(1, n + 1))
    idk = {u: Ed25519PrivateKey.generate() for u in ids}
    registry = {u: ed25519_public(key) for u, key in idk.items()}
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_server_main, args=(there, cfg, registry), daemon=True)
    proc.start()
    rng = SystemRandom()
    # One immutable registry for every simulated client, as each device holds one.
    cohort = Cohort(registry)
    clients = {u: SecAggClient(cfg, u, idk[u], cohort, policy=policy, rng=rng) for u in ids}
    del idk
    cpu = dict.fromkeys(ids, 0.0)
    down = dict.fromkeys(ids, 0)
    up = dict.fromkeys(ids, 0)
    every = max(1, round(1 / drop)) if drop else 0
    dropped = {u for u in ids if every and u % every == 0}
    mask = cfg.encoding.mask
    wall0 = time.perf_counter()

    pending: list[bytes] = []
    pending_bytes = 0

    def send(raw: bytes | None) -> None:
        """Stream replies to the server, at most BATCH messages or 8 MiB per hop, so neither
        side ever holds a stage's uploads at once (the memory column is the server's state)."""
        nonlocal pending_bytes
        if raw is not None:
            pending.append(raw)
            pending_bytes += len(raw)
        if pending and (raw is None or len(pending) >= BATCH or pending_bytes > 8 << 20):
            here.send(("recv", list(pending)))
            here.recv()
            pending.clear()
            pending_bytes = 0

    for u in ids:
        t0 = time.process_time()
        raw = wire.client_to_pb(clients[u].advertise(), cfg).SerializeToString()
        cpu[u] += time.process_time() - t0
        up[u] += len(raw)
        send(raw)
    send(None)
    stages = []
    while True:
        here.send(("close", None))
        batch: list[tuple[int, bytes]] = []
        while True:
            kind, body = here.recv()
            if kind == "done":
                stages.append(body)
                break
            batch.extend(body)
        if not batch or Stage[stages[-1]] is Stage.UNMASK:
            break
        nxt = cfg.next_stage(Stage[stages[-1]])
        for u, raw in batch:
            if u in dropped and nxt is Stage.MASKED_INPUT:
                continue
            down[u] += len(raw)
            t0 = time.process_time()
            msg = wire.server_from_pb(pb.ServerEnvelope.FromString(raw), cfg)
            if nxt is Stage.MASKED_INPUT:
                clients[u].set_input(_input(u, d, mask))
            reply = clients[u].receive(msg)  # type: ignore[arg-type]
            out = wire.client_to_pb(reply, cfg).SerializeToString()
            cpu[u] += time.process_time() - t0
            up[u] += len(out)
            send(out)
        send(None)
    here.send(("result", None))
    res = here.recv()
    proc.join(10)
    wall = time.perf_counter() - wall0
    expected = np.zeros(d, dtype=np.uint32)
    for u in res["included"]:
        expected += _input(u, d, mask)
    ok = bool(np.array_equal(np.frombuffer(res["ring_sum"], dtype=np.uint32), expected & mask))
    live = [u for u in ids if u not in dropped]
    cpus = [cpu[u] for u in live]
    return {
        "n": n,
        "d": d,
        "k": k,
        "t": t,
        "included": len(res["included"]),
        "correct_sum": ok,
        "client_cpu_median_s": statistics.median(cpus),
        "client_cpu_max_s": max(cpus),
        "client_cpu_total_s": sum(cpu.values()),
        "client_down_median_b": statistics.median(down[u] for u in live),
        "client_down_max_b": max(down[u] for u in live),
        "client_up_median_b": statistics.median(up[u] for u in live),
        "client_up_max_b": max(up[u] for u in live),
        "server_cpu_s": res["server_cpu_s"],
        "server_peak_rss_mib": res["server_peak_rss_mib"],
        "round_wall_s": wall,
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares exponent b of y ~ a n^b."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-12)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    num = sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True))
    den = sum((a - mx) ** 2 for a in lx)
    return num / den if den else math.nan


def render(rows: list[dict[str, Any]]) -> str:
    head = (
        "| n | d | k | t | included | sum ok | client down (median / max) | client up (median) "
        "| client CPU (median / max) | server CPU | server peak RSS | round wall |"
    )
    out = [head, "|" + "---|" * 12]
    for r in rows:
        out.append(
            f"| {r['n']:,} | {r['d']:,} | {r['k']} | {r['t']} | {r['included']:,} | "
            f"{'yes' if r['correct_sum'] else 'NO'} | "
            f"{r['client_down_median_b'] / 1e3:.1f} / {r['client_down_max_b'] / 1e3:.1f} kB | "
            f"{r['client_up_median_b'] / 1e3:.1f} kB | "
            f"{r['client_cpu_median_s'] * 1e3:.1f} / {r['client_cpu_max_s'] * 1e3:.1f} ms | "
            f"{r['server_cpu_s']:.1f} s | {r['server_peak_rss_mib']:.0f} MiB | "
            f"{r['round_wall_s']:.1f} s |"
        )
    by_d: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_d.setdefault(r["d"], []).append(r)
    for d, rs in by_d.items():
        if len(rs) < 2:
            continue
        ns = [float(r["n"]) for r in rs]
        fits = {
            "client down": slope(ns, [r["client_down_median_b"] for r in rs]),
            "client CPU": slope(ns, [r["client_cpu_median_s"] for r in rs]),
            "server CPU": slope(ns, [r["server_cpu_s"] for r in rs]),
            "server memory": slope(ns, [max(r["server_peak_rss_mib"], 1.0) for r in rs]),
        }
        out.append(
            f"\nfitted growth at d = {d:,} (exponent b of n^b): "
            + ", ".join(f"{key} {b:.2f}" for key, b in fits.items())
        )
        for lo, hi in itertools.pairwise(rs):  # issue 17: against n log n
            grew = hi["client_cpu_total_s"] / lo["client_cpu_total_s"]
            nlogn = hi["n"] * math.log(hi["n"]) / (lo["n"] * math.log(lo["n"]))
            out.append(
                f"total client CPU n = {lo['n']:,} -> {hi['n']:,}: {grew:.2f}x, n log n "
                f"{nlogn:.2f}x, ratio {grew / nlogn:.2f}"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="100,1000,10000", help="comma-separated cohort sizes")
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--drop", type=float, default=0.05)
    ap.add_argument("--out", default="bench/out/scale.json")
    ap.add_argument(
        "--render", nargs="+", metavar="JSON", help="print the table and fits of earlier runs"
    )
    args = ap.parse_args(argv)
    if args.render:  # a later file's row for the same (n, d) replaces an earlier one's
        joined = {(r["d"], r["n"]): r for f in args.render for r in json.loads(Path(f).read_text())}
        print(render([joined[key] for key in sorted(joined)]))
        return 0
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        print(f"n = {n:,}, d = {args.d:,} ...", flush=True)
        rows.append(run_round(n, args.d, args.drop))
        print(render(rows[-1:]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(render(rows))
    return 0 if all(r["correct_sum"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
