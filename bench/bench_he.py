"""HE variant benchmark: our BFV and CKKS rounds beside NVFlare's CKKS setting, in one run.

anchors.md ("Homomorphic aggregation"): compare ratios measured side by side in one run, never
an absolute time against another day's. Run with

    .venv/bin/python bench/bench_he.py [--d 1000000] [--n 100] [--encrypt-clients 2]
                                       [--add-clients 20] [--workers 2] [--out bench/out/he.json]

What is timed, per setting, at dimension ``d`` for a round of ``n`` clients:

* encrypt / client: encode + pack + encrypt + serialize one update (median of
  ``--encrypt-clients`` distinct clients);
* upload vs float32: the bytes one client sends (ciphertexts; for NVFlare also the key context
  it ships with every tensor) over ``4 d``;
* server add / client: what the aggregator does per upload. Ours: size checks, then parse + add
  + re-serialize in ``--workers`` sandboxed worker processes (the service path). NVFlare:
  deserialize + add in process (no sandbox). Median over ``--add-clients`` uploads (the
  encrypted updates repeated: the cost of an addition does not depend on the plaintext), then
  extrapolated to ``n`` clients (printed as such);
* decrypt: the key holder's release of the final sum (ours: sandboxed re-parse, decrypt, unpack,
  the count and range checks, flooding for CKKS); NVFlare: decrypt.

NVFlare's setting: CKKS, N = 8192, coeff [60, 40, 40], scale 2^40, one ``ckks_vector`` per
tensor, with the serialized key context (relinearisation keys, 0.66 MB) shipped per tensor;
every client holds the secret key (not modelled: it only changes who can decrypt).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tenseal as ts  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from secagg._crypto import ed25519_public
from secagg.he import (
    HeAccumulator,
    HeClient,
    HeKeyHolder,
    HeRoundConfig,
    HeRoundKeys,
    HeSumMessage,
    SafeDeserializer,
)

now = time.perf_counter


def timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    t0 = now()
    out = fn(*args)
    return now() - t0, out


def bench_ours(params: str, args: argparse.Namespace, sandbox: SafeDeserializer) -> dict[str, Any]:
    d, n = args.d, args.n
    cfg = HeRoundConfig(n=n, d=d, params=params).with_session(os.urandom(16))
    ids = {u: Ed25519PrivateKey.generate() for u in range(1, args.add_clients + 1)}
    registry = {u: ed25519_public(k) for u, k in ids.items()}
    holder = HeKeyHolder(registry, backend=sandbox)
    t_keygen, keys = timed(holder.open_round, cfg)
    rng = np.random.default_rng(0)
    enc_s, uploads = [], []
    for u in range(1, args.encrypt_clients + 1):
        x = rng.normal(0.0, 0.3, d)
        t_client, up = timed(_encrypt, cfg, keys, u, ids[u], x)
        enc_s.append(t_client)
        uploads.append(up)
    acc = HeAccumulator(cfg, keys.parameters_context, registry, backend=sandbox)
    add_s = []
    for u in range(1, args.add_clients + 1):
        # each added upload must be its own client's (tags, signatures): past the timed
        # encryptions, the remaining clients encrypt untimed
        up = uploads[u - 1] if u <= len(uploads) else _encrypt(cfg, keys, u, ids[u], x)
        t_add, _ = timed(acc.add, u, up)
        add_s.append(t_add)
    msg: HeSumMessage = acc.close()
    t_dec, rel = timed(holder.release, msg)
    assert rel.count == args.add_clients
    upload = statistics.median(up.nbytes for up in uploads)
    lay = cfg.layout
    return {
        "setting": f"ours {params}",
        "detail": f"{lay.fields_per_slot} x {lay.field_bits}-bit fields/slot, {lay.chunks} ct",
        "keygen_s": t_keygen,
        "encrypt_s": statistics.median(enc_s),
        "upload_bytes": upload,
        "upload_ratio": upload / (4 * d),
        "context_bytes_once_per_round": len(keys.public_context),
        "aggregator_context_bytes": len(keys.parameters_context),
        "server_add_s": statistics.median(add_s),
        "decrypt_s": t_dec,
    }


def _encrypt(
    cfg: HeRoundConfig, keys: HeRoundKeys, u: int, identity: Ed25519PrivateKey, x: np.ndarray
) -> Any:
    """One client's work: load the round's public context (once per round), encrypt, tag, sign."""
    return HeClient(cfg, keys.public_context, keys.tag_key, u, identity).encrypt(x)


def _nvflare_encrypt(ctx: Any, x: np.ndarray) -> bytes:
    return bytes(ts.ckks_vector(ctx, x.tolist()).serialize())


def _add(total: Any, vec: Any) -> Any:
    return vec if total is None else total + vec


def bench_nvflare(args: argparse.Namespace) -> dict[str, Any]:
    d = args.d
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40], n_threads=1)
    ctx.global_scale = 2.0**40
    # The key context NVFlare ships per tensor: the relinearisation keys (0.66 MB, anchors.md).
    key_context = ctx.serialize(
        save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=True
    )
    server = ts.context_from(key_context, n_threads=1)
    rng = np.random.default_rng(0)
    enc_s, blobs = [], []
    for _ in range(args.encrypt_clients):
        x = rng.normal(0.0, 0.3, d)
        t_client, blob = timed(_nvflare_encrypt, ctx, x)
        enc_s.append(t_client)
        blobs.append(blob)
    parse_s, add_s = [], []
    total = None
    for u in range(args.add_clients):
        t_parse, vec = timed(ts.ckks_vector_from, server, blobs[u % len(blobs)])
        t_add, total = timed(_add, total, vec)
        parse_s.append(t_parse)
        add_s.append(t_add)
    assert total is not None
    total.link_context(ctx)
    t_dec, _ = timed(total.decrypt)
    upload = len(blobs[0]) + len(key_context)
    return {
        "setting": "NVFlare CKKS 8192 [60,40,40]",
        "detail": "1 float/slot, key context per tensor",
        "keygen_s": 0.0,
        "encrypt_s": statistics.median(enc_s),
        "upload_bytes": upload,
        "upload_ratio": upload / (4 * d),
        "context_bytes_once_per_round": len(key_context),
        "aggregator_context_bytes": len(key_context),
        "server_add_s": statistics.median(parse_s) + statistics.median(add_s),
        "server_parse_s": statistics.median(parse_s),
        "decrypt_s": t_dec,
    }


def render(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    n = args.n
    how = "measured" if args.add_clients >= n else "extrapolated"
    head = (
        f"d = {args.d:,}, n = {n}; encrypt: median of {args.encrypt_clients} clients; server "
        f"add: median of {args.add_clients} uploads, x{n} ({how}); ours parse in "
        f"{args.workers} sandboxed worker(s)\n\n"
        "| setting | packing | encrypt / client | upload vs float32 | server add / client "
        f"| server, {n} clients ({how}) | decrypt | aggregator's context |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['setting']} | {r['detail']} | {r['encrypt_s']:.2f} s | {r['upload_ratio']:.2f}x "
        f"| {1e3 * r['server_add_s']:.0f} ms | {n * r['server_add_s']:.1f} s "
        f"| {r['decrypt_s']:.2f} s | {r['aggregator_context_bytes']:,} B |"
        for r in rows
    ]
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--d", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--encrypt-clients", type=int, default=2)
    ap.add_argument("--add-clients", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--params", default="bfv-4096,ckks-4096")
    ap.add_argument("--no-nvflare", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("bench/out/he.json"))
    args = ap.parse_args(argv)
    if args.add_clients < 3:
        ap.error("--add-clients must be at least 3 (the key holder's minimum cohort)")
    rows: list[dict[str, Any]] = []
    with SafeDeserializer(args.workers) as sandbox:
        sandbox.start()
        for params in args.params.split(","):
            print(f"ours {params} ...", file=sys.stderr, flush=True)
            rows.append(bench_ours(params, args, sandbox))
    if not args.no_nvflare:
        print("NVFlare's setting ...", file=sys.stderr, flush=True)
        rows.append(bench_nvflare(args))
    table = render(rows, args)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "rows": rows}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
