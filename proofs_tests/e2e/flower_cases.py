"""Two 100-client rounds of our secure aggregation inside Flower's simulation engine on the
Ray backend (two workers), with clients dropping out at every stage: round 1 FedAvg (exact),
round 2 DP-FedAvg under distributed DP (the noisy sum within its noise of the plain one),
round 3 FedAvg with contribution verification (``norm_bound``: every client proves its norm
and its upload's consistency in the CHECK stage over Flower's messages; exact again).

Not collected on its own: ``test_flower_ray.py`` runs it as ``python -m`` inside a private
network namespace and checks the JSON line it prints (``RESULT {...}``).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from proofs_tests.flower_sim import (
    LEVEL_BITS,
    MAX_WEIGHT,
    build_apps,
    client_model,
    exact_clip,
    expected_sum,
    simulate,
    worker_trace,
)

STAGES = ("ADVERTISE_KEYS", "SHARE_KEYS", "MASKED_INPUT", "CONSISTENCY", "UNMASK")
NORM_BOUND = (1 << 64) - 1  # the largest bound: every honest encoded update is under it


def _verified(workflow: object, weighted: np.ndarray, total: float) -> dict[str, object]:
    """What round 3 (contribution verification on) did."""
    rnd = workflow.rounds[-1]  # type: ignore[attr-defined]
    return {
        "completed": rnd.completed,
        "reason": rnd.reason,
        "norm_bound": None if rnd.config is None else rnd.config.norm_bound,
        "included": list(rnd.included),
        "answered": rnd.answered,
        "refusals": {str(k): v for k, v in rnd.refusals.items()},
        "weighted_equal": rnd.weighted_sum is not None
        and bool(np.array_equal(rnd.weighted_sum, weighted)),
        "weight_total_equal": rnd.weight_total == total,
    }


def want_included_of(n: int, plan: dict[int, str]) -> list[int]:
    """Members that uploaded: all but those dropped before their masked input."""
    early = {p + 1 for p, s in plan.items() if s not in ("CONSISTENCY", "UNMASK")}
    return sorted(set(range(1, n + 1)) - early)


def main(n: int = 100, per_stage: int = 4) -> None:
    if os.environ.get("SECAGG_FLOWER_NETNS") != "1":
        sys.exit("run through test_flower_ray.py (a private network namespace)")
    from aggregator.consortium import init_consortium
    from aggregator.flower import SecAggWorkflow
    from dp import DistributedDP

    tmp = Path(tempfile.mkdtemp(prefix="secagg-flower-"))
    bundle = init_consortium(n, tmp / "consortium")
    # partition p is member p + 1; per_stage members drop at each stage, spread over the ring
    plan = {}
    for i, stage in enumerate(STAGES):
        for j in range(per_stage):
            plan[(7 * (i * per_stage + j)) % n] = stage
    workflow = SecAggWorkflow(
        bundle,
        num_shares=60,
        reconstruction_threshold=41,
        expected_dropout=0.25,
        max_weight=MAX_WEIGHT,
        clipping_range=exact_clip(n),
        level_bits=LEVEL_BITS,
        timeout=120,
    )
    dp_workflow = SecAggWorkflow(
        bundle, 60, 41, dp=DistributedDP(l2_clip=0.05, noise_multiplier=1.0), timeout=120
    )
    verified_workflow = SecAggWorkflow(
        bundle,
        num_shares=60,
        reconstruction_threshold=41,
        max_weight=MAX_WEIGHT,
        clipping_range=exact_clip(n),
        level_bits=LEVEL_BITS,
        norm_bound=NORM_BOUND,
        timeout=120,
    )
    start: dict[int, np.ndarray] = {}

    def by_round(grid: object, context: object) -> None:
        rnd = int(context.state.config_records["config"]["current_round"])  # type: ignore[attr-defined]
        records = context.state.array_records["parameters"]  # type: ignore[attr-defined]
        start[rnd] = np.concatenate([a.numpy().ravel() for a in records.values()])
        (workflow, dp_workflow, verified_workflow)[rnd - 1](grid, context)  # type: ignore[arg-type]

    server_app, client_app, out = build_apps(bundle, n, plan, tmp / "trace", by_round, rounds=3)
    t0 = time.perf_counter()
    simulate(server_app, client_app, n, workers=2)
    wall = time.perf_counter() - t0
    rnd = workflow.rounds[-1]
    dp_rnd = dp_workflow.rounds[-1]
    g = start[2].astype(np.float64)
    deltas = [
        np.concatenate([a.astype(np.float64).ravel() for a in client_model(u)]) - g
        for u in want_included_of(n, plan)
    ]
    plain = np.sum(deltas, axis=0)
    uploaded_drop = {p + 1 for p, s in plan.items() if s in ("CONSISTENCY", "UNMASK")}
    want_included = want_included_of(n, plan)
    weighted, total = expected_sum(want_included)
    traces = worker_trace(tmp / "trace")
    result = {
        "completed": rnd.completed,
        "reason": rnd.reason,
        "k": rnd.config.degree if rnd.config else None,
        "t": rnd.config.t if rnd.config else None,
        "included": list(rnd.included),
        "want_included": want_included,
        "uploaded_then_dropped": sorted(uploaded_drop),
        "answered": rnd.answered,
        "weighted_equal": rnd.weighted_sum is not None
        and bool(np.array_equal(rnd.weighted_sum, weighted)),
        "weight_total": rnd.weight_total,
        "want_weight_total": total,
        "mean_equal": rnd.mean is not None and bool(np.array_equal(rnd.mean, weighted / total)),
        "global_close": bool(np.allclose(start[2], weighted / total, atol=1e-6)),
        "workers": sorted({p for pids in traces.values() for p in pids}),
        "moved": sum(1 for pids in traces.values() if len(pids) > 1),
        "dp_completed": dp_rnd.completed,
        "dp_reason": dp_rnd.reason,
        "dp_included": list(dp_rnd.included),
        "dp_max_delta_norm": float(max(np.linalg.norm(x) for x in deltas)),
        "dp_noise_stddev": dp_rnd.dp_noise_stddev,
        "dp_max_error": None
        if dp_rnd.weighted_sum is None
        else float(np.max(np.abs(dp_rnd.weighted_sum - plain))),
        "dp_global_close": dp_rnd.mean is not None
        and bool(np.allclose(start[3], dp_rnd.mean, atol=1e-6)),  # round 3 started from it
        "dp_exact": dp_rnd.weighted_sum is not None
        and bool(np.array_equal(dp_rnd.weighted_sum, plain)),
        "verified": _verified(verified_workflow, weighted, total),
        "verified_global_close": bool(
            np.allclose(
                np.concatenate([a.ravel() for a in out["params"]]), weighted / total, atol=1e-6
            )
        ),
        "seconds": rnd.seconds,
        "wall": wall,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
