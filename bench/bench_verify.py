"""Benchmark secagg.verify norm proofs: commit / prove / verify time per client and bytes.

Usage: ``python bench/bench_verify.py [d ...]`` (default 100000 250000). Entries are 16-bit
(uniform in [-2^15, 2^15)), the bound is the largest allowed (2^64 - 1), one process, and
the timings are wall-clock on this machine. Generator derivation (hash-to-curve, once per
process and row length) is reported separately. Writes ``bench/out/verify.json`` and prints a
markdown table beside ACORN's published figure (USENIX Security 2023: under 80 s of client
time for 250K 16-bit entries).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from secagg import SystemRandom
from secagg.verify import commit, layout, make_context, prove_norm, verify_norm
from secagg.verify.norm import _base, _gens


def run(d: int) -> dict[str, float | int]:
    """One honest commit/prove/verify at dimension ``d`` with 16-bit entries."""
    x = np.random.default_rng(d).integers(-(1 << 15), 1 << 15, size=d)
    bound = (1 << 64) - 1
    a, b = layout(d)
    t = time.perf_counter()
    _gens(b"G", b), _gens(b"H", b), [_base(tag) for tag in (b"H0", b"Ut", b"Ui")]
    t_gen = time.perf_counter() - t
    rng = SystemRandom()
    ctx = make_context(1, bytes(16), 0)
    t = time.perf_counter()
    c, o = commit(x, rng)
    t_commit = time.perf_counter() - t
    t = time.perf_counter()
    proof = prove_norm(o, bound, ctx, rng)
    t_prove = time.perf_counter() - t
    t = time.perf_counter()
    verify_norm(c, proof, bound, ctx)
    t_verify = time.perf_counter() - t
    return {
        "d": d,
        "rows": a,
        "row_length": b,
        "generators_s": t_gen,
        "commit_s": t_commit,
        "prove_s": t_prove,
        "verify_s": t_verify,
        "proof_bytes": len(proof.to_bytes()),
        "commitment_bytes": len(c.to_bytes()),
    }


def main() -> None:
    dims = [int(v) for v in sys.argv[1:]] or [100_000, 250_000]
    rows = [run(d) for d in dims]
    print(
        "| d | rows x length | generators (s, once) | commit (s) | prove (s) | verify (s) "
        "| proof bytes | commitment bytes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['d']} | {r['rows']} x {r['row_length']} | {r['generators_s']:.1f} "
            f"| {r['commit_s']:.2f} | {r['prove_s']:.2f} | {r['verify_s']:.2f} "
            f"| {r['proof_bytes']} | {r['commitment_bytes']} |"
        )
    print("| ACORN (published) 250000 | - | - | - | < 80 (client) | - | - | - |")
    out = Path(__file__).parent / "out" / "verify.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "acorn_client_s_250k": 80}, indent=2))


if __name__ == "__main__":
    main()
