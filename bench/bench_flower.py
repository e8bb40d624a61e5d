"""Ours against Flower's SecAgg+ in the same Flower app and the same simulation run.

One ``run_simulation`` (Flower 1.42, Ray backend, two workers) per cohort size: round 1 is a
plain FedAvg round (it warms every worker up), round 2 runs our
:class:`aggregator.flower.SecAggWorkflow` with ``client.flower.secagg_mod``, round 3 Flower's
``SecAggPlusWorkflow`` with ``secaggplus_mod`` (and round 4 Flower's again with only the late
dropouts, the case it survives), over the same nodes, the same model
(one float32 array of ``d`` values) and the same dropouts: ``--drop`` of the clients fail on
the message that opens key sharing (ours: the key list; Flower: ``share_keys``), another
``--drop`` on the first message after their masked upload (ours: the survivor list; Flower:
``unmask``). Both use the same ``(k, t)`` (ours chosen for the total dropout rate under the
registry's corruption assumption; Flower's ``num_shares = k + 1``, it counts the client
itself).

Per round: wall time of the fit workflow; server time, the part of it not spent waiting in
``Grid.send_and_receive`` (decoding, unmasking, bookkeeping); protocol bytes per client
(every ConfigRecord value between server and clients, both ways, divided by the clients
sampled; the model the strategy sends and the clients' reply arrays are the same for both and
not counted); whether the strategy received an aggregate, and its largest error against the
plain weighted mean of the clients in it.

Needs the ``flower`` extra and root (Ray runs in a private network namespace: ``unshare
--net``, loopback only, ``RAY_USAGE_STATS_ENABLED=0``)::

    python bench/bench_flower.py --clients 100,500 --d 100000 --drop 0.1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OURS_RECORD = "secagg"
FLOWER_RECORD = "secaggplus_configs"
MAX_WEIGHT = 1000.0


def client_vector(pid: int, d: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Node ``pid``'s model: smooth values in [-1, 1], different per node."""
    i = np.arange(d, dtype=np.float64)
    return np.sin(i * 0.001 + pid * 0.37).astype(np.float32)


def client_examples(pid: int) -> int:
    return 200 + (pid * 37) % 700


def _record_bytes(value: Any) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, list):
        return sum(_record_bytes(v) for v in value)
    return 8


def content_bytes(msg: Any) -> int:
    """Protocol bytes of a message: its ConfigRecords (not its ArrayRecords: the model)."""
    if not msg.has_content():
        return 0
    return sum(
        _record_bytes(v) for rec in msg.content.config_records.values() for v in rec.values()
    )


class CountingGrid:
    """Delegates to Flower's Grid; counts protocol bytes and the time spent waiting."""

    def __init__(self, grid: Any) -> None:
        self.grid = grid
        self.bytes = 0
        self.waiting = 0.0

    def send_and_receive(self, messages: Iterable[Any], *, timeout: float | None = None) -> Any:
        msgs = list(messages)
        self.bytes += sum(content_bytes(m) for m in msgs)
        t0 = time.perf_counter()
        replies = list(self.grid.send_and_receive(msgs, timeout=timeout))
        self.waiting += time.perf_counter() - t0
        self.bytes += sum(content_bytes(m) for m in replies)
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self.grid, name)


class DropPlan:
    """Client mod, outermost: node ``pid`` fails on the message of the stage its plan names
    (per protocol: our record's stage or Flower's), in the rounds the plan names."""

    def __init__(self, plan: dict[int, dict[str, tuple[str, tuple[int, ...]]]]) -> None:
        self.plan = plan

    def __call__(self, msg: Any, ctxt: Any, call_next: Any) -> Any:
        pid = int(ctxt.node_config["partition-id"])
        mine = self.plan.get(pid, {})
        if msg.has_content():
            for record, (stage, rounds) in mine.items():
                rec = msg.content.config_records.get(record)
                here = int(msg.metadata.group_id or 0) in rounds
                if here and rec is not None and rec.get("stage") == stage:
                    raise RuntimeError(f"node {pid} drops out at {stage}")
        return call_next(msg, ctxt)


class OnlyWith:
    """Apply ``mod`` only to messages carrying ``record`` (Flower's mod assumes its record
    is in every train message; ours passes other messages through)."""

    def __init__(self, record: str, mod: Any) -> None:
        self.record, self.mod = record, mod

    def __call__(self, msg: Any, ctxt: Any, call_next: Any) -> Any:
        if msg.has_content() and self.record in msg.content.config_records:
            return self.mod(msg, ctxt, call_next)
        return call_next(msg, ctxt)


