"""Secure aggregation benchmark: ours, the AES-CTR keystream floor and Flower, side by side.

Every ratio is measured in this one run on this machine (docs/anchors.md: never compare with
another day's absolute time). Run with ``make bench`` or

    .venv/bin/python bench/bench_secagg.py [--quick] [--no-flower] [--out bench/out/secagg.json]

Sections: (1) client masking vs the keystream floor and Flower; (2) server unmasking at n=100,
d=1e6, 30% dropped after ShareKeys, plain SecAgg and SecAgg+; (3) Shamir reconstruction;
(4) upload size; (5) scale from n=100 to n=1000 at d=1e5.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from secagg import (
    ClientPolicy,
    RoundConfig,
    SecAggClient,
    SecAggServer,
    Stage,
    SystemRandom,
)
from secagg._crypto import LABEL_MASKED, ed25519_public, ed25519_sign
from secagg.graph import ring_order
from secagg.messages import masked_digest
from secagg.prg import apply_masks
from secagg.shamir import _lagrange_at_zero, reconstruct, split

now = time.perf_counter


def best_of(fn: Callable[[], object], reps: int) -> float:
    best = math.inf
    for _ in range(reps):
        t0 = now()
        fn()
        best = min(best, now() - t0)
    return best


def keystream_floor_s(nbytes: int, streams: int, reps: int = 3) -> float:
    """AES-128-CTR keystream for ``nbytes`` in total, ``streams`` keys, 1 MiB ``update_into``
    into a preallocated buffer: the physical limit of anchors.md."""
    chunk = 1 << 20
    zeros = bytes(chunk)
    buf = bytearray(chunk + 15)
    per = nbytes // streams
    keys = [os.urandom(16) for _ in range(streams)]

    def run() -> None:
        for k in keys:
            enc = Cipher(algorithms.AES(k), modes.CTR(bytes(16))).encryptor()
            left = per
            while left > 0:
                step = min(chunk, left)
                enc.update_into(zeros if step == chunk else zeros[:step], buf)
                left -= step

    return best_of(run, reps)


# --------------------------------------------------------------------------------------------
# (1) client masking


def bench_client_masking(k: int, d: int, reps: int) -> dict[str, Any]:
    keys = [os.urandom(16) for _ in range(k + 1)]
    x = np.zeros(d, dtype=np.uint32)
    plus, minus = keys[: k // 2 + 1], keys[k // 2 + 1 :]

    identity = Ed25519PrivateKey.generate()
    digest = os.urandom(32)
    ring_mask = np.uint32((1 << 23) - 1)

    y = x.copy()

    def mask() -> None:
        apply_masks(y, plus, minus)  # in place, as the client does

    def mask_and_sign() -> None:
        # What SecAggClient does after the key agreements (secagg/client.py): mask in place,
        # reduce into the ring and hash each slice while it is in cache, then sign the
        # domain-separated digest of the upload (SPEC.md D5).
        h = masked_digest(1, b"")
        apply_masks(y, plus, minus, reduce_mask=int(ring_mask), digest=h)
        ed25519_sign(identity, LABEL_MASKED, digest, h.digest())

    # Interleaved best-of runs, so that a noisy neighbour hits all three alike.
    t_mask = t_sign = t_floor = math.inf
    for _ in range(reps):
        t_mask = min(t_mask, best_of(mask, 1))
        t_sign = min(t_sign, best_of(mask_and_sign, 1))
        t_floor = min(t_floor, keystream_floor_s((k + 1) * 4 * d, k + 1, 1))
    return {
        "k": k,
        "d": d,
        "ours_mask_s": t_mask,
        "ours_mask_sign_s": t_sign,
        "keystream_floor_s": t_floor,
        "ratio_to_floor": t_mask / t_floor,
        "sign_ratio_to_floor": t_sign / t_floor,
        "ours_elems_per_s": (k + 1) * d / t_mask,
    }


# --------------------------------------------------------------------------------------------
# (2)/(5) whole rounds driven through the state machines


def drive_round(
    config: RoundConfig,
    policy: ClientPolicy,
    drop_fraction: float,
    drop_stage: Stage = Stage.MASKED_INPUT,
) -> dict[str, Any]:
    """One round with every client in this process. Drops: a spaced ``drop_fraction`` of the
    ring order (as Flower's harness does), silent from ``drop_stage`` on."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    n, d = config.n, config.d
    cfg = config.with_session(os.urandom(16))
    ids = list(range(1, n + 1))
    idk = {u: Ed25519PrivateKey.generate() for u in ids}
    registry = {u: ed25519_public(k) for u, k in idk.items()}
    mask = np.uint32(cfg.encoding.mask)
    rng = SystemRandom()
    clients = {
        u: SecAggClient(
            cfg,
            u,
            idk[u],
            registry,
            np.frombuffer(os.urandom(4 * d), dtype=np.uint32) & mask,
            policy=policy,
            rng=rng,
        )
        for u in ids
    }
    inputs = {u: c._input.copy() for u, c in clients.items()}  # type: ignore[union-attr]
    server = SecAggServer(cfg, registry)
    stage_client: dict[Stage, list[float]] = {s: [] for s in Stage}
    stage_server: dict[Stage, float] = {}
    dropped: set[int] = set()
    t_round = now()
    for u in ids:
        t0 = time.process_time()
        server.receive(clients[u].advertise())
        stage_client[Stage.ADVERTISE_KEYS].append(time.process_time() - t0)
    for stage in cfg.stages:
        t0 = now()
        out = server.close_stage()
        stage_server[stage] = now() - t0
        if stage is Stage.ADVERTISE_KEYS:
            order = ring_order(server.u1, server.graph_seed, cfg.degree)
            nd = round(drop_fraction * n)
            dropped = {order[(i * n) // nd] for i in range(nd)} if nd else set()
        nxt = cfg.next_stage(stage)
        if nxt is None:
            break
        for u, msg in out.items():
            if u in dropped and nxt.value >= drop_stage.value:
                continue
            t0 = time.process_time()
            reply = clients[u].receive(msg)
            stage_client[nxt].append(time.process_time() - t0)
            server.receive(reply)
    total = now() - t_round
    res = server.result
    expected = np.zeros(d, dtype=np.uint32)
    for u in res.included:
        expected += inputs[u]
    correct = bool(np.array_equal(res.ring_sum, expected & mask))
    survivors = res.included
    prg_streams = len(survivors) + sum(len(server.graph[v] & survivors) for v in dropped)
    return {
        "n": n,
        "d": d,
        "k": cfg.degree,
        "t": cfg.t,
        "dropped": len(dropped),
        "included": len(survivors),
        "correct_sum": correct,
        "server_unmask_s": stage_server[Stage.UNMASK],
        "server_prg_streams": prg_streams,
        "server_floor_s": keystream_floor_s(prg_streams * 4 * d, min(prg_streams, 64)),
        "client_mask_stage_cpu_s_median": statistics.median(stage_client[Stage.MASKED_INPUT]),
        "client_cpu_s_total": sum(sum(v) for v in stage_client.values()),
        "server_s_total": sum(stage_server.values()),
        "round_wall_s": total,
    }


# --------------------------------------------------------------------------------------------
# (3) Shamir


def bench_shamir(holders: int, t: int) -> dict[str, Any]:
    rng = SystemRandom()
    xs = list(range(1, holders + 1))
    secret = int.from_bytes(os.urandom(32), "little")
    t0 = now()
    shares = split(secret, t, xs, rng)
    t_split = now() - t0
    _lagrange_at_zero.cache_clear()
    t0 = now()
    got = reconstruct(shares, t)
    t_first = now() - t0
    t0 = now()
    for _ in range(10):
        reconstruct(shares, t)
    t_cached = (now() - t0) / 10
    assert got == secret
    return {
        "holders": holders,
        "t": t,
        "split_s": t_split,
        "reconstruct_first_s": t_first,
        "reconstruct_cached_s": t_cached,
    }


# --------------------------------------------------------------------------------------------


def flower_section(quick: bool) -> dict[str, Any]:
    try:
        from bench import flower_anchor as fa
    except ImportError:  # run as a script from elsewhere
        import flower_anchor as fa  # type: ignore[no-redef]
    out: dict[str, Any] = {}
    d = 100_000 if quick else 1_000_000
    out["plus"] = fa.flower_protocol("plus", 100, d, 0.3)
    out["full"] = fa.flower_protocol("full", 100, d, 0.3, sample_clients=8)
    return out


def fmt_table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> str:
    cols = [head, *rows]
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(head))]

    def line(r: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="d = 1e5 instead of 1e6 (a smoke run)")
    ap.add_argument("--no-flower", action="store_true", help="skip Flower (no flwr venv)")
    ap.add_argument("--flower-json", help="reuse Flower figures saved by an earlier run")
    ap.add_argument("--no-scale", action="store_true")
    ap.add_argument("--out", default="bench/out/secagg.json")
    ap.add_argument("--only-scale", action="store_true", help="run section (5) alone")
    ap.add_argument("--only-masking", action="store_true", help="run section (1) alone")
    args = ap.parse_args(argv)
    d = 100_000 if args.quick else 1_000_000
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "d": d}

    print(f"== secure aggregation benchmark, d={d} ==", flush=True)
    if not args.only_scale:
        masking = [bench_client_masking(k, d, 7) for k in (14, 99)]
        report["client_masking"] = masking
    if args.only_masking:
        print(render(report))
        return 0
    if not args.only_scale:
        plus_k = 2 * math.ceil(math.log2(100))
        rounds = {
            # Flower's SecAgg+ parameters (k=14, t=8): needs a policy that tolerates 1 corrupt
            # neighbour; our default (t > (k + c)/2 with c < k/3) would ask for t = 10.
            "secagg+ k=14 t=8": drive_round(
                RoundConfig(n=100, t=8, d=d, k=plus_k), ClientPolicy(max_corrupt=1), 0.3
            ),
            # Our default policy (fewer than k/3 corrupt neighbours) at 30% dropout needs a wider
            # neighbourhood: k=20 gives t=14 and 14 surviving neighbours.
            "secagg+ k=20 t=14 (default policy)": drive_round(
                RoundConfig(n=100, t=14, d=d, k=20), ClientPolicy(), 0.3
            ),
            "secagg k=99 t=67": drive_round(RoundConfig(n=100, t=67, d=d), ClientPolicy(), 0.3),
        }
        report["rounds_n100"] = rounds
        report["shamir"] = [bench_shamir(14, 8), bench_shamir(99, 67)]
        cfg = RoundConfig(n=100, t=67, d=d)
        packed = (d * cfg.ring_bits + 7) // 8 + 68
        report["upload"] = {
            "bits": cfg.ring_bits,
            "bytes": packed,
            "float32_bytes": 4 * d,
            "ratio": packed / (4 * d),
            "b_over_32": cfg.ring_bits / 32,
        }

    if not args.no_scale:
        for name, pol in (("scale", ClientPolicy()),):
            scale = {}
            for n in (100, 300, 1000):
                k = 2 * math.ceil(math.log2(n))
                t = pol.min_threshold(k)
                scale[n] = drive_round(RoundConfig(n=n, t=t, d=100_000, k=k), pol, 0.05)
            report[name] = scale

    flower: dict[str, Any] | None = None
    if args.flower_json:
        flower = json.loads(Path(args.flower_json).read_text())
    elif not args.no_flower:
        print("running Flower's own primitives (separate venv)...", flush=True)
        flower = flower_section(args.quick)
    report["flower"] = flower

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(render(report))
    return 0


