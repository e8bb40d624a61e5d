"""End to end, federated DP-LoRA over one-shot rounds: ``secagg-aggregator serve-fl --protocol
oneshot``, three committee agents and four ``secagg-client train --protocol oneshot`` processes on
127.0.0.1 over mutual TLS, started and killed by the test.

Two rounds on the tiny model. Each round's task document and global adapter travel in
``RoundInfo`` and their digests in the config every member signs. Each client trains with DP-SGD,
adds its share of the distributed noise, and uploads once. Client 4 is SIGKILLed just before its
round-1 upload. The committee releases the sum, and the aggregator decodes it, applies it to the
adapter and charges the ledger. Round 0 includes all four clients; round 1 includes the three
that are left, closed by the straggler grace once the cohort is in (the committee members,
registered but never uploading, do not hold each round to its deadline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aggregator.consortium import init_consortium
from dp.ledger import generate_signing_key, save_signing_key
from proofs_tests.e2e.test_he_grpc import _free_port, _Procs, procs  # noqa: F401 - fixture

CLIENTS = (1, 2, 3, 4)
KILLED = 4
COMMITTEE = (5, 6, 7)
JOB = {
    "model": "tiny",
    "l2_clip": 1.0,
    "noise_multiplier": 0.01,
    "mechanism": "gaussian",
    "user_budget": 1e6,
    "delta": 1e-5,
    "train": {
        "steps": 2,
        "batch_size": 8,
        "lr": 2.0,
        "clip": 1.0,
        "noise_multiplier": 0.6,
        "record_budget": 20.0,
        "block_size": 32,
        "lora": {"mode": "ffa", "r": 2, "alpha": 4, "targets": None, "public_seed": 7},
    },
}


def _clipped(update: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(update))
    return update * min(1.0, JOB["l2_clip"] / norm) if norm > 0 else update  # type: ignore[operator]


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_dp_lora_over_oneshot_rounds_with_a_dropout(
    tmp_path: Path,
    procs: _Procs,  # noqa: F811
) -> None:
    cons = init_consortium(len(CLIENTS) + len(COMMITTEE), tmp_path / "consortium")
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ["aggregator", *(f"client-{i}" for i in CLIENTS)]:
        save_signing_key(generate_signing_key(), keys / f"{name}.pem")
    (tmp_path / "job.json").write_text(json.dumps(JOB))
    addr = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "output"
    procs.start(
        "aggregator", "-m", "aggregator.cli", "serve-fl", "--protocol", "oneshot",
        "--listen", addr, "--consortium", str(cons), "--state", str(tmp_path / "state"),
        "--output", str(out), "--committee", ",".join(map(str, COMMITTEE)),
        "--committee-threshold", "2", "--min-cohort", "3", "--rounds", "2",
        "--stage-timeout", "150", "--first-round-wait", "150", "--straggler-grace", "12",
        "--committee-timeout", "10",
        "--job", str(tmp_path / "job.json"), "--run-id", "e2e-oneshot",
        "--ledger", str(tmp_path / "aggregator-ledger.db"),
        "--ledger-key", str(keys / "aggregator.pem"),
    )  # fmt: skip
    for m in COMMITTEE:
        procs.start(f"member{m}", "-m", "client.committee_agent", "run", "--aggregator", addr,
                    "--consortium", str(cons), "--id", str(m))  # fmt: skip
    for i in CLIENTS:
        fault = ["--fault", "kill:1:UPLOAD"] if i == KILLED else []
        procs.start(f"client{i}", "-m", "client.cli", "train", "--protocol", "oneshot",
                    "--aggregator", addr, "--consortium", str(cons), "--id", str(i),
                    "--model", "tiny", "--slice", str(i - 1), "--n-slices", str(len(CLIENTS)),
                    "--max-blocks", "48", "--rounds", "2",
                    "--ledger", str(tmp_path / f"client-{i}.db"),
                    "--ledger-key", str(keys / f"client-{i}.pem"),
                    "--dump-updates", str(tmp_path / f"updates-{i}"), *fault)  # fmt: skip
    for i in CLIENTS:
        if i != KILLED:
            assert procs.wait(f"client{i}", 300) == 0, procs.dump()
    assert procs.wait(f"client{KILLED}", 60) != 0
    assert procs.wait("aggregator", 120) == 0, procs.dump()

    summaries = [json.loads((out / f"round-{r}.json").read_text()) for r in (0, 1)]
    assert [s["included"] for s in summaries] == [list(CLIENTS), [1, 2, 3]]
    before = None
    for r, s in enumerate(summaries):
        # The committee members never upload: the straggler grace, not the deadline, closes.
        assert s["timings"]["round_s"] < 120, s["timings"]
        assert s["mode"] == "oneshot" and s["dp"]["num_clients"] == len(CLIENTS) + len(COMMITTEE)
        assert s["ledger_charged"] == s["included"]
        # The published sum is the included clients' own (clipped) updates plus the DP noise:
        # the difference has the noise's size (present, and no more), not an update's.
        got = np.load(s["npy"], allow_pickle=False)
        mine = np.sum(
            [
                _clipped(np.load(tmp_path / f"updates-{i}" / f"update-{r}.npy", allow_pickle=False))
                for i in s["included"]
            ],
            axis=0,
        )
        assert got.shape == mine.shape
        rms = float(np.sqrt(np.mean((got - mine) ** 2)))
        assert 0.7 * s["noise_stddev"] < rms < 1.3 * s["noise_stddev"], (rms, s["noise_stddev"])
        assert rms < 0.3 * float(np.sqrt(np.mean(mine**2))), "the sum is not the clients' sum"
        adapter = np.load(s["adapter_npy"], allow_pickle=False)
        assert np.isfinite(adapter).all()
        if before is not None:
            assert not np.array_equal(adapter, before), f"round {r} left the adapter unchanged"
        before = adapter
    log = procs.log("aggregator")
    assert "federated DP-LoRA over one-shot rounds" in log
    for i in (1, 2, 3):
        assert "2/2 one-shot uploads sent" in procs.log(f"client{i}"), procs.dump()
