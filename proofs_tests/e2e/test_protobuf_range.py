"""The wire layer runs on both ends of the protobuf range pyproject.toml declares.

The checked-in code comes from one pinned protoc (``protos/codegen.py``); these tests run a
whole round through the wire (``wire_roundtrip.py``) on the declared floor, on the range Flower
1.42 accepts (``protobuf>=5.28,<7``: its floor and its newest), and on the runtime this venv
holds (the newest release when ``make venv`` ran). The old runtimes live in one cached venv
(``.cache/protobuf-range``, numpy + cryptography + the declared grpcio floor) whose protobuf is
swapped per case (seconds from pip's cache).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib

import google.protobuf
import pytest

from proofs_tests.e2e import wire_roundtrip
from proofs_tests.e2e.cluster import REPO
from proofs_tests.e2e.scratch_venv import cached_venv, clean_env, pip

SCRIPT = REPO / "proofs_tests" / "e2e" / "wire_roundtrip.py"
FLWR_PROTOBUF = ("5.28.0", "<7")  # flwr==1.42.0 declares protobuf>=5.28.0,<7.0.0


def _declared(name: str) -> str:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["grpc"]
    return next(r for r in extras if re.match(rf"{name}\b", r)).removeprefix(name)


def _floor(spec: str) -> str:
    m = re.search(r">=([0-9.]+)", spec)
    assert m, spec
    return m.group(1)


def _check(record: dict[str, object]) -> None:
    assert record["included"] == [1, 3, 4, 5]
    assert float(record["max_error"]) <= float(record["error_bound"])  # type: ignore[arg-type]
    assert int(record["server_messages"]) > 0 and int(record["client_messages"]) > 0  # type: ignore[call-overload]
    assert int(record["other_messages"]) >= 10  # type: ignore[call-overload]


def test_declared_range_holds_this_runtime_and_admits_flower() -> None:
    spec = _declared("protobuf")
    assert spec == ">=4.25,<8", spec
    major = int(google.protobuf.__version__.split(".")[0])
    assert 4 <= major < 8
    # The range overlaps Flower's on both of Flower's ends.
    assert _floor(spec) <= FLWR_PROTOBUF[0]


def test_wire_round_trip_on_this_runtime() -> None:
    record = wire_roundtrip.run()
    assert record["protobuf"] == google.protobuf.__version__
    _check(record)


@pytest.mark.timeout(420)
# "ceiling": the newest protobuf our own range allows (the test venv carries Flower's < 7).
@pytest.mark.parametrize("version", ["floor", *FLWR_PROTOBUF, "ceiling"])
def test_wire_round_trip_on_old_runtimes(version: str) -> None:
    py = cached_venv(
        "protobuf-range",
        ["numpy", "cryptography>=42", f"grpcio=={_floor(_declared('grpcio'))}"],
    )
    if version == "floor":
        want = _floor(_declared("protobuf"))
    elif version == "ceiling":
        want = "<" + _declared("protobuf").split("<")[1]
    else:
        want = version
    if want.startswith("<"):  # the newest below the ceiling
        pip(py, "--upgrade", f"protobuf{want}")
    else:
        pip(py, f"protobuf=={want}")
    out = subprocess.run(
        [str(py), str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd="/",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    got = str(record["protobuf"])
    if want.startswith("<"):
        assert int(got.split(".")[0]) == int(want[1:]) - 1, got
    else:
        assert got == want or got.startswith(want + "."), got
    _check(record)
    print(f"protobuf {got}: round through the wire ok", file=sys.stderr)


FLWR = "flwr==1.42.0"
IMPORT_BOTH = (
    "import flwr, google.protobuf, grpc, json;"
    "import protos.wire, protos.he_wire, protos.secagg.v1.secagg_pb2_grpc,"
    " protos.secagg.he.v1.he_pb2_grpc, protos.secagg.consortium.v1.consortium_pb2_grpc;"
    "print(json.dumps({'flwr': flwr.__version__, 'protobuf': google.protobuf.__version__,"
    " 'grpcio': grpc.__version__, 'wire': protos.wire.__file__}))"
)


@pytest.mark.timeout(540)
def test_installs_beside_flower_and_imports_both_wire_layers() -> None:
    """One environment, one resolver run: this project (grpc + he extras) with flwr==1.42.0."""
    py = cached_venv("flwr-env", [FLWR])
    pip(py, f"{REPO}[grpc,he]", FLWR, timeout=480)
    check = subprocess.run(
        [str(py), "-m", "pip", "check"], capture_output=True, text=True, env=clean_env()
    )
    assert check.returncode == 0, check.stdout + check.stderr
    out = subprocess.run(
        [str(py), "-c", IMPORT_BOTH],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        cwd="/",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["flwr"] == "1.42.0"
    assert int(record["protobuf"].split(".")[0]) < 7
    assert "site-packages" in record["wire"]  # the installed copy, not this checkout
