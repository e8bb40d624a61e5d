"""Runs ``ray_cases.py`` (the Ray engine on a three-node local Ray cluster) inside a private
network namespace: ``unshare --net``, loopback up, ``RAY_USAGE_STATS_ENABLED=0``. Skipped when
Ray (the ``ray`` extra) is not installed or namespaces are not available (not root)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from proofs_tests.e2e.cluster import REPO, child_env
from proofs_tests.netns import in_netns, netns_env, require_netns


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ray_engine_on_a_local_cluster() -> None:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed (the 'ray' extra)")
    require_netns()
    env = netns_env(child_env(), SECAGG_RAY_NETNS="1")
    cases = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    run = subprocess.run(
        in_netns([*cases, "proofs_tests/e2e/ray_cases.py"]),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "5 passed" in out, out[-3000:]
