"""Runs ``ray_cases.py`` (the Ray engine on a three-node local Ray cluster) inside a private
network namespace: ``unshare --net``, loopback up, ``RAY_USAGE_STATS_ENABLED=0``. Skipped when
Ray (the ``ray`` extra) is not installed or namespaces are not available (not root)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest

from proofs_tests.e2e.cluster import REPO, child_env


def _netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_engine_on_a_local_cluster() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (the 'ray' extra)")
    if not _netns_available():
        pytest.skip("cannot create a network namespace here (unshare --net needs root)")
    env = child_env()
    env.update(RAY_USAGE_STATS_ENABLED="0", SECAGG_RAY_NETNS="1")
    script = 'ip link set lo up && exec "$0" -m pytest -q -p no:cacheprovider "$1"'
    run = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, sys.executable, "proofs_tests/e2e/ray_cases.py"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "5 passed" in out, out[-3000:]
