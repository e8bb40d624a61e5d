"""Load test: thousands of concurrent members through the real gRPC aggregator on 127.0.0.1.

One ``secagg-aggregator serve`` process (mutual TLS, the default asyncio transport unless
``--transport threads``) and the members as lightweight coroutines: ``--loaders`` processes,
each one asyncio event loop running its share of members, one ``grpc.aio`` TLS channel and one
:class:`secagg.SecAggClient` state machine per member, through the same RPCs and messages as
``secagg-client`` (GetRound, then Submit / Await per stage). Run with

    .venv/bin/python bench/bench_load.py --clients 2000 --d 1000 [--transport aio|threads]

and it prints one table row per cohort: included members, client errors, round time, the
aggregator's CPU seconds and peak RSS (``wait4`` rusage), the loaders' RSS per member, and the
time each stage took.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT)
    return env


def _rss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# -- a loader: many members on one event loop --------------------------------------------------


# What secagg-client's agent retries too (client/agent.py), with a capped backoff.
_RETRYABLE = {"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"}


async def _rpc(method: Any, request: Any, timeout: float, long_poll: bool) -> Any:
    """One RPC, retried on a transient failure (and, for a long-poll, on its deadline)."""
    import grpc

    delay = 0.25
    for attempt in range(10):
        try:
            return await method(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            name = exc.code().name
            if long_poll and name == "DEADLINE_EXCEEDED":
                continue
            if name not in _RETRYABLE or attempt == 9:
                raise
            _PROGRESS[f"retried {name}"] += 1
            await asyncio.sleep(delay)
            delay = min(4.0, delay * 2)
    raise AssertionError("unreachable")


async def _member(
    i: int, args: argparse.Namespace, registry: Any, policy: Any, sem: asyncio.Semaphore
) -> dict[str, Any]:
    import grpc

    from protos import wire
    from protos.consortium import channel_options, member_folder
    from protos.secagg.v1 import secagg_pb2 as pb
    from protos.secagg.v1 import secagg_pb2_grpc as pb_grpc
    from secagg import ProtocolAbort, SecAggClient, SystemRandom

    folder = member_folder(None, Path(args.consortium), i)
    files = folder.files()
    creds = grpc.ssl_channel_credentials(
        root_certificates=folder.ca, private_key=files.key, certificate_chain=files.cert
    )
    t0 = time.monotonic()
    _PROGRESS["waiting to connect"] += 1
    async with sem:  # connect in waves: a TLS handshake storm only slows everyone down
        channel = grpc.aio.secure_channel(
            args.aggregator,
            creds,
            options=[
                *channel_options(None, 64 << 20),
                # a connection refused under the handshake storm is retried soon
                ("grpc.initial_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 2000),
            ],
        )
        await asyncio.wait_for(channel.channel_ready(), 600)
    _PROGRESS["waiting to connect"] -= 1
    _PROGRESS["connected"] += 1
    stub = pb_grpc.AggregatorStub(channel)  # type: ignore[no-untyped-call]
    sent = received = 0
    try:
        _PROGRESS["GetRound"] += 1
        info = await _rpc(stub.GetRound, pb.GetRoundRequest(client_id=i, after_round=-1), 60, True)
        if info.finished:
            return {"id": i, "error": "no round"}
        _PROGRESS["GetRound"] -= 1
        cfg = wire.config_from_pb(info.config)
        rng = np.random.default_rng(i)
        ring = cfg.encoding.encode(rng.normal(0.0, 0.3, cfg.d), SystemRandom())
        client = SecAggClient(cfg, i, files.identity, registry, ring, policy=policy)
        msg: Any = client.advertise()
        for stage in cfg.stages:
            _PROGRESS[stage.name] += 1
            env = wire.client_to_pb(msg, cfg)
            sent += env.ByteSize()
            await _rpc(stub.Submit, env, 3600, False)  # a retry is byte-identical: idempotent
            req = pb.AwaitRequest(
                round=cfg.round,
                session_id=cfg.session_id,
                client_id=i,
                stage=wire.STAGE_TO_PB[stage],
            )
            got = await _rpc(stub.Await, req, 60, True)
            received += got.ByteSize()
            reply = wire.server_from_pb(got, cfg)
            if isinstance(reply, pb.RoundOutcome):
                return {
                    "id": i,
                    "completed": reply.completed,
                    "reason": reply.reason,
                    "seconds": time.monotonic() - t0,
                    "sent": sent,
                    "received": received,
                }
            msg = client.receive(reply)
            await asyncio.sleep(0)  # let the other members of this loader run
        return {"id": i, "error": "no outcome"}
    except (ProtocolAbort, grpc.aio.AioRpcError) as exc:
        _PROGRESS["errors"] += 1
        where = {k: v for k, v in _PROGRESS.items() if v}
        print(
            f"{time.monotonic() - t0:.1f}s member {i} {where}: {type(exc).__name__}: {exc}"[:500],
            file=sys.stderr,
            flush=True,
        )
        return {"id": i, "error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        await channel.close()


_PROGRESS: collections.Counter[str] = collections.Counter()


async def _report() -> None:
    while True:
        await asyncio.sleep(10)
        print(dict(_PROGRESS), file=sys.stderr, flush=True)


async def _load(args: argparse.Namespace) -> list[dict[str, Any]]:
    from protos.consortium import member_folder
    from secagg import ClientPolicy

    # Every member of a loader checks the same signed registry: read it once.
    signed = member_folder(None, Path(args.consortium), args.lo).registry()
    policy = ClientPolicy(max_corrupt_fraction=signed.policy_fraction)
    sem = asyncio.Semaphore(16)
    reporter = asyncio.create_task(_report())
    try:
        return await asyncio.gather(
            *(_member(i, args, signed.identities, policy, sem) for i in range(args.lo, args.hi + 1))
        )
    finally:
        reporter.cancel()


def load(args: argparse.Namespace) -> int:
    records = asyncio.run(_load(args))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for rec in records:
        print(json.dumps(rec))
    print(json.dumps({"loader_peak_rss": peak, "members": len(records)}))
    return 0


# -- one cohort ------------------------------------------------------------------------------


def secagg_plus(n: int, cons: Path) -> tuple[int, int]:
    """SecAgg+ with k = 2 ceil(log2 n) neighbours (bench_grpc.py's cohorts) and the smallest
    threshold the members' default policy accepts under the registry's corruption bound."""
    from protos.consortium import load_consortium
    from secagg import ClientPolicy

    k = min(n - 1, 2 * math.ceil(math.log2(n)))
    k -= k % 2 if k < n - 1 else 0
    frac = load_consortium(cons).signed.policy_fraction
    return k, ClientPolicy(max_corrupt_fraction=frac).min_threshold(k)


def run_cohort(
    n: int,
    d: int,
    loaders: int,
    transport: str,
    timeout: float,
    consortium: Path | None,
    auto: bool,
) -> dict[str, Any]:
    from aggregator.consortium import init_consortium

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cons = consortium or root / "cons"
        t_init = time.monotonic()
        if not (cons / "aggregator").exists():
            init_consortium(n, cons)
        init_s = time.monotonic() - t_init
        port = free_port()
        k, t = secagg_plus(n, cons)
        chosen = [] if auto else ["--neighbors", str(k), "--threshold", str(t)]
        cmd = [
            sys.executable,
            "-m",
            "aggregator.cli",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--consortium",
            str(cons),
            "--state",
            str(root / "state"),
            "--output",
            str(root / "out"),
            "--dimension",
            str(d),
            "--rounds",
            "1",
            "--stage-timeout",
            str(timeout),
            "--first-round-wait",
            str(timeout),
            "--transport",
            transport,
            *chosen,
        ]
        log = open(root / "aggregator.log", "w")  # noqa: SIM115
        agg = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
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
                        str(cons),
                    ],
                    env=_env(),
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=open(root / f"loader-{lo}.log", "w"),  # noqa: SIM115
                    text=True,
                )
            )
        records: list[dict[str, Any]] = []
        loader_rss: list[int] = []
        agg_rss_max = 0
        try:
            for p in procs:
                while p.poll() is None:
                    agg_rss_max = max(agg_rss_max, _rss(agg.pid))  # no poll(): wait4 reaps it
                    try:
                        stdout, _ = p.communicate(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        if time.monotonic() - t0 > 4 * timeout:
                            raise
                else:
                    stdout, _ = p.communicate()
                for line in stdout.splitlines():
                    if not line.strip():
                        continue
                    rec = json.loads(line)
                    if "loader_peak_rss" in rec:
                        loader_rss.append(rec["loader_peak_rss"])
                    else:
                        records.append(rec)
            _, status, usage = os.wait4(agg.pid, 0)
            agg.returncode = os.waitstatus_to_exitcode(status)
        finally:
            for p in [*procs, agg]:
                if p.poll() is None:
                    p.kill()
            log.close()
        wall = time.monotonic() - t0
        f = root / "out" / "round-0.json"
        summary = json.loads(f.read_text()) if f.exists() else None
        errors = [r for r in records if "error" in r]
        ok = [r for r in records if r.get("completed")]
        return {
            "n": n,
            "d": d,
            "k": None if auto else k,
            "t": None if auto else t,
            "transport": transport,
            "loaders": loaders,
            "included": len(summary["included"]) if summary else 0,
            "completed_clients": len(ok),
            "client_errors": len(errors),
            "error_examples": [e["error"] for e in errors[:3]],
            "round_s": summary["timings"]["round_s"] if summary else None,
            "stages_s": summary["timings"]["stages_s"] if summary else None,
            "server_cpu_s": usage.ru_utime + usage.ru_stime,
            "server_peak_rss": usage.ru_maxrss * 1024,
            "server_rss_sampled_max": agg_rss_max,
            "loader_rss_per_client": sum(loader_rss) / max(1, n),
            "client_seconds_median": float(np.median([r["seconds"] for r in ok])) if ok else None,
            "bytes_down_per_client": float(np.median([r["received"] for r in ok])) if ok else None,
            "bytes_up_per_client": float(np.median([r["sent"] for r in ok])) if ok else None,
            "consortium_init_s": init_s,
            "wall_s": wall,
            "aggregator_log_tail": (root / "aggregator.log").read_text()[-1500:]
            if not summary
            else "",
        }


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| clients | d | k | t | transport | included | client errors | round | server CPU | "
        "server peak RSS | loader RSS / client | down / client | up / client |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        rs = c["round_s"]
        lines.append(
            f"| {c['n']} | {c['d']:,} | {c['k']} | {c['t']} | {c['transport']} | {c['included']} | "
            f"{c['client_errors']} | {'failed' if rs is None else f'{rs:.1f} s'} | "
            f"{c['server_cpu_s']:.1f} s | {c['server_peak_rss'] / 2**20:.0f} MiB | "
            f"{c['loader_rss_per_client'] / 2**20:.2f} MiB | "
            f"{(c['bytes_down_per_client'] or 0) / 1e3:,.0f} kB | "
            f"{(c['bytes_up_per_client'] or 0) / 1e3:,.1f} kB |"
        )
    lines.append("")
    for c in rows:
        if c["stages_s"]:
            st = ", ".join(f"{k} {v:.1f}" for k, v in c["stages_s"].items())
            lines.append(f"- n={c['n']} {c['transport']}: stages (s) {st}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd")
    ld = sub.add_parser("_load")
    ld.add_argument("--lo", type=int)
    ld.add_argument("--hi", type=int)
    ld.add_argument("--aggregator")
    ld.add_argument("--consortium")
    ap.add_argument("--clients", default="2000", help="cohort sizes, comma-separated")
    ap.add_argument("--d", type=int, default=1000)
    ap.add_argument("--loaders", type=int, default=16)
    ap.add_argument("--transport", default="aio", help="aio, threads, or both (aio,threads)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per stage at most")
    ap.add_argument("--consortium", type=Path, default=None, help="reuse a consortium folder")
    ap.add_argument(
        "--auto-parameters",
        action="store_true",
        help="let the aggregator choose k and t (default: k = 2 ceil(log2 n), the policy's t)",
    )
    ap.add_argument("--out", default="bench/out/load.json")
    args = ap.parse_args(argv)
    if args.cmd == "_load":
        return load(args)
    rows = []
    for n in [int(x) for x in args.clients.split(",")]:
        for transport in args.transport.split(","):
            print(f"cohort n={n} d={args.d} transport={transport} ...", flush=True)
            rec = run_cohort(
                n,
                args.d,
                args.loaders,
                transport,
                args.timeout,
                args.consortium,
                args.auto_parameters,
            )
            print(json.dumps(rec, default=str), flush=True)
            rows.append(rec)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows})
    )
    print(render(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
