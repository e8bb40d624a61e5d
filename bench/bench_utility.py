"""Utility of federated DP-LoRA (issue 4): held-out loss and perplexity before and after, at
record-level epsilon = inf, 8 and 2 (delta = 1e-5), FFA-LoRA against plain LoRA, 8 clients.

    .venv/bin/python bench/bench_utility.py [--model smollm2|tiny] [--quick]
                                            [--out bench/out/utility.json]

For every configuration (adapter kind x epsilon) the base model is loaded fresh and LoRA r=8 is
attached with the same public seed (so every client holds the same initial adapter). Then, for
``rounds`` federated rounds, each of the 8 clients

1. starts from the current global adapter and trains locally on its own non-IID slice of
   Python's standard-library docstrings (:func:`client.data.local_text_corpus`) with DP-SGD
   (:func:`client.training.train_dp`: Poisson sampling, per-example clipping, Gaussian noise from
   the OS CSPRNG). The noise multiplier is calibrated with the project's calibration
   (:func:`client.training.calibrate_noise`, PLD accountant) so that the client's record-level
   epsilon over *all* its rounds is the target. epsilon = inf: the same optimiser, steps and
   learning rate without clipping or noise (``private=False``). The Poisson batches are not
   seeded either: ``train_dp``'s test-only ``seed`` would seed the noise as well;
2. encodes its update (new - old adapter) with the distributed-DP encoder
   (:func:`dp.distributed.encode`, configured by :func:`aggregator.fl.choose_dp_config`, as the
   deployed aggregator does): user-level L2 clip, rotation, scaling, rounding, discrete Gaussian
   share;
3. sends it through the real secure-aggregation state machines (:func:`secagg.simulate`, all
   8 clients and the server, masks and keys from the OS CSPRNG). The aggregate is decoded
   (:func:`dp.distributed.decode`) and the mean applied to the global adapter.

How the distributed-DP ring vectors travel through :func:`secagg.simulate`: ``simulate`` takes
float vectors and encodes them itself (clip, scale, round). We give it the *signed integers* of
each client's ring vector as floats, with a SecAgg ring ``ceil(log2 n) + 1`` bits wider than the
DP ring and the clip chosen so that SecAgg's scale is exactly 1: its encoding is then the
identity on these integers, the state machines sum them exactly, and the secure sum reduced
mod 2^b is the DP ring sum (checked against the plain modular sum of the clients' vectors every
round). Only the width on the wire differs from a deployment (``upload_bytes_deployed`` reports
the deployed size).

Seconds per round per client = wall time of the client's ``train_dp`` call (sampling, forward
and backward, per-example clipping and noise, and its per-call accounting) + ``encode`` + the
client's share of the protocol: the sum over the five stages of ``simulate``'s median client
compute time (keys, Shamir shares, masking, consistency signature, unmasking shares). Mean over
clients and rounds; one thread (``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.fl import FlParams, choose_dp_config
from dp.accounting import account, distributed_event
from dp.accounting import epsilon as dpsgd_epsilon
from dp.distributed import DistributedDPConfig, decode, encode, round_privacy
from secagg import ClientPolicy, RoundConfig, Stage, simulate

U32 = npt.NDArray[np.uint32]
F64 = npt.NDArray[np.float64]

KINDS: tuple[str, ...] = ("ffa", "lora")
EPSILONS: tuple[float, ...] = (math.inf, 8.0, 2.0)
KIND_NAMES = {"ffa": "FFA-LoRA", "lora": "LoRA"}


@dataclass(frozen=True)
class Settings:
    """Everything a run holds fixed across its six configurations."""

    model: str
    rounds: int
    steps: int  # local DP-SGD steps per client and round
    batch_size: int  # expected (Poisson) batch
    block_size: int
    max_blocks: int  # local records per client (blocks of block_size tokens)
    held_out_blocks: int
    lr_ffa: float
    lr_lora: float
    clip: float = 1.0  # per-example L2 clip of DP-SGD
    l2_clip: float = 1.0  # user-level L2 clip of the distributed-DP encoder
    # User-level noise multiplier of the private rows (the eps = inf rows add none). The SmolLM2
    # table used 0.0065 (choose_dp_config then refused the demo's 0.005 at n = 8, t = 5; fixed
    # since), 0.01 for the tiny model.
    user_noise: float = 0.01
    n_clients: int = 8
    r: int = 8
    alpha: int = 16
    public_seed: int = 7
    delta: float = 1e-5
    accountant: str = "pld"


def settings_for(model: str, quick: bool) -> Settings:
    if quick:
        # The e2e test: the tiny model, ~20 s (RDP calibrates faster than PLD).
        return Settings(
            model="tiny",
            rounds=2,
            steps=2,
            batch_size=8,
            block_size=64,
            max_blocks=64,
            held_out_blocks=32,
            lr_ffa=4.0,
            lr_lora=2.0,
            accountant="rdp",
        )
    if model == "tiny":
        return Settings(
            model="tiny",
            rounds=3,
            steps=6,
            batch_size=16,
            block_size=64,
            max_blocks=192,
            held_out_blocks=64,
            lr_ffa=4.0,
            lr_lora=2.0,
        )
    if model == "smollm2":
        return Settings(
            model="smollm2",
            rounds=3,
            steps=2,
            batch_size=16,
            block_size=64,
            max_blocks=192,
            held_out_blocks=48,
            # Sweeps without DP (bench/RESULTS.md section 6): FFA 4 / 8 / 16 over one round;
            # LoRA 1 / 2 / 4 / 8 / 16 over one round, then 0.5 / 1 / 2 over three (2 diverges after
            # round 0, once A trains too). The best of each, kept across epsilons.
            lr_ffa=8.0,
            lr_lora=1.0,
            l2_clip=5.0,  # above every non-private update norm of the sweep at these rates
            user_noise=0.0065,
        )
    raise SystemExit(f"unknown model {model!r}")


# ------------------------------------------------------------------------------------------------
# Secure aggregation of distributed-DP ring vectors through secagg.simulate
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecureSum:
    ring_sum: U32  # in the DP ring Z_2^b
    included: frozenset[int]
    protocol_s: float  # one client's protocol compute: sum over stages of the median client
    server_s: float
    upload_bytes_simulated: int
    secagg_bits: int


def secure_sum(rings: Sequence[U32], dp_cfg: DistributedDPConfig, t: int) -> SecureSum:
    """The sum mod 2^b of ``rings`` (one per client), computed by the SecAgg state machines.

    See the module docstring: the signed integers travel as floats through a SecAgg encoding of
    scale exactly 1 on a ring wide enough that no clipping or wrap-around can occur.
    """
    n = len(rings)
    b = dp_cfg.bits
    wide = b + math.ceil(math.log2(n)) + 1
    if wide > 32:
        raise SystemExit(f"a {b}-bit DP ring leaves no room for a wider SecAgg ring")
    carrier_clip = float((((1 << (wide - 1)) - 1) // n) - 1)
    config = RoundConfig(
        n=n,
        t=t,
        d=dp_cfg.encoded_dim,
        bits=wide,
        clip=carrier_clip,
        dp_digest=hashlib.sha256(dp_cfg.canonical_bytes()).digest(),
    )
    if config.encoding.scale != 1.0:
        raise AssertionError("the carrier encoding must have scale 1")
    half, modulus = 1 << (b - 1), 1 << b
    signed = []
    for ring in rings:
        v = ring.astype(np.int64)
        v = np.where(v >= half, v - modulus, v)
        if int(np.max(np.abs(v))) > carrier_clip:
            raise AssertionError("a ring value does not fit the carrier encoding")
        signed.append(v.astype(np.float64))
    result = simulate(config, signed)  # OS CSPRNG for keys, masks and seeds
    ring_sum = (result.ring_sum.astype(np.int64) & (modulus - 1)).astype(np.uint32)
    plain = np.zeros(dp_cfg.encoded_dim, dtype=np.int64)
    for u in result.included:
        plain = (plain + rings[u - 1].astype(np.int64)) & (modulus - 1)
    if not np.array_equal(plain.astype(np.uint32), ring_sum):
        raise AssertionError("the secure sum differs from the plain modular sum")
    protocol = sum(result.timings[f"client_{s.name.lower()}_median_s"] for s in Stage)
    server = sum(v for k, v in result.timings.items() if k.startswith("server_close_"))
    return SecureSum(
        ring_sum=ring_sum,
        included=result.included,
        protocol_s=protocol,
        server_s=server,
        upload_bytes_simulated=result.upload_bytes,
        secagg_bits=wide,
    )


# ------------------------------------------------------------------------------------------------
# One configuration
# ------------------------------------------------------------------------------------------------


def _fmt_eps(eps: float) -> str:
    return "inf" if math.isinf(eps) else f"{eps:g}"


def run_config(
    s: Settings,
    kind: str,
    target_eps: float,
    data: dict[str, Any],
    cache: Path | None,
    sigma_cache: dict[float, float],
    log: Any,
) -> dict[str, Any]:
    import torch

    from client import training as tr

    torch.set_num_threads(1)
    t_cfg = time.perf_counter()
    private = math.isfinite(target_eps)
    lr = s.lr_ffa if kind == "ffa" else s.lr_lora
    n = s.n_clients
    t = ClientPolicy().min_threshold(n - 1)  # plain SecAgg, the default client policy's floor
    base, _ = tr.load_base_model(s.model, cache)
    net = tr.attach_lora(base, kind, r=s.r, alpha=s.alpha, public_seed=s.public_seed)  # type: ignore[arg-type]
    start_vec, spec = tr.adapter_to_vector(net, np.float64)
    held = data["held"]
    loss0 = tr.evaluate_loss(net, held)

    blocks: list[Any] = data["clients"]
    q = s.batch_size / int(blocks[0].shape[0])
    total_steps = s.rounds * s.steps
    sigma = 0.0
    record_eps = math.inf
    if private:
        if target_eps not in sigma_cache:
            sigma_cache[target_eps] = tr.calibrate_noise(
                target_eps, q, total_steps, s.delta, s.accountant
            )
        sigma = sigma_cache[target_eps]
        record_eps = float(dpsgd_epsilon(q, sigma, total_steps, s.delta, s.accountant))
        if record_eps > target_eps:
            raise AssertionError(f"calibration overshoots: {record_eps} > {target_eps}")
    user_noise = s.user_noise if private else 0.0
    dp_cfg = choose_dp_config(
        spec.size, n, t, FlParams(l2_clip=s.l2_clip, noise_multiplier=user_noise)
    )
    log(
        f"[{KIND_NAMES[kind]} eps={_fmt_eps(target_eps)}] d={spec.size:,} (ring {dp_cfg.bits} "
        f"bits x {dp_cfg.encoded_dim:,}), q={q:.4f}, sigma={sigma:.3f}, lr={lr:g}, "
        f"held-out loss {loss0:.4f}"
    )

    per_client_s: list[float] = []
    train_s: list[float] = []
    encode_s: list[float] = []
    protocol_s: list[float] = []
    rounds: list[dict[str, Any]] = []
    for rnd in range(s.rounds):
        global_vec, spec = tr.adapter_to_vector(net, np.float64)
        round_seed = os.urandom(32)  # the round's public rotation seed, as the aggregator's
        rings: list[U32] = []
        norms: list[float] = []
        losses: list[float] = []
        tr_s: list[float] = []
        en_s: list[float] = []
        for c in range(n):
            tr.vector_to_adapter(net, global_vec, spec)
            t0 = time.perf_counter()
            if private:
                res = tr.train_dp(
                    net,
                    blocks[c],
                    steps=s.steps,
                    batch_size=s.batch_size,
                    lr=lr,
                    clip=s.clip,
                    noise_multiplier=sigma,
                    delta=s.delta,
                    accountant="rdp",  # its per-call report only; the budget is PLD, above
                )
            else:
                res = tr.train_dp(
                    net, blocks[c], steps=s.steps, batch_size=s.batch_size, lr=lr, private=False
                )
            t1 = time.perf_counter()
            rings.append(encode(res.delta_vector.astype(np.float64), dp_cfg, round_seed))
            t2 = time.perf_counter()
            tr_s.append(t1 - t0)
            en_s.append(t2 - t1)
            norms.append(float(np.linalg.norm(res.delta_vector)))
            losses.append(res.mean_loss)
        ss = secure_sum(rings, dp_cfg, t)
        dec = decode(ss.ring_sum, dp_cfg, round_seed, len(ss.included))
        tr.vector_to_adapter(net, global_vec, spec)
        tr.apply_mean_update(net, spec, dec.mean)
        for a, e in zip(tr_s, en_s, strict=True):
            per_client_s.append(a + e + ss.protocol_s)
        train_s += tr_s
        encode_s += en_s
        protocol_s.append(ss.protocol_s)
        row = {
            "round": rnd,
            "included": len(ss.included),
            "train_loss_mean": float(np.nanmean(losses)),
            "update_l2_median": statistics.median(norms),
            "update_l2_max": max(norms),
            "clipped_by_user_l2": sum(x > s.l2_clip for x in norms),
            "mean_update_l2": float(np.linalg.norm(dec.mean)),
            "user_noise_stddev_of_sum": dec.noise_stddev,
            "train_s_mean": statistics.fmean(tr_s),
            "encode_s_mean": statistics.fmean(en_s),
            "protocol_s": ss.protocol_s,
            "server_s": ss.server_s,
        }
        rounds.append(row)
        log(
            f"  round {rnd}: {len(ss.included)}/{n} included, train loss "
            f"{row['train_loss_mean']:.3f}, |update| median {row['update_l2_median']:.3g} "
            f"({row['clipped_by_user_l2']} clipped to {s.l2_clip:g}), |mean| "
            f"{row['mean_update_l2']:.3g}, {statistics.fmean(tr_s):.1f} s train/client"
        )
    loss1 = tr.evaluate_loss(net, held)
    end_vec, _ = tr.adapter_to_vector(net, np.float64)
    if private and dp_cfg.local_noise_parameter > 0:
        user_event = distributed_event(round_privacy(dp_cfg), rounds=s.rounds)  # t survivors
        user_eps = float(account([user_event], s.delta).epsilon)
    else:
        user_eps = math.inf
    row_out = {
        "kind": kind,
        "adapter": KIND_NAMES[kind],
        "epsilon_target": target_eps,
        "record_epsilon": record_eps,
        "record_noise_multiplier": sigma,
        "sample_rate": q,
        "steps_per_round": s.steps,
        "steps_total": total_steps,
        "lr": lr,
        "adapter_params": spec.size,
        "user_l2_clip": s.l2_clip,
        "user_noise_multiplier": dp_cfg.noise_multiplier,
        "user_noise_stddev_mean": rounds[-1]["user_noise_stddev_of_sum"] / n,
        "user_epsilon": user_eps,
        "user_survivors_assumed": t,
        "dp_ring_bits": dp_cfg.bits,
        "encoded_dim": dp_cfg.encoded_dim,
        "secagg_bits_simulated": ss.secagg_bits,
        "upload_bytes_deployed": 68 + (dp_cfg.encoded_dim * dp_cfg.bits + 7) // 8,
        "upload_bytes_simulated": ss.upload_bytes_simulated,
        "loss_before": loss0,
        "loss_after": loss1,
        "ppl_before": math.exp(loss0),
        "ppl_after": math.exp(loss1),
        "ppl_gain": math.exp(loss0) - math.exp(loss1),
        "adapter_moved_l2": float(np.linalg.norm(end_vec - start_vec)),
        "s_per_round_per_client": statistics.fmean(per_client_s),
        "train_s_per_round_per_client": statistics.fmean(train_s),
        "encode_s_per_round_per_client": statistics.fmean(encode_s),
        "protocol_s_per_round_per_client": statistics.fmean(protocol_s),
        "config_wall_s": time.perf_counter() - t_cfg,
        "rounds": rounds,
    }
    log(
        f"  -> held-out loss {loss0:.4f} -> {loss1:.4f}, perplexity {math.exp(loss0):.2f} -> "
        f"{math.exp(loss1):.2f}, {row_out['s_per_round_per_client']:.1f} s/round/client, "
        f"{row_out['config_wall_s']:.0f} s"
    )
    return row_out


def _relative_gains(rows: list[dict[str, Any]]) -> None:
    """Each row's perplexity gain over the non-private gain of the same adapter kind."""
    for row in rows:
        ref = [r for r in rows if r["kind"] == row["kind"] and math.isinf(r["epsilon_target"])]
        gain = ref[0]["ppl_gain"] if ref else math.nan
        row["ppl_gain_relative"] = row["ppl_gain"] / gain if gain > 0 else math.nan


