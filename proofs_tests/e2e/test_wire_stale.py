"""The committed generated code is what the pinned protoc (``make protos``) makes of the committed
.proto files today: a changed .proto without regenerated code, hand-edited code, or code made by
another protoc (whose output may refuse an older protobuf runtime) fails here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from proofs_tests.e2e.cluster import REPO
from proofs_tests.e2e.scratch_venv import cached_venv
from protos import codegen


def _strip_json_names(messages: object) -> None:
    """protoc's descriptor sets carry json_name; the gencode's embedded descriptor does not."""
    for m in messages:  # type: ignore[attr-defined]
        for f in m.field:
            f.ClearField("json_name")
        _strip_json_names(m.nested_type)


def _module(proto: str) -> str:
    return proto.removesuffix(".proto").replace("/", ".") + "_pb2"


@pytest.mark.parametrize("proto", codegen.PROTO_FILES)
def test_gencode_comes_from_the_pinned_protoc(proto: str) -> None:
    """Offline: the header names the pinned protoc and no runtime-version gate is compiled in."""
    pb2 = (REPO / proto.removesuffix(".proto")).with_name(Path(proto).stem + "_pb2.py")
    text = pb2.read_text()
    assert f"# Protobuf Python Version: {codegen.PROTOC_VERSION}\n" in text, (
        f"{pb2.name} was not made by {codegen.GRPC_TOOLS_PIN}: run `make protos`"
    )
    assert "ValidateProtobufRuntimeVersion" not in text
    grpc_py = pb2.with_name(Path(proto).stem + "_pb2_grpc.py").read_text()
    assert "GRPC_GENERATED_VERSION" not in grpc_py


@pytest.mark.parametrize("proto", codegen.PROTO_FILES)
def test_gencode_descriptor_matches_the_proto(proto: str, tmp_path: Path) -> None:
    """Offline (any grpcio-tools): the schema compiled into the module is the .proto's."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path / "set.pb"
    rc = protoc.main(["protoc", f"-I{REPO}", f"--descriptor_set_out={out}", proto])
    assert rc == 0
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    _strip_json_names(fresh.message_type)
    committed = descriptor_pb2.FileDescriptorProto.FromString(
        importlib.import_module(_module(proto)).DESCRIPTOR.serialized_pb
    )
    assert committed == fresh, f"{proto} changed since its code was generated: run `make protos`"


@pytest.mark.timeout(300)
def test_gencode_is_byte_exact_output_of_make_protos(tmp_path: Path) -> None:
    """Every checked-in file equals a fresh run of the pinned protoc (cached venv)."""
    python = cached_venv("protoc-venv", [codegen.GRPC_TOOLS_PIN])
    codegen.generate(python, tmp_path)
    stale = []
    for proto in codegen.PROTO_FILES:
        for name in codegen.generated_files(proto):
            fresh = tmp_path / name
            assert fresh.exists(), f"protoc did not write {name}"
            if fresh.read_bytes() != (REPO / name).read_bytes():
                stale.append(name)
    assert not stale, f"{', '.join(stale)} differ from `make protos` output: run `make protos`"