def child(n: int, d: int, drop: float, workers: int, flower_rounds: int = 2) -> dict[str, Any]:
    """One simulation: a warm-up round, ours, then ``flower_rounds`` of Flower's (both
    dropouts, then the late ones only); returns the rows."""
    from flwr.app import Context
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.default_workflows import default_fit_workflow

    from aggregator.consortium import init_consortium
    from aggregator.flower import SecAggWorkflow, run_on_ray
    from aggregator.parameters import resolve
    from client.flower import SecAggMod
    from protos.consortium import load_consortium

    tmp = Path(tempfile.mkdtemp(prefix="bench-flower-"))
    t0 = time.perf_counter()
    bundle = init_consortium(n, tmp / "consortium")
    setup_s = time.perf_counter() - t0
    early = set(range(0, n, max(1, round(1 / drop))))
    late = {p + 1 for p in early if p + 1 < n}
    # Round 2 ours, 3 Flower's, both with both dropouts; 4 Flower's with the late ones only.
    plan: dict[int, dict[str, tuple[str, tuple[int, ...]]]] = {}
    for p in early:
        plan[p] = {OURS_RECORD: ("SHARE_KEYS", (2,)), FLOWER_RECORD: ("share_keys", (3,))}
    for p in late:
        plan[p] = {OURS_RECORD: ("CONSISTENCY", (2,)), FLOWER_RECORD: ("unmask", (3, 4))}
    params = resolve(
        load_consortium(bundle).signed,
        d=d + 1,
        threshold=None,
        neighbors=None,
        expected_dropout=min(0.5, 2 * drop),
    )
    k = n - 1 if params.k is None else params.k
    ours = SecAggWorkflow(bundle, params.k, params.t, max_weight=MAX_WEIGHT)
    flower = SecAggPlusWorkflow(
        num_shares=min(n, k + 1), reconstruction_threshold=params.t, max_weight=MAX_WEIGHT
    )
    rows: dict[str, dict[str, Any]] = {}
    aggregates: dict[int, np.ndarray[Any, Any]] = {}
    included_nodes: dict[int, list[int]] = {}

    class Recording(FedAvg):
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            if results:
                aggregates[server_round] = parameters_to_ndarrays(results[0][1].parameters)[0]
                included_nodes[server_round] = [p.node_id for p, _ in results]
            return super().aggregate_fit(server_round, results, failures)

    class BothInOneRun:
        def __call__(self, grid: Any, context: Any) -> None:
            rnd = int(context.state.config_records["config"]["current_round"])
            if rnd == 1:  # warm-up: a plain FedAvg round starts every worker's imports
                default_fit_workflow(grid, context)
                return
            name, wf = (("ours", ours), ("flower", flower), ("flower_late", flower))[rnd - 2]
            counting = CountingGrid(grid)
            t = time.perf_counter()
            try:
                wf(cast(Grid, counting), context)
                error = ""
            except Exception as exc:  # a crash of Flower's workflow is an incomplete round
                error = f"{type(exc).__name__}: {exc}"
            wall = time.perf_counter() - t
            rows[name] = {
                "round_s": wall,
                "server_s": wall - counting.waiting,
                "bytes_per_client": counting.bytes / n,
                "completed": rnd in aggregates,
                "error": error,
            }
            if name == "ours" and ours.rounds:
                rows[name]["included"] = len(ours.rounds[-1].included)
                rows[name]["reason"] = ours.rounds[-1].reason
            print("ROW " + json.dumps({"n": n, "protocol": name, **rows[name]}), flush=True)

    class Node(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters: Any, config: Any) -> Any:
            return [client_vector(self.pid, d)], client_examples(self.pid), {}

    def client_fn(context: Context) -> Any:
        return Node(int(context.node_config["partition-id"])).to_client()

    client_app = ClientApp(
        client_fn=client_fn,
        mods=[
            DropPlan(plan),
            SecAggMod(consortium=bundle),
            OnlyWith(FLOWER_RECORD, secaggplus_mod),
        ],
    )
    server_app = ServerApp()
    pid_of: dict[int, int] = {}

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        strategy = Recording(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n,
            min_available_clients=n,
            initial_parameters=ndarrays_to_parameters([np.zeros(d, np.float32)]),
        )
        legacy = LegacyContext(
            context=context,
            config=ServerConfig(num_rounds=2 + flower_rounds),
            strategy=strategy,
        )
        DefaultWorkflow(fit_workflow=BothInOneRun())(grid, legacy)
        for r in ours.rounds:
            for member, nid in r.node_of.items():
                pid_of[nid] = member - 1

    t0 = time.perf_counter()
    run_on_ray(server_app, client_app, n, workers=workers, object_store_bytes=1 << 30)
    total_s = time.perf_counter() - t0
    # Largest error of each aggregate against the plain weighted mean of the clients in it
    # (a node's partition is known from our round's member mapping: member = partition + 1).
    for rnd, name in ((2, "ours"), (3, "flower"), (4, "flower_late")):
        if rnd not in aggregates or name not in rows:
            continue
        pids = [pid_of[nid] for nid in included_nodes[rnd] if nid in pid_of]
        if len(pids) != len(included_nodes[rnd]):
            continue
        w = np.array([min(client_examples(p), MAX_WEIGHT) for p in pids], dtype=np.float64)
        x = np.stack([client_vector(p, d).astype(np.float64) for p in pids])
        want = (w[:, None] * x).sum(0) / w.sum()
        rows[name]["max_abs_error"] = float(np.max(np.abs(aggregates[rnd] - want)))
        rows[name]["in_sum"] = len(pids)
    return {
        "n": n,
        "d": d,
        "k": k,
        "t": params.t,
        "dropped_before_sharing": len(early),  # rounds 2 and 3
        "dropped_after_masking": len(late),
        "workers": workers,
        "consortium_setup_s": setup_s,
        "simulation_s": total_s,
        "rows": rows,
    }