def load_data(s: Settings, cache: Path | None) -> dict[str, Any]:
    from client import training as tr

    _, tok = tr.load_base_model(s.model, cache)
    clients = []
    for i in range(s.n_clients):
        blocks = tr.tokenize_blocks(
            tr.local_text_corpus(i, s.n_clients), tok, s.block_size, max_blocks=s.max_blocks
        )
        if int(blocks.shape[0]) != s.max_blocks:
            raise SystemExit(f"client {i} has only {blocks.shape[0]} blocks: lower --max-blocks")
        clients.append(blocks)
    held = tr.tokenize_blocks(tr.held_out_corpus(), tok, s.block_size, max_blocks=s.held_out_blocks)
    return {"clients": clients, "held": held}


def markdown_table(result: dict[str, Any]) -> str:
    lines = [
        "| adapter | record-level eps (delta 1e-5) | DP-SGD noise multiplier | user-level noise "
        "multiplier / eps | held-out loss | perplexity | perplexity gain | gain vs eps=inf "
        "| s / round / client |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        eps = "inf" if math.isinf(r["record_epsilon"]) else f"{r['record_epsilon']:.2f}"
        target = _fmt_eps(r["epsilon_target"])
        sigma = (
            "- (no clip, no noise)"
            if r["record_noise_multiplier"] == 0
            else (f"{r['record_noise_multiplier']:.3f}")
        )
        ue = r["user_epsilon"]
        user = f"{r['user_noise_multiplier']:g} / " + ("inf" if math.isinf(ue) else f"{ue:.3g}")
        rel = r["ppl_gain_relative"]
        lines.append(
            f"| {r['adapter']} | {target} ({eps}) | {sigma} | {user} | "
            f"{r['loss_before']:.4f} -> {r['loss_after']:.4f} | "
            f"{r['ppl_before']:.2f} -> {r['ppl_after']:.2f} | {r['ppl_gain']:.2f} | "
            f"{'-' if math.isnan(rel) else f'{rel:.0%}'} | {r['s_per_round_per_client']:.1f} |"
        )
    return "\n".join(lines)


def _parse_eps(text: str) -> float:
    return math.inf if text.strip().lower() == "inf" else float(text)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", choices=("smollm2", "tiny"), default="smollm2")
    ap.add_argument("--quick", action="store_true", help="tiny model, fewer rounds (the test)")
    ap.add_argument("--out", type=Path, default=Path("bench/out/utility.json"))
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "secagg-dplora")
    ap.add_argument("--kinds", default=",".join(KINDS), help="ffa,lora")
    ap.add_argument("--epsilons", default="inf,8,2", help="record-level targets, e.g. inf,8,2")
    for name in ("rounds", "steps", "batch-size", "max-blocks", "held-out-blocks"):
        ap.add_argument(f"--{name}", type=int, default=None)
    for name in ("lr-ffa", "lr-lora", "l2-clip", "user-noise", "clip"):
        ap.add_argument(f"--{name}", type=float, default=None)
    a = ap.parse_args(argv)
    s = settings_for(a.model, a.quick)
    overrides = {
        k: v
        for k, v in {
            "rounds": a.rounds,
            "steps": a.steps,
            "batch_size": a.batch_size,
            "max_blocks": a.max_blocks,
            "held_out_blocks": a.held_out_blocks,
            "lr_ffa": a.lr_ffa,
            "lr_lora": a.lr_lora,
            "l2_clip": a.l2_clip,
            "user_noise": a.user_noise,
            "clip": a.clip,
        }.items()
        if v is not None
    }
    s = replace(s, **overrides)
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        raise SystemExit(f"--kinds takes a subset of {KINDS}")
    epsilons = [_parse_eps(e) for e in a.epsilons.split(",") if e.strip()]

    def log(msg: str) -> None:
        print(msg, flush=True)

    t_all = time.perf_counter()
    started = datetime.datetime.now(datetime.UTC)
    cache = a.cache.resolve() if a.cache else None
    log(f"== utility benchmark: {s.model}, {json.dumps(asdict(s))}")
    data = load_data(s, cache)
    sigma_cache: dict[float, float] = {}
    rows = [
        run_config(s, kind, eps, data, cache, sigma_cache, log)
        for kind in kinds
        for eps in epsilons
    ]
    _relative_gains(rows)
    result: dict[str, Any] = {
        "settings": asdict(s),
        "started_utc": started.isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "rows": rows,
        "total_wall_s": time.perf_counter() - t_all,
    }
    table = markdown_table(result)
    log(table)
    log(f"total wall time {result['total_wall_s']:.0f} s")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1, allow_nan=True) + "\n")
    return result


if __name__ == "__main__":
    main()