def render(r: dict[str, Any]) -> str:
    out = [f"measured {r['date']}, d = {r['d']:,}"]
    fl = r.get("flower") or {}
    fplus = (fl.get("plus") or [{}])[0] if isinstance(fl.get("plus"), list) else fl.get("plus", {})
    ffull = (fl.get("full") or [{}])[0] if isinstance(fl.get("full"), list) else fl.get("full", {})
    rows = []
    for m in r.get("client_masking", []):
        f_s = None
        if m["k"] == 14 and fplus:
            f_s = fplus.get("client_mask_s_median")
        rows.append(
            [
                m["k"],
                f"{m['ours_mask_s'] * 1e3:.1f} ms",
                f"{m['ours_mask_sign_s'] * 1e3:.1f} ms" if "ours_mask_sign_s" in m else "-",
                f"{m['keystream_floor_s'] * 1e3:.1f} ms",
                f"{m['ratio_to_floor']:.2f}x",
                f"{m['sign_ratio_to_floor']:.2f}x" if "sign_ratio_to_floor" in m else "-",
                f"{f_s * 1e3:.0f} ms" if f_s else "-",
                f"{f_s / m['ours_mask_s']:.1f}x" if f_s else "-",
            ]
        )
    out.append("\n(1) client masking, k neighbours + self mask (and with the upload's signature)\n")
    out.append(
        fmt_table(
            rows,
            [
                "k",
                "ours",
                "ours + signing",
                "AES-CTR floor",
                "ours/floor",
                "(ours + signing)/floor",
                "Flower",
                "Flower/ours",
            ],
        )
    )
    rows = []
    for name, x in r.get("rounds_n100", {}).items():
        ref = ffull if "k=99" in name else fplus if "t=8" in name else {}
        f_s = ref.get("server_unmask_total_s") if ref else None
        rows.append(
            [
                name,
                f"{x['included']}/{x['n']}",
                "yes" if x["correct_sum"] else "NO",
                f"{x['server_unmask_s']:.2f} s",
                f"{x['server_floor_s']:.2f} s",
                f"{x['server_unmask_s'] / x['server_floor_s']:.2f}x",
                f"{f_s:.1f} s" if f_s else "-",
                f"{f_s / x['server_unmask_s']:.0f}x" if f_s else "-",
            ]
        )
    out.append("\n(2) server unmasking, n = 100, 30% dropped after ShareKeys\n")
    out.append(
        fmt_table(
            rows,
            ["round", "included", "sum ok", "ours", "floor", "ours/floor", "Flower", "speed-up"],
        )
    )
    rows = [
        [
            s["holders"],
            s["t"],
            f"{s['split_s'] * 1e3:.2f} ms",
            f"{s['reconstruct_first_s'] * 1e3:.2f} ms",
            f"{s['reconstruct_cached_s'] * 1e3:.3f} ms",
        ]
        for s in r.get("shamir", [])
    ]
    out.append("\n(3) Shamir over GF(2^521 - 1), one secret\n")
    out.append(
        fmt_table(rows, ["holders", "t", "split", "reconstruct", "reconstruct (cached x-set)"])
    )
    if fplus or ffull:
        shares = [f.get("server_shamir_combine_s") for f in (fplus, ffull) if f]
        out.append(f"Flower's Shamir combine, whole round: {shares} s")
    u = r.get("upload", {"bits": 0, "bytes": 0, "ratio": 0.0, "b_over_32": 0.0})
    fx = fplus.get("expansion_masked_vs_float32") if fplus else None
    out.append("\n(4) upload of the masked vector\n")
    out.append(
        fmt_table(
            [[u["bits"], u["bytes"], f"{u['ratio']:.4f}x", f"{u['b_over_32']:.4f}", fx or "-"]],
            ["ring bits b", "bytes", "vs float32", "b/32", "Flower vs float32"],
        )
    )
    for key, title in (("scale", "neighbours' keys and a key-tree path only (SPEC.md D14)"),):
        if key not in r:
            continue
        sc = r[key]
        base = sc.get(100) or sc.get("100")
        rows = []
        for n, x in sc.items():
            nn = int(n)
            growth = x["client_cpu_s_total"] / base["client_cpu_s_total"]
            nlogn = nn * math.log2(nn) / (100 * math.log2(100))
            rows.append(
                [
                    nn,
                    x["k"],
                    x["t"],
                    "yes" if x["correct_sum"] else "NO",
                    f"{x['client_cpu_s_total']:.1f} s",
                    f"{x['server_s_total']:.2f} s",
                    f"{x['round_wall_s']:.1f} s",
                    f"{growth:.2f}x",
                    f"{nlogn:.2f}x",
                ]
            )
        out.append(f"\n(5) scale, d = 100,000, SecAgg+ k = 2 ceil(log2 n), 5% dropped, {title}\n")
        out.append(
            fmt_table(
                rows,
                [
                    "n",
                    "k",
                    "t",
                    "sum ok",
                    "all clients CPU",
                    "server",
                    "round wall",
                    "client growth",
                    "n log n growth",
                ],
            )
        )
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
