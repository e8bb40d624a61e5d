"""The README's consortium section, run as written: every shell block of "A consortium, step by
step", in order, in an empty directory, with the console scripts of pyproject.toml on PATH.
The one change is the port (a free one instead of 50051, which another test may hold)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import free_port

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A consortium, step by step", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the section has its two shell blocks"
    return blocks


def _scripts(bin_dir: Path) -> None:
    """One executable per console script, running its entry point from this checkout."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    bin_dir.mkdir()
    for name, target in scripts.items():
        module, func = target.split(":")
        path = bin_dir / name
        path.write_text(
            f"#!{sys.executable}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        path.chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)


@pytest.mark.timeout(300)
def test_the_readme_consortium_section_works_as_written(tmp_path: Path) -> None:
    _scripts(tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    port = str(free_port())
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    outputs = []
    for i, block in enumerate(_blocks()):
        script = "set -euo pipefail\n" + block.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
        out = subprocess.run(
            ["bash", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        text = out.stdout + out.stderr
        assert out.returncode == 0, f"block {i + 1} failed ({out.returncode}):\n{text}"
        assert "Traceback" not in text, text
        outputs.append(text)
    r0 = json.loads((work / "out" / "round-0.json").read_text())
    r1 = json.loads((work / "out" / "round-1.json").read_text())
    assert r0["included"] == [1, 2, 3, 4]
    assert r1["included"] == [1, 3, 4]  # member 2 revoked, member 4 with its new keys
    assert "registry v7" in outputs[1] and "revoked: 2" in outputs[1]
    assert "client 4: 1/1 rounds completed" in outputs[1]
    # The keys stayed with their owners.
    for i in (1, 2, 3, 4):
        assert (work / f"member-{i}" / "identity.key").stat().st_mode & 0o777 == 0o600
    assert not list((work / "admin").rglob("identity.key"))
