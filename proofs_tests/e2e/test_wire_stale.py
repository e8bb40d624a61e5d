"""The committed generated code is what grpcio-tools makes of the committed .proto today: a
changed secagg.proto without regenerated stubs (or hand-edited stubs) fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proofs_tests.e2e.cluster import REPO

PROTO = "protos/secagg/v1/secagg.proto"
GENERATED = ("secagg_pb2.py", "secagg_pb2.pyi", "secagg_pb2_grpc.py")


@pytest.mark.timeout(120)
def test_generated_protobuf_code_is_up_to_date(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            PROTO,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    stale = []
    for name in GENERATED:
        fresh = (tmp_path / PROTO).parent / name
        committed = REPO / Path(PROTO).parent / name
        assert fresh.exists(), f"protoc did not write {name}"
        if fresh.read_bytes() != committed.read_bytes():
            stale.append(name)
    assert not stale, (
        f"{', '.join(stale)} differ from a fresh `python -m grpc_tools.protoc` of {PROTO}: "
        "regenerate them (same command, --python_out/--pyi_out/--grpc_python_out=.)"
    )
