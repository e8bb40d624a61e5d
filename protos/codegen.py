"""How the checked-in protobuf code is made: one pinned protoc, in a throwaway venv.

The generated ``*_pb2.py`` files are made by protoc 25.1 (``grpcio-tools==1.62.3``), whose
output runs on every protobuf runtime from 4.25 up to the newest 7.x: newer runtimes accept
older gencode, but code made by a newer protoc refuses an older runtime at import
(``VersionError``), which is what kept the wire layer from installing beside Flower
(``flwr==1.42.0`` needs ``protobuf<7``). So the gencode never comes from whatever grpcio-tools
the developer happens to have: ``make protos`` (``python -m protos.codegen``) builds the pinned
tool into ``.cache/protoc-venv`` (git-ignored) and regenerates every file in place, and
``proofs_tests/e2e/test_wire_stale.py`` fails when a checked-in file differs from that output.

Only the standard library is used here, so any Python 3.11+ can run it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import venv
from pathlib import Path

__all__ = [
    "GENERATED_SUFFIXES",
    "GRPC_TOOLS_PIN",
    "PROTOC_VERSION",
    "PROTO_FILES",
    "REPO_ROOT",
    "ensure_protoc_venv",
    "generate",
    "generated_files",
    "main",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
GRPC_TOOLS_PIN = "grpcio-tools==1.62.3"
# What the pinned protoc writes in each _pb2.py header ("Protobuf Python Version: ...").
PROTOC_VERSION = "4.25.1"
PROTO_FILES = (
    "protos/secagg/v1/secagg.proto",
    "protos/secagg/he/v1/he.proto",
    "protos/secagg/consortium/v1/consortium.proto",
    "protos/secagg/oneshot/v1/oneshot.proto",
)
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
DEFAULT_VENV = REPO_ROOT / ".cache" / "protoc-venv"


def generated_files(proto: str) -> list[str]:
    """The repository paths protoc writes for one ``.proto`` file."""
    stem = proto.removesuffix(".proto")
    return [stem + s for s in GENERATED_SUFFIXES]


def _venv_python(path: Path) -> Path:
    return path / "bin" / "python"


def ensure_protoc_venv(path: Path = DEFAULT_VENV) -> Path:
    """Create (or reuse) a venv holding exactly the pinned grpcio-tools; return its python.

    Raises ``subprocess.CalledProcessError`` when pip cannot install the pin (no package index).
    """
    py = _venv_python(path)
    stamp = path / ".requirements"
    if py.exists() and stamp.exists() and stamp.read_text() == GRPC_TOOLS_PIN:
        return py
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run(  # noqa: S603  (our own venv's python, fixed arguments)
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", GRPC_TOOLS_PIN],
        check=True,
        timeout=300,
    )
    stamp.write_text(GRPC_TOOLS_PIN)
    return py


def generate(python: Path, out_dir: Path, protos: tuple[str, ...] = PROTO_FILES) -> None:
    """Run the pinned protoc (``python`` from :func:`ensure_protoc_venv`) into ``out_dir``."""
    cmd = [
        str(python),
        "-m",
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, timeout=120, env=env)  # noqa: S603


def main(argv: list[str] | None = None) -> int:
    """``make protos``: regenerate every checked-in ``_pb2`` file with the pinned protoc."""
    ap = argparse.ArgumentParser(prog="python -m protos.codegen", description=main.__doc__)
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="where the pinned tool lives")
    args = ap.parse_args(argv)
    python = ensure_protoc_venv(args.venv)
    generate(python, REPO_ROOT)
    for proto in PROTO_FILES:
        for name in generated_files(proto):
            print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
