"""Small cached venvs for version-range tests (under the git-ignored ``.cache/`` folder).

A venv is built once and reused while its requirement list is unchanged (a stamp file holds
it); a test that needs one and finds no package index skips, any other install failure fails.
"""

from __future__ import annotations

import os
import subprocess
import venv
from collections.abc import Sequence
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import REPO

CACHE = REPO / ".cache"


def clean_env() -> dict[str, str]:
    """The environment without this interpreter's PYTHON* settings (PYTHONPATH above all)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def pip(python: Path, *args: str, timeout: float = 240) -> None:
    """``pip install`` into a scratch venv; skip when no package index answers."""
    cmd = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env())
    if out.returncode == 0:
        return
    probe = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--dest",
            str(CACHE / "probe"),
            "six==1.16.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
    )
    if probe.returncode != 0:
        pytest.skip(f"no package index reachable: {probe.stderr.strip()[-300:]}")
    raise AssertionError(f"pip install {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")


def cached_venv(name: str, requirements: Sequence[str]) -> Path:
    """A venv at ``.cache/<name>`` holding ``requirements``; returns its python."""
    path = CACHE / name
    py = path / "bin" / "python"
    stamp = path / ".requirements"
    want = "\n".join(requirements)
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    pip(py, *requirements)
    stamp.write_text(want)
    return py