def _median_s(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def flower_floor(n: int, d: int, k: int, t: int, late: int, workers: int) -> dict[str, Any]:
    """A lower bound on one round of Flower's SecAgg+ with ``late`` clients dropping after
    their masked upload (the case it completes), from Flower's own functions timed here.

    Per client: two ``create_shares(secret, t, k + 1)`` (mask seed and key), ``k`` ECDH key
    agreements and share encryptions (``share_keys``), ``k`` decryptions and ECDH agreements for
    the pairwise masks, ``k + 1`` masks from ``pseudo_rand_gen`` added in. Server (``unmask``):
    one ``combine_shares`` per sampled client from the ``k + 1 - late`` shares the survivors
    return; ``n - late`` self masks; ``k`` ECDH agreements and masks per dropped client. Counts
    follow ``secaggplus_mod`` / ``secaggplus_workflow`` of flwr 1.42; per-call times are
    medians over a few calls and multiplied by the counts. Left out: messaging, (de)serialising,
    Ray, key generation, quantisation and every bookkeeping loop; the
    clients' work is divided evenly over ``workers`` and never overlaps the server's (unmasking
    starts when the last upload is in). So the real round is slower than this.
    """
    from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
    from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
        decrypt,
        encrypt,
        generate_shared_key,
    )
    from flwr.common.secure_aggregation.ndarrays_arithmetic import parameters_addition
    from flwr.common.secure_aggregation.secaggplus_utils import (
        pseudo_rand_gen,
        share_keys_plaintext_concat,
        share_keys_plaintext_separate,
    )
    from flwr.supercore.primitives.asymmetric import generate_key_pairs

    mod_range = 1 << 32
    shape: list[tuple[int, ...]] = [(d,)]
    num = k + 1
    sk1, pk1 = generate_key_pairs()
    sk2, pk2 = generate_key_pairs()
    secret = os.urandom(32)
    reps = 3
    split_s = _median_s(lambda: create_shares(secret, t, num), reps)
    shares = create_shares(secret, t, num)
    key = generate_shared_key(sk2, pk2)
    plain = share_keys_plaintext_concat(1, 2, shares[0], shares[1])
    ecdh_s = _median_s(lambda: generate_shared_key(sk1, pk1), 20)
    enc_s = _median_s(lambda: encrypt(key, plain), 20)
    ct = encrypt(key, plain)
    dec_s = _median_s(lambda: share_keys_plaintext_separate(decrypt(key, ct)), 20)
    acc = pseudo_rand_gen(secret, mod_range, shape)
    mask_s = _median_s(
        lambda: parameters_addition(acc, pseudo_rand_gen(os.urandom(32), mod_range, shape)), 5
    )
    survivors = n - late
    returned = shares[: num - late]  # a client's shares held by the clients still there
    combine_s = _median_s(lambda: combine_shares(returned), reps)
    client_s = 2 * split_s + k * (ecdh_s + enc_s) + k * (dec_s + ecdh_s) + num * mask_s
    server_s = n * combine_s + survivors * mask_s + late * k * (ecdh_s + mask_s)
    return {
        "n": n,
        "d": d,
        "k": k,
        "t": t,
        "dropped_after_masking": late,
        "workers": workers,
        "per_call_s": {
            "create_shares": split_s,
            "ecdh": ecdh_s,
            "encrypt_share": enc_s,
            "decrypt_share": dec_s,
            "mask_d": mask_s,
            "combine_shares": combine_s,
        },
        "client_s": client_s,
        "server_s": server_s,
        "round_floor_s": n * client_s / workers + server_s,
    }


