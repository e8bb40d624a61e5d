"""`make demo` (until the networked demo lands): one in-process secure aggregation round.

Twelve clients hold private vectors; three drop at different stages; the server learns only the
sum of the survivors, which is checked against numpy and printed with what each stage cost.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from secagg import RoundConfig, Stage, simulate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--k", type=int, default=None, help="neighbours (SecAgg+); default: all")
    args = ap.parse_args(argv)
    n, d = args.n, args.d
    degree = n - 1 if args.k is None else args.k
    t = (2 * degree) // 3 + 1
    config = RoundConfig(n=n, t=t, d=d, k=args.k, clip=1.0)
    data = np.random.default_rng(0)  # demo data only; every secret comes from the OS CSPRNG
    inputs = [data.normal(0.0, 0.3, d) for _ in range(n)]
    drops = {Stage.SHARE_KEYS: [2], Stage.MASKED_INPUT: [5], Stage.UNMASK: [7]}
    print(f"secure aggregation round: n={n} clients, d={d}, k={degree} neighbours, t={t}")
    print(f"ring Z_2^{config.ring_bits}, clip {config.clip}, scale {config.encoding.scale:.0f}")
    print("drops: client 2 during ShareKeys, 5 before its masked input, 7 before unmasking")
    result = simulate(config, inputs, drops=drops)
    for stage, members in result.stage_sets.items():
        print(f"  {stage.name:<15} {len(members):>3} clients completed")
    truth = np.sum([np.clip(inputs[u - 1], -1, 1) for u in sorted(result.included)], axis=0)
    err = float(np.max(np.abs(result.aggregate - truth)))
    print(f"included in the sum: {sorted(result.included)}")
    print(f"max |aggregate - numpy sum| = {err:.2e} (guaranteed <= {result.error_bound:.2e})")
    print(
        f"upload per client: {result.upload_bytes} bytes "
        f"({result.upload_bytes / (4 * d):.3f}x the float32 vector)"
    )
    tm = result.timings
    print(
        f"client masking {tm['client_masking_median_s'] * 1e3:.1f} ms (median), "
        f"server unmasking {tm['server_unmask_s'] * 1e3:.1f} ms, round {tm['total_s']:.2f} s"
    )
    ok = err <= result.error_bound
    print("OK: the server learned the survivors' sum and nothing else" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
