"""One-shot secure aggregation benchmark, side by side with our SecAgg+ in one run.

    .venv/bin/python bench/bench_oneshot.py [--quick] [--out bench/out/oneshot.json]

Sections: (1) client CPU, messages and bytes per client at n = 100, 1,000, 10,000 and
d = 1e5, 1e6 (one-shot: the whole upload; SecAgg+: encoding plus its k + 1 mask streams, a
lower bound of its CPU, with (k, t) as the aggregator chooses them for the registry's default
corruption assumption and 10% expected dropout); (2) server CPU; (3) committee member CPU and
bytes, against d at n = 100 and against n at d = 1e4; (4) round completion under 30% and 60%
client dropouts (n = 100, d = 1e4). CPU is process time, one thread. ``--quick`` skips
n = 10,000 in (3) and d = 1e6 in (3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protos import oneshot_wire
from protos.secagg.oneshot.v1 import oneshot_pb2 as opb
from secagg import ProtocolAbort, RoundConfig, SystemRandom, simulate
from secagg._crypto import ed25519_public
from secagg.oneshot import (
    CommitteeMember,
    OneShotAggregator,
    OneShotClient,
    OneShotConfig,
    OneShotInsufficient,
    simulate_oneshot,
)
from secagg.oneshot.scheme import public_a_hat
from secagg.params import choose_parameters
from secagg.prg import apply_masks

cpu = time.process_time
COMMITTEE = (1, 2, 3, 4, 5)
T_C = 4
DROPOUT = 0.1
CORRUPT = 1 / 3


def best_of(fn: Any, reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = cpu()
        fn()
        best = min(best, cpu() - t0)
    return best


class Parties:
    """A registry of ``n`` identities (made lazily) and a committee with open round keys."""

    def __init__(self, n: int, d: int) -> None:
        self.cfg = OneShotConfig(n=n, d=d, committee=COMMITTEE, threshold=T_C).with_session(
            os.urandom(16)
        )
        self.ids: dict[int, Ed25519PrivateKey] = {}
        self.registry: dict[int, bytes] = {}
        for u in range(1, n + 1):
            k = Ed25519PrivateKey.generate()
            self.ids[u], self.registry[u] = k, ed25519_public(k)
        self.members = {m: CommitteeMember(m, self.ids[m], self.registry) for m in COMMITTEE}
        self.keys = [self.members[m].open_round(self.cfg) for m in COMMITTEE]

    def client(self, u: int) -> OneShotClient:
        return OneShotClient(self.cfg, u, self.ids[u], self.registry)


def secagg_client_floor(n: int, d: int) -> dict[str, Any]:
    p = choose_parameters(n, DROPOUT, CORRUPT)
    cfg = RoundConfig(n=n, t=p.t, d=d, k=None if p.complete_graph else p.k)
    k = cfg.degree
    keys = [os.urandom(16) for _ in range(k + 1)]
    x = np.random.default_rng(0).normal(0, 0.3, d)
    rng = SystemRandom()

    def run() -> None:
        y = cfg.encoding.encode(x, rng)
        apply_masks(y, keys[: k // 2 + 1], keys[k // 2 + 1 :])

    return {
        "k": k,
        "t": p.t,
        "bits": cfg.ring_bits,
        "cpu_s": best_of(run, 1),
        "masked_bytes": (d * cfg.ring_bits + 7) // 8,
        "messages_up": len(cfg.stages),
        "cfg": cfg,
    }


def section_clients(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for n in (100, 1000, 10_000):
        for d in (100_000, 1_000_000):
            par = Parties(min(n, 50), d)  # identities for a few clients; n sets the ring
            cfg = OneShotConfig(n=n, d=d, committee=COMMITTEE, threshold=T_C).with_session(
                os.urandom(16)
            )
            par.cfg = cfg
            par.keys = [par.members[m].open_round(cfg) for m in COMMITTEE]
            x = np.random.default_rng(1).normal(0, 0.3, d)
            ups = []

            def one(ups: list[Any] = ups, par: Parties = par, x: Any = x) -> None:
                public_a_hat.cache_clear()  # each client derives the a_k itself
                ups.append(par.client(6 + len(ups)).upload(x, par.keys))

            t_one = best_of(one, 2)
            up = ups[-1]
            info = opb.RoundInfo(
                config=oneshot_wire.config_to_pb(cfg),
                member_keys=[oneshot_wire.member_key_to_pb(k) for k in par.keys],
            )
            sec = secagg_client_floor(n, d)
            rows.append(
                {
                    "n": n,
                    "d": d,
                    "log2_q": round(cfg.ring.log_q, 2),
                    "oneshot_client_cpu_s": t_one,
                    "secagg_plus_client_floor_cpu_s": sec["cpu_s"],
                    "cpu_ratio": t_one / sec["cpu_s"],
                    "k": sec["k"],
                    "oneshot_messages_up": 1,
                    "secagg_plus_messages_up": sec["messages_up"],
                    "oneshot_bytes_up": up.nbytes,
                    "oneshot_masked_bytes": len(up.masked),
                    "oneshot_share_bytes": sum(len(s) for s in up.shares),
                    "oneshot_bytes_down": info.ByteSize(),
                    "secagg_plus_masked_bytes": sec["masked_bytes"],
                    "float32_bytes": 4 * d,
                    "masked_vs_float32": len(up.masked) / (4 * d),
                    "upload_vs_float32": up.nbytes / (4 * d),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def section_server(d: int) -> list[dict[str, Any]]:
    par = Parties(8, d)
    ups = [
        par.client(u).upload(np.random.default_rng(u).normal(0, 0.3, d), par.keys)
        for u in range(1, 9)
    ]
    agg = OneShotAggregator(par.cfg, par.registry, par.keys)
    adds = []
    for up in ups:
        t0 = cpu()
        agg.add(up)
        adds.append(cpu() - t0)
    inc = agg.close()
    for m in COMMITTEE:
        par.members[m].check(agg.check_request(m))
        agg.add_signature(par.members[m].sign(par.cfg.session_id, par.cfg.round, inc))  # type: ignore[arg-type]
    req = agg.release_request()
    for m in COMMITTEE[:T_C]:
        agg.add_share_sum(par.members[m].release(req))
    t0 = cpu()
    agg.finish()
    t_unmask = cpu() - t0
    add = statistics.median(adds)
    keys = [os.urandom(16) for _ in range(16)]
    y = np.zeros(d, dtype=np.uint32)
    per_stream = best_of(lambda: apply_masks(y, keys), 1) / 16
    rows = []
    for n in (100, 1000, 10_000):
        p = choose_parameters(n, DROPOUT, CORRUPT)
        k = p.k if not p.complete_graph else n - 1
        streams = n * (1 - DROPOUT) + DROPOUT * n * k
        rows.append(
            {
                "n": n,
                "d": d,
                "oneshot_add_per_upload_s": add,
                "oneshot_unmask_s": t_unmask,
                "oneshot_server_cpu_s": n * add + t_unmask,
                "secagg_plus_unmask_streams": streams,
                "secagg_plus_server_floor_cpu_s": streams * per_stream,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def member_round(n: int, d: int) -> dict[str, Any]:
    par = Parties(n, d)
    agg = OneShotAggregator(par.cfg, par.registry, par.keys)
    x = np.zeros(d)
    t_clients = cpu()
    for u in range(1, n + 1):
        agg.add(par.client(u).upload(x, par.keys))
    t_clients = cpu() - t_clients
    inc = agg.close()
    per: dict[int, float] = {}
    bytes_in: dict[int, int] = {}
    for m in COMMITTEE:
        req = agg.check_request(m)
        bytes_in[m] = sum(
            len(s.sealed) + len(s.share_digests) + 32 + 32 + 64 + 4 for s in req.shares
        )
        t0 = cpu()
        par.members[m].check(req)
        sig = par.members[m].sign(par.cfg.session_id, par.cfg.round, inc)  # type: ignore[arg-type]
        per[m] = cpu() - t0
        agg.add_signature(sig)
    rel = agg.release_request()
    out_bytes = 0
    for m in COMMITTEE[:T_C]:
        t0 = cpu()
        ss = par.members[m].release(rel)
        per[m] += cpu() - t0
        out_bytes = len(ss.residues) + 64
        agg.add_share_sum(ss)
    res = agg.finish()
    assert len(res.included) == n and not np.any(res.int_sum)
    m_cpu = statistics.median(per[m] for m in COMMITTEE[:T_C])
    row = {
        "n": n,
        "d": d,
        "member_cpu_s": m_cpu,
        "member_bytes_in": statistics.median(bytes_in.values()) + 4 * n + 64 * T_C,
        "member_bytes_out": out_bytes + 64,
        "client_cpu_s_mean": t_clients / n,
    }
    print(json.dumps(row), flush=True)
    return row


def section_dropouts() -> list[dict[str, Any]]:
    n, d = 100, 10_000
    rng = np.random.default_rng(3)
    inputs = [rng.normal(0, 0.3, d) for _ in range(n)]
    rows = []
    for frac in (0.3, 0.6):
        nd = round(frac * n)
        gone = {1 + (i * n) // nd for i in range(nd)}  # evenly spaced, exactly nd
        live = [u for u in range(1, n + 1) if u not in gone]
        committee = tuple(live[:5])
        cfg = OneShotConfig(n=n, d=d, committee=committee, threshold=T_C)
        t0 = time.perf_counter()
        try:
            r = simulate_oneshot(cfg, inputs, gone)
            one = f"completed, {len(r.included)} included"
        except OneShotInsufficient as exc:
            one = f"aborted: {exc}"
        one_s = time.perf_counter() - t0
        p = choose_parameters(n, DROPOUT, CORRUPT)
        scfg = RoundConfig(n=n, t=p.t, d=d, k=None if p.complete_graph else p.k)
        from secagg import Stage

        t0 = time.perf_counter()
        try:
            s = simulate(scfg, inputs, {Stage.MASKED_INPUT: sorted(gone)})
            sec = f"completed, {len(s.included)} included"
        except ProtocolAbort as exc:
            sec = f"aborted: {type(exc).__name__}"
        sec_s = time.perf_counter() - t0
        rows.append(
            {
                "dropout": frac,
                "dropped": len(gone),
                "oneshot": one,
                "oneshot_wall_s": one_s,
                "secagg_plus": sec,
                "secagg_plus_k_t": [scfg.degree, scfg.t],
                "secagg_plus_wall_s": sec_s,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    def f(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    head = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(f(r[c]) for c in cols) + " |" for r in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="bench/out/oneshot.json")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M")}
    print("== (1) clients ==", flush=True)
    report["clients"] = section_clients(args.quick)
    print("== (2) server ==", flush=True)
    report["server"] = section_server(1_000_000)
    print("== (3) committee member ==", flush=True)
    ds = (10_000, 100_000) if args.quick else (10_000, 100_000, 1_000_000)
    ns = (100, 1000) if args.quick else (100, 1000, 10_000)
    report["member_vs_d"] = [member_round(100, d) for d in ds]
    report["member_vs_n"] = [member_round(n, 10_000) for n in ns]
    print("== (4) dropouts ==", flush=True)
    report["dropouts"] = section_dropouts()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print()
    print(table(report["clients"], ["n", "d", "log2_q", "oneshot_client_cpu_s", "k",
                                    "secagg_plus_client_floor_cpu_s", "cpu_ratio",
                                    "oneshot_messages_up", "secagg_plus_messages_up",
                                    "oneshot_bytes_up", "oneshot_bytes_down",
                                    "secagg_plus_masked_bytes", "masked_vs_float32",
                                    "upload_vs_float32"]))  # fmt: skip
    print()
    print(table(report["server"], ["n", "d", "oneshot_add_per_upload_s", "oneshot_unmask_s",
                                   "oneshot_server_cpu_s", "secagg_plus_unmask_streams",
                                   "secagg_plus_server_floor_cpu_s"]))  # fmt: skip
    print()
    cols = ["n", "d", "member_cpu_s", "member_bytes_in", "member_bytes_out", "client_cpu_s_mean"]
    print(table(report["member_vs_d"] + report["member_vs_n"], cols))
    print()
    print(table(report["dropouts"], ["dropout", "dropped", "oneshot", "secagg_plus",
                                     "secagg_plus_k_t"]))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
