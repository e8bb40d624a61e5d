"""gRPC deployment benchmark: concurrent clients, transport overhead, bytes on the wire.

Real processes on 127.0.0.1 with mutual TLS: one aggregator, and client agents spread over a
few loader processes (threads inside each, one agent and one channel per member). Run with

    .venv/bin/python bench/bench_grpc.py [--clients 50,100,200] [--d 100000]
                                         [--latency-n 20] [--latency-d 1000000]

(1) the largest cohort that completes a round with every client included and no error;
(2) the round latency at n=20, d=1e6 over gRPC vs the in-memory simulation of the same round,
measured in this run; (3) protobuf bytes sent per client vs the float32 vector.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from secagg import ClientPolicy, RoundConfig, simulate  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT)
    return env


def load(args: argparse.Namespace) -> int:
    """Loader process: run agents ``lo..hi`` in threads; print one JSON line per report."""
    from client.agent import AgentOptions, ClientAgent

    ids = list(range(args.lo, args.hi + 1))
    out: list[dict[str, Any]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        # Inputs are drawn before the agent starts: drawing 1e6 normals is the harness's work,
        # not the protocol's, and the in-memory round is given its inputs ready-made as well.
        rng = np.random.default_rng(i)
        ready = iter([rng.normal(0.0, 0.3, args.d) for _ in range(args.rounds)])

        def next_input(cfg: Any) -> Any:
            x = next(ready)
            if cfg.d != x.shape[0]:
                raise ValueError(f"the round asks for d={cfg.d}, the loader drew {x.shape[0]}")
            return x

        try:
            agent = ClientAgent(
                AgentOptions(
                    aggregator=args.aggregator,
                    consortium=Path(args.consortium),
                    client_id=i,
                    rounds=args.rounds,
                    wait_timeout=900,
                    rpc_timeout=120,
                ),
                next_input,
            )
            try:
                reps = agent.run()
            finally:
                agent.close()
            rec = {"id": i, "reports": [r.__dict__ for r in reps]}
        except Exception as exc:
            rec = {"id": i, "error": f"{type(exc).__name__}: {exc}"}
        with lock:
            out.append(rec)

    threads = [threading.Thread(target=one, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for rec in out:
        print(json.dumps(rec))
    return 0


def run_cohort(
    n: int,
    d: int,
    k: int | None,
    t: int,
    rounds: int,
    loaders: int,
    timeout: float,
    transport: str = "aio",
) -> dict[str, Any]:
    from aggregator.consortium import init_consortium

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        init_consortium(n, root / "cons")
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "aggregator.cli",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--consortium",
            str(root / "cons"),
            "--state",
            str(root / "state"),
            "--output",
            str(root / "out"),
            "--dimension",
            str(d),
            "--threshold",
            str(t),
            "--rounds",
            str(rounds),
            "--stage-timeout",
            "120",
            "--first-round-wait",
            "300",
            "--transport",
            transport,
        ]
        if k is not None:
            cmd += ["--neighbors", str(k)]
        agg = subprocess.Popen(
            cmd,
            env=_env(),
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        per = math.ceil(n / loaders)
        procs = []
        t0 = time.monotonic()
        for lo in range(1, n + 1, per):
            hi = min(n, lo + per - 1)
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "_load",
                        "--lo",
                        str(lo),
                        "--hi",
                        str(hi),
                        "--aggregator",
                        f"127.0.0.1:{port}",
                        "--consortium",
                        str(root / "cons"),
                        "--rounds",
                        str(rounds),
                        "--d",
                        str(d),
                    ],
                    env=_env(),
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        records: list[dict[str, Any]] = []
        try:
            for p in procs:
                stdout, _ = p.communicate(timeout=timeout)
                records += [json.loads(line) for line in stdout.splitlines() if line.strip()]
            watchdog = threading.Timer(90, agg.kill)  # never wait forever for it
            watchdog.start()
            _, status, usage = os.wait4(agg.pid, 0)  # its CPU time and peak RSS
            watchdog.cancel()
            agg.returncode = os.waitstatus_to_exitcode(status)
        finally:
            for p in [*procs, agg]:
                if p.poll() is None:
                    p.kill()
        wall = time.monotonic() - t0
        summaries = []
        for r in range(rounds):
            f = root / "out" / f"round-{r}.json"
            summaries.append(json.loads(f.read_text()) if f.exists() else None)
        errors = [rec for rec in records if "error" in rec]
        sent = [
            rep["bytes_sent"]
            for rec in records
            for rep in rec.get("reports", [])
            if rep["completed"]
        ]
        last = summaries[-1]
        return {
            "transport": transport,
            "n": n,
            "d": d,
            "k": k if k is not None else n - 1,
            "t": t,
            "rounds": rounds,
            "included_last_round": len(last["included"]) if last else 0,
            "client_errors": len(errors),
            "error_examples": [e["error"] for e in errors[:3]],
            "round_s": [s["timings"]["round_s"] if s else None for s in summaries],
            "stages_s": last["timings"]["stages_s"] if last else None,
            "bytes_sent_per_client_median": float(np.median(sent)) if sent else None,
            "wall_s": wall,
            "server_cpu_s": usage.ru_utime + usage.ru_stime,
            "server_peak_rss": usage.ru_maxrss * 1024,
        }


def secagg_plus(n: int) -> tuple[int | None, int]:
    k = 2 * math.ceil(math.log2(n))
    if k >= n - 1:
        k_eff: int | None = None
        deg = n - 1
    else:
        k_eff, deg = k, k
    return k_eff, ClientPolicy().min_threshold(deg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    ld = sub.add_parser("_load")
    ld.add_argument("--lo", type=int)
    ld.add_argument("--hi", type=int)
    ld.add_argument("--aggregator")
    ld.add_argument("--consortium")
    ld.add_argument("--rounds", type=int, default=1)
    ld.add_argument("--d", type=int)
    ap.add_argument("--clients", default="50,100,200")
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--latency-n", type=int, default=20)
    ap.add_argument("--latency-d", type=int, default=1_000_000)
    ap.add_argument("--loaders", type=int, default=4)
    ap.add_argument(
        "--transports", default="aio,threads", help="aggregator transports to time, in order"
    )
    ap.add_argument("--latency-only", action="store_true", help="skip the cohorts")
    ap.add_argument("--out", default="bench/out/grpc.json")
    args = ap.parse_args(argv)
    if args.cmd == "_load":
        return load(args)

    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M")}
    # (2) latency at n=20, d=1e6: gRPC (second round: clients already connected) vs memory.
    n, d = args.latency_n, args.latency_d
    t = ClientPolicy().min_threshold(n - 1)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(0, 0.3, d) for _ in range(n)]
    # The in-memory round is the whole simulate() call: encoding every input and building
    # every client are in it, as they are in a gRPC round (its clock runs from the round's
    # opening, before any member has encoded). simulate's own total_s leaves them out.
    sim_t0 = time.perf_counter()
    sim = simulate(RoundConfig(n=n, t=t, d=d), inputs)
    sim_wall = time.perf_counter() - sim_t0
    by_transport = {}
    for transport in args.transports.split(","):
        print(f"latency: n={n}, d={d}, t={t} over gRPC ({transport}, 2 rounds)...", flush=True)
        by_transport[transport] = run_cohort(n, d, None, t, 2, args.loaders, 1800, transport)
    lat = next(iter(by_transport.values()))
    report["latency"] = {
        "grpc": lat,
        "simulation_s": sim_wall,
        "simulation_stages_only_s": sim.timings["total_s"],
        "grpc_round_s": lat["round_s"][-1],
        "overhead_ratio": (lat["round_s"][-1] or math.nan) / sim_wall,
        "by_transport": {
            tr: {
                "round_s": rec["round_s"][-1],
                "ratio": (rec["round_s"][-1] or math.nan) / sim_wall,
                "server_cpu_s": rec["server_cpu_s"],
                "server_peak_rss": rec["server_peak_rss"],
                "stages_s": rec["stages_s"],
            }
            for tr, rec in by_transport.items()
        },
        "float32_bytes": 4 * d,
        "bytes_ratio": (lat["bytes_sent_per_client_median"] or math.nan) / (4 * d),
    }
    print(json.dumps(report["latency"], indent=1, default=str), flush=True)
    if args.latency_only:
        report["cohorts"] = []
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))
        print(render(report))
        return 0
    # (1) concurrent clients at d=1e5.
    cohorts = []
    for n in [int(x) for x in args.clients.split(",")]:
        k, t = secagg_plus(n)
        print(f"cohort: n={n}, d={args.d}, k={k or n - 1}, t={t}...", flush=True)
        rec = run_cohort(n, args.d, k, t, 1, args.loaders, 3600)
        print(json.dumps(rec, default=str), flush=True)
        cohorts.append(rec)
    report["cohorts"] = cohorts
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))
    print(render(report))
    return 0


def render(r: dict[str, Any]) -> str:
    lat = r["latency"]
    lines = [
        f"measured {r['date']}",
        "",
        "| round | transport | gRPC (mTLS, separate processes) | in-memory simulation | "
        "overhead | server CPU (2 rounds) | server peak RSS |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| n={lat['grpc']['n']}, d={lat['grpc']['d']:,} | {tr} | {row['round_s']:.2f} s | "
            f"{lat['simulation_s']:.2f} s | {row['ratio']:.2f}x | {row['server_cpu_s']:.1f} s | "
            f"{row['server_peak_rss'] / 2**20:.0f} MiB |"
            for tr, row in lat["by_transport"].items()
        ),
        "",
        f"bytes sent per client (all stages, protobuf): "
        f"{lat['grpc']['bytes_sent_per_client_median']:,.0f} = {lat['bytes_ratio']:.3f}x "
        "the float32 vector",
        "",
        "| clients | d | k | t | included | client errors | round | bytes sent / client |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cohorts"]:
        rs = c["round_s"][-1]
        lines.append(
            f"| {c['n']} | {c['d']:,} | {c['k']} | {c['t']} | {c['included_last_round']} | "
            f"{c['client_errors']} | {rs:.1f} s | {c['bytes_sent_per_client_median'] or 0:,.0f} |"
            if rs is not None
            else f"| {c['n']} | {c['d']:,} | {c['k']} | {c['t']} | 0 | {c['client_errors']} | "
            "failed | - |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
