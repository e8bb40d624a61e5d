"""The utility benchmark of issue 4 (``bench/bench_utility.py``) on the tiny model, quick settings.

Six configurations (FFA-LoRA and LoRA at record-level epsilon inf, 8, 2), 8 clients, DP-SGD,
the distributed-DP encoder and the SecAgg state machines of ``secagg.simulate`` in every round.
The non-private runs must lower the held-out loss; the private ones must spend no more than
their target, and every round must include all 8 clients.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _bench_module() -> ModuleType:
    path = ROOT / "bench" / "bench_utility.py"
    spec = importlib.util.spec_from_file_location("bench_utility_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_quick_utility_benchmark_has_six_finite_rows_and_learns_without_dp(
    tmp_path: Path,
) -> None:
    out = tmp_path / "utility.json"
    bench = _bench_module()
    result: dict[str, Any] = bench.main(
        ["--model", "tiny", "--quick", "--out", str(out), "--cache", str(tmp_path / "cache")]
    )
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    rows = result["rows"]
    assert [(r["kind"], r["epsilon_target"]) for r in rows] == [
        (kind, eps) for kind in ("ffa", "lora") for eps in (math.inf, 8.0, 2.0)
    ]
    for r in rows:
        for key in ("loss_before", "loss_after", "ppl_before", "ppl_after"):
            assert math.isfinite(r[key]), (r["kind"], r["epsilon_target"], key)
        assert all(rnd["included"] == 8 for rnd in r["rounds"])
        assert r["s_per_round_per_client"] > 0
        if math.isinf(r["epsilon_target"]):
            # Non-private: no DP-SGD noise and no distributed-DP noise; the loss must fall.
            assert r["record_noise_multiplier"] == 0.0
            assert r["user_noise_multiplier"] == 0.0
            assert r["loss_after"] < r["loss_before"] - 0.05, r
            assert r["ppl_gain_relative"] == 1.0
        else:
            assert r["record_noise_multiplier"] > 0
            assert r["record_epsilon"] <= r["epsilon_target"]
            assert r["user_noise_multiplier"] > 0
            assert r["user_epsilon"] > 0
    # Every configuration starts from the same base model (B = 0), so "before" is one number.
    assert len({r["loss_before"] for r in rows}) == 1
    # Less privacy, more noise: eps = 2 needs a larger noise multiplier than eps = 8.
    for kind in ("ffa", "lora"):
        sig = {r["epsilon_target"]: r["record_noise_multiplier"] for r in rows if r["kind"] == kind}
        assert sig[2.0] > sig[8.0] > 0
