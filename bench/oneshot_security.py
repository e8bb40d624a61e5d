"""Lattice security estimate of the one-shot parameters (secagg/SPEC.md O3).

    .venv/bin/python bench/oneshot_security.py

The primal uSVP attack under the "2016 estimate" (Alkim, Ducas, Poeppelmann, Schwabe,
USENIX Security 2016), with the Bai-Galbraith embedding scaled for a ternary secret: the attack
succeeds with BKZ block size beta once

    sigma_e * sqrt(beta) <= delta(beta)^(2 beta - dim - 1) * vol^(1 / dim),
    dim = m + N + 1,  vol = q^m * (sigma_e / sigma_s)^N,

minimised over the number of samples m. Cost: core-SVP 2^(0.292 beta) classical,
2^(0.265 beta) quantum (sieving, one SVP call; a lower bound on any BKZ cost model), and the
BKZ cost model the HE Standard's tables used, 2^(0.292 beta + 16.4 + log2(8 dim)). This is a
cross-check of the Homomorphic Encryption Standard's table (which ran the full lattice
estimator, primal, dual and hybrid), not a substitute: the table is what the parameters obey.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from secagg.oneshot import HE_STANDARD_128, RING_DIM, OneShotConfig
from secagg.oneshot.ring import CBD_ETA


def delta(beta: int) -> float:
    return ((math.pi * beta) ** (1 / beta) * beta / (2 * math.pi * math.e)) ** (
        1 / (2 * (beta - 1))
    )


def primal_beta(n: int, log2_q: float, sigma_e: float, sigma_s: float) -> tuple[int, int]:
    """Smallest block size (and its m) for which the primal uSVP attack succeeds."""
    scale = math.log2(sigma_e / sigma_s)
    for beta in range(40, 3 * n):
        lhs = math.log2(sigma_e) + 0.5 * math.log2(beta)
        ld = math.log2(delta(beta))
        for m in range(n // 8, 3 * n, 16):
            dim = m + n + 1
            rhs = (2 * beta - dim - 1) * ld + (m * log2_q + n * scale) / dim
            if lhs <= rhs:
                return beta, m
    raise ValueError("no block size found")


def main() -> int:
    sigma_e = math.sqrt(CBD_ETA / 2)
    sigma_s = math.sqrt(2 / 3)
    rows = [("HE Standard bound", RING_DIM, float(HE_STANDARD_128[RING_DIM]))]
    for n in (100, 1000, 10_000, 100_000):
        cfg = OneShotConfig(n=n, d=1, committee=(1, 2, 3), threshold=2)
        rows.append((f"one-shot, n = {n}", RING_DIM, cfg.ring.log_q))
    print(
        "| parameters | N | log2 q | beta | m | core-SVP classical | core-SVP quantum "
        "| BKZ-sieve (HE Standard model) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, n, lq in rows:
        beta, m = primal_beta(n, lq, sigma_e, sigma_s)
        bkz = 0.292 * beta + 16.4 + math.log2(8 * (m + n + 1))
        print(
            f"| {name} | {n} | {lq:.1f} | {beta} | {m} | 2^{0.292 * beta:.0f} "
            f"| 2^{0.265 * beta:.0f} | 2^{bkz:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
