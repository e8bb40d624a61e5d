"""Loopback-only network namespaces for the tests that start Ray (ours or Flower's backend).

Ray binds the machine's network address and probes outside hosts; inside a fresh network
namespace with only ``lo`` up it binds 127.0.0.1 and reaches nothing. Creating one needs root
(``unshare --net``), so those tests skip where it is refused.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

import pytest

__all__ = ["in_netns", "netns_available", "netns_env", "require_netns"]

_LOOPBACK_UP = 'ip link set lo up && exec "$0" "$@"'


def netns_available() -> bool:
    """Whether this process may create a network namespace (root, with util-linux and iproute2)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


def require_netns() -> None:
    """Skip the calling test where no namespace can be made."""
    if not netns_available():
        pytest.skip("cannot create a network namespace here (unshare --net needs root)")


def in_netns(argv: Sequence[str], *, own_pids: bool = False) -> list[str]:
    """``argv`` run in a new network namespace with loopback up (and, with ``own_pids``, a new
    PID namespace, so that every process it leaves behind dies with it)."""
    pids = ["--pid", "--fork", "--mount-proc"] if own_pids else []
    return ["unshare", "--net", *pids, "sh", "-c", _LOOPBACK_UP, *argv]


def netns_env(base: dict[str, str], **extra: str) -> dict[str, str]:
    """``base`` plus Ray's usage statistics off (nothing may try to reach outside) and ``extra``."""
    return {**base, "RAY_USAGE_STATS_ENABLED": "0", **extra}
