"""Benchmark secagg.verify norm proofs: prove / verify time per client and proof bytes.

Usage: ``python bench/bench_verify.py [d ...]`` (default 64 256 1024). Writes
``bench/out/verify.json`` and prints a markdown table beside ACORN's published figure (under
80 s client time for 250K 16-bit entries). Generator derivation (hash-to-curve, once per
process) is reported separately from proving.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from secagg import DeterministicRandom
from secagg.verify import commit, make_context, prove_norm, verify_norm
from secagg.verify.norm import _gens, _rounds


def run(d: int) -> dict[str, float | int]:
    """One honest commit/prove/verify at dimension ``d`` with 16-bit entries."""
    x = np.random.default_rng(d).integers(-(1 << 15), 1 << 15, size=d).tolist()
    bound = (1 << 64) - 1
    n2 = 1 << _rounds(d, 16, 64)
    t = time.perf_counter()
    _gens(b"G", n2), _gens(b"H", n2)
    t_gen = time.perf_counter() - t
    rng = DeterministicRandom(d)
    ctx = make_context(1, bytes(16), 0)
    t = time.perf_counter()
    c, o = commit(x, rng)
    t_commit = time.perf_counter() - t
    t = time.perf_counter()
    proof = prove_norm(x, o, bound, ctx, rng)
    t_prove = time.perf_counter() - t
    t = time.perf_counter()
    verify_norm(c, proof, bound, ctx)
    t_verify = time.perf_counter() - t
    return {
        "d": d,
        "ipa_length": n2,
        "generators_s": t_gen,
        "commit_s": t_commit,
        "prove_s": t_prove,
        "verify_s": t_verify,
        "proof_bytes": len(proof.to_bytes()),
    }


def main() -> None:
    dims = [int(a) for a in sys.argv[1:]] or [64, 256, 1024]
    rows = [run(d) for d in dims]
    print("| d | IPA length | generators (s, once) | commit (s) | prove (s) | verify (s) | bytes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['d']} | {r['ipa_length']} | {r['generators_s']:.1f} | {r['commit_s']:.3f} "
            f"| {r['prove_s']:.2f} | {r['verify_s']:.2f} | {r['proof_bytes']} |"
        )
    print("| ACORN (published) 250000 | - | - | - | < 80 (client) | - | - |")
    out = Path(__file__).parent / "out" / "verify.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "acorn_client_s_250k": 80}, indent=2))


if __name__ == "__main__":
    main()
