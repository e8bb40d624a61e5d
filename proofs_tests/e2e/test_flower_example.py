"""``examples/flower`` runs with Flower's own command, as its README says: a consortium from
``secagg-aggregator init-consortium``, then ``flwr run examples/flower --stream`` (Flower
1.42 starts its local SuperLink and simulates the federation on Ray), here with four clients
and one round, inside a private network and PID namespace (the PID namespace ends the
SuperLink ``flwr`` leaves running). Skipped without Flower or without namespaces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proofs_tests.flower_sim import REPO, flower_available
from proofs_tests.netns import in_netns, netns_env, require_netns

BIN = Path(sys.executable).parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_example_app_runs_with_flwr_run(tmp_path: Path) -> None:
    if not flower_available() or not (BIN / "flwr").exists():
        pytest.skip("Flower is not installed (the 'flower' extra)")
    require_netns()
    consortium = tmp_path / "consortium"
    subprocess.run(
        [str(BIN / "secagg-aggregator"), "init-consortium", "--members", "4", "--out", consortium],
        check=True,
        capture_output=True,
    )
    env = netns_env(
        dict(os.environ),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        FLWR_HOME=str(tmp_path / "flwr-home"),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        OMP_NUM_THREADS="1",
    )
    run_config = f'num-server-rounds=1 min-clients=4 secagg-consortium="{consortium}"'
    federation = "num-supernodes=4 client-resources-num-cpus=1 init-args-num-cpus=2"
    flwr_run = ["flwr", "run", "examples/flower", "--stream"]
    proc = subprocess.run(
        in_netns(
            [*flwr_run, "--run-config", run_config, "--federation-config", federation],
            own_pids=True,
        ),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "secure aggregation round 1: completed, 4 of 4 clients in the sum" in out, out[-6000:]
    assert out.count("DP-SGD steps") >= 1, out[-6000:]  # Ray may fold repeated worker lines
