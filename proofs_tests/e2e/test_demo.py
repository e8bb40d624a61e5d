"""The main job end to end: ``python -m client.demo --quick`` (issue 9).

Real processes on 127.0.0.1: an aggregator and six DP-LoRA clients with mutual TLS, one client
killed in round 1. The run must exit 0, verify every contribution (on by default), lower the
held-out loss, keep every client within its budget with a ledger that verifies, save an adapter
that ``PeftModel.from_pretrained`` loads, and never let the aggregator write an individual
update to its disk or logs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from secagg import pack_bits

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(ROOT)
    return env


def _needles(update_dir: Path) -> list[bytes]:
    """Byte patterns of one client's own updates: the float delta and the unmasked ring vector
    (raw and bit-packed as it would travel unmasked)."""
    out = []
    for f in sorted(update_dir.glob("update-*.npy")):
        raw = np.load(f).astype(np.float32).tobytes()
        out.append(raw[:64])
    for f in sorted(update_dir.glob("ring-*.npy")):
        ring = np.load(f)
        out.append(ring.astype("<u4").tobytes()[:64])
        bits = max(1, int(ring.max()).bit_length()) if ring.size else 1
        for b in sorted({bits, 32}):
            out.append(pack_bits(ring, b)[:48])
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    wd = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "client.demo", "--quick", "--workdir", str(wd), "--dump-updates"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=840,
    )
    logs = (
        "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((wd / "logs").glob("*.log"))
        )
        if (wd / "logs").exists()
        else ""
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + logs
    rep = json.loads((wd / "report.json").read_text())

    # Three rounds completed, one client dropped from round 1 on, and the loss went down.
    rounds = rep["history"][1:]
    assert len(rounds) == 3
    assert 6 not in rounds[1]["included"] and len(rounds[1]["included"]) >= 4
    assert rounds[-1]["loss"] < rep["history"][0]["loss"]
    # Contribution verification is on by default: every round had a norm bound to prove.
    assert all(isinstance(r["norm_bound"], int) and r["norm_bound"] > 0 for r in rounds)

    # Every client's ledger verifies (secagg-audit exits 0) and it stayed within budget.
    budget = rep["record_budget"]
    for i in range(1, 7):
        ledger = wd / "clients" / str(i) / "ledger.db"
        v = subprocess.run(
            [sys.executable, "-m", "dp.audit", "verify", "--ledger", str(ledger)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert v.returncode == 0, v.stdout + v.stderr
    for e in rep["epsilon"]:
        assert e["ledger_verifies"]
        assert e["record_epsilon"] is None or e["record_epsilon"] <= budget

    # The saved adapter is a standard peft folder.
    assert rep["adapter_loads"] is True
    from peft import PeftModel

    from client import training as tr

    base, _ = tr.load_base_model("tiny")
    PeftModel.from_pretrained(base, str(wd / "adapter"))

    # The aggregator never wrote an individual update to its state, outputs or logs.
    needles = [n for i in range(1, 7) for n in _needles(wd / "clients" / str(i) / "updates")]
    assert needles, "the clients dumped no updates to compare against"
    haystack = [wd / "logs" / "aggregator.log"]
    for folder in ("aggregator-state", "aggregates"):
        haystack += [p for p in (wd / folder).rglob("*") if p.is_file()]
    haystack += list(wd.glob("aggregator-ledger.db*"))
    for path in haystack:
        blob = path.read_bytes()
        for needle in needles:
            assert needle not in blob, f"{path} contains a client's unmasked update"