def _flower_rounds(args: argparse.Namespace) -> int:
    if args.floor is not None:
        return 0  # ours only: Flower's side is the floor from its own functions
    return 1 if args.no_late_round else 2


def _run_child(n: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    script = 'ip link set lo up && exec "$0" "$@"'
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        str(n),
        "--d",
        str(args.d),
        "--drop",
        str(args.drop),
        "--workers",
        str(args.workers),
        "--flower-rounds",
        str(_flower_rounds(args)),
    ]
    proc = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=args.timeout,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise SystemExit(f"the n={n} simulation failed (exit {proc.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT ") :])
    return result


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| clients | protocol | k, t | round completed | round wall (s) | server (s) | "
        "bytes per client | in the sum | max abs error |\n"
        "|---:|---|---|---|---:|---:|---:|---:|---:|"
    )
    out = [head]
    for r in results:
        for name, label in (
            ("ours", "ours (SecAggWorkflow)"),
            ("flower", "Flower SecAgg+"),
            ("flower_late", "Flower SecAgg+, late dropouts only"),
        ):
            row = r["rows"].get(name)
            if row is None:
                continue
            err = row.get("max_abs_error")
            out.append(
                f"| {r['n']} | {label} | {r['k']}, {r['t']} | "
                f"{'yes' if row['completed'] else 'no'} | {row['round_s']:.1f} | "
                f"{row['server_s']:.2f} | {row['bytes_per_client'] / 1e3:,.0f} kB | "
                f"{row.get('in_sum', 0)} | {'-' if err is None else f'{err:.1e}'} |"
            )
    return "\n".join(out)


def _print_floor(args: argparse.Namespace) -> int:
    """Our round at ``--floor`` clients in Flower's simulation (as :func:`child`, without
    Flower's rounds), then Flower's lower bound with the same (k, t) and late dropouts, in one
    invocation; writes both to ``--out``."""
    n = args.floor
    measured = _run_child(n, args)  # our round in Flower's simulation, same invocation
    ours = measured["rows"]["ours"]
    k, t = measured["k"], measured["t"]
    floor = flower_floor(n, args.d, k, t, measured["dropped_after_masking"], args.workers)
    floor["ours"] = {**ours, "k": measured["k"], "t": measured["t"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"ours_simulation": measured, "flower_floor": floor}, indent=1))
    print(json.dumps(floor, indent=1))
    per = floor["per_call_s"]
    print(
        "| clients | k, t | Flower per client (s) | Flower server (s) | Flower round, lower "
        "bound (s) | ours, measured round (s) | ratio |\n|---:|---|---:|---:|---:|---:|---:|"
    )
    ratio = f"{floor['round_floor_s'] / ours['round_s']:.1f}x"
    wall = f"{ours['round_s']:.1f} ({'completed' if ours['completed'] else 'NOT completed'})"
    print(
        f"| {n} | {k}, {t} | {floor['client_s']:.1f} | {floor['server_s']:.0f} | "
        f"{floor['round_floor_s']:.0f} | {wall} | {ratio} |"
    )
    print("per call (s): " + ", ".join(f"{name} {v:.4f}" for name, v in per.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="100,500", help="cohort sizes, comma-separated")
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--drop", type=float, default=0.1, help="dropout rate at each of two stages")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers (one CPU each)")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "flower.json")
    ap.add_argument(
        "--no-late-round",
        action="store_true",
        help="skip round 4 (Flower's SecAgg+ with the late dropouts only)",
    )
    ap.add_argument(
        "--floor",
        type=int,
        metavar="N",
        help="our round at N clients in the simulation, then the lower bound on Flower's "
        "from its own functions (flower_floor) instead of its simulated round",
    )
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--flower-rounds", type=int, default=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.floor is not None:
        return _print_floor(args)
    if args.child is not None:
        res = child(args.child, args.d, args.drop, args.workers, args.flower_rounds)
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    if not 0 < args.drop < 0.5 or math.isnan(args.drop):
        ap.error("--drop must be in (0, 0.5)")
    results = []
    for n in [int(x) for x in args.clients.split(",") if x]:
        res = _run_child(n, args)
        results.append(res)
        print(json.dumps(res), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
