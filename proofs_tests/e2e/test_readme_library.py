"""The README's "Your own model, your own data" section, run as written: its first Python
block in a folder holding a tiny causal LM saved with save_pretrained (my-model/) and three
generated JSON Lines files, its second as is; each exactly as the README prints it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Your own model, your own data", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 2, "the section has its two Python blocks"
    return blocks


def _run(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.timeout(300)
def test_own_model_own_jsonl_in_under_15_lines(tmp_path: Path) -> None:
    from proofs_tests.byo import save_tiny_llama, write_jsonl

    finetune_block = _blocks()[0]
    assert len(finetune_block.strip().splitlines()) < 15
    save_tiny_llama(tmp_path / "my-model")
    for i, name in enumerate(("alice", "bob", "carol")):
        write_jsonl(tmp_path / f"{name}.jsonl", 40, offset=i)
    out = _run(finetune_block, tmp_path)
    last = out.strip().splitlines()[-1]
    assert "'round': 1" in last and "'included': [1, 2, 3]" in last
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "my-adapter" / "adapter_spec.json").is_file()


def test_distributed_dp_in_simulate_as_written(tmp_path: Path) -> None:
    block = _blocks()[1]
    out = _run(block, tmp_path).split()
    want = re.search(r"# (\d+) (\d+) ([0-9.]+)\.\.\.", block)
    assert want is not None
    assert out[:2] == [want.group(1), want.group(2)]
    assert out[2].startswith(want.group(3))
