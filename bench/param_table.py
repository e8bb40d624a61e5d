"""Print the SecAgg+ parameter table of threat_models/parameters.md (secagg/params.py).

Usage: ``.venv/bin/python bench/param_table.py`` (about 30 s; add ``--quick`` to skip n = 100,000).
"""

from __future__ import annotations

import math
import sys
import time

from secagg import ConfigError
from secagg.params import choose_parameters

COHORTS = (100, 1000, 10_000, 100_000)
RATES = ((0.0, 0.0), (0.01, 0.01), (0.05, 0.05), (0.1, 0.1), (0.2, 0.1), (0.1, 0.2), (0.3, 0.2))


def _bits(p: float) -> str:
    return "0 (exact)" if p == 0 else f"2^{math.log2(p):.1f}"


def main(argv: list[str]) -> int:
    cohorts = COHORTS[:-1] if "--quick" in argv else COHORTS
    print(
        "sigma = 40 (privacy, over 2^40 seeds a grinding server may try, SPEC.md D14), "
        "eta = 30 (failure); k = n - 1 is the complete graph\n"
    )
    print("| n | dropout | corrupt | C | k | t | c (policy) | failure <= | privacy failure <= |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in cohorts:
        for dropout, corrupt in RATES:
            start = time.perf_counter()
            try:
                p = choose_parameters(n, dropout, corrupt)
            except ConfigError:
                row = f"| {n:,} | {dropout} | {corrupt} | {math.ceil(corrupt * n)} | none |"
                print(row + " - | - | - | - |")
                continue
            k = f"{p.k} (complete)" if p.complete_graph else str(p.k)
            print(
                f"| {n:,} | {dropout} | {corrupt} | {p.corrupt} | {k} | {p.t} | {p.c} | "
                f"{_bits(p.failure_probability)} | {_bits(p.privacy_failure_probability)} |"
            )
            print(f"  {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
