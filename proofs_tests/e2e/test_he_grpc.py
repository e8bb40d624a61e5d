"""End to end, HE mode: an aggregator, a key holder and five client processes on 127.0.0.1
over mutual TLS, started and killed by the test.

One client is SIGKILLed just before it uploads (a dropout: it costs nothing); three members
played by the test send a truncated ciphertext, one that makes the sandboxed parser segfault (the
aggregator's test-only crash marker), and a well-formed upload signed with a key that is not its
registered identity: all are refused with INVALID_ARGUMENT and the service keeps serving. The key
holder checks every contributor's signed, sealed tag against the sum it decrypts (tags travel on
the first chunk of each upload). The round publishes the sum of the four honest uploads, checked
against numpy.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator.consortium import init_consortium, load_consortium
from aggregator.he_material import issue_keyholder_cert, keyholder_material
from proofs_tests.he_helpers import signed_upload
from protos import he_wire
from protos.secagg.he.v1 import he_pb2 as pb
from protos.secagg.he.v1 import he_pb2_grpc as pb_grpc
from secagg.he import HeClient

REPO = Path(__file__).resolve().parents[2]
MARKER = b"he05-e2e-crash-marker"
D = 6000
HONEST = (1, 2, 3, 4)
KILLED = 5
TRUNCATOR, CRASHER, FORGER = 6, 7, 8

# Ask the kernel to SIGKILL the child when the test process dies, then exec the command (the
# same launcher as proofs_tests/e2e/cluster.py).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Procs:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        with open(self.logs / f"{name}.log", "wb") as fh:
            p = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *args],
                cwd=REPO,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs[name] = p
        return p

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait(self, name: str, timeout: float) -> int:
        try:
            return self.procs[name].wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running\n{self.dump()}") from None

    def dump(self) -> str:
        return "\n".join(f"--- {n} ---\n{self.log(n)[-3000:]}" for n in self.procs)

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[_Procs]:
    (tmp_path / "logs").mkdir()
    ps = _Procs(tmp_path / "logs")
    try:
        yield ps
    finally:
        ps.kill_all()


def _stub(
    cons: Path, port: int, member: int | None
) -> tuple[grpc.Channel, pb_grpc.HeAggregatorStub]:
    c = load_consortium(cons)
    if member is None:
        key, cert = keyholder_material(cons)
    else:
        m = c.member(member)
        key, cert = m.key, m.cert
    creds = grpc.ssl_channel_credentials(c.ca, key, cert)
    ch = grpc.secure_channel(f"127.0.0.1:{port}", creds)
    return ch, pb_grpc.HeAggregatorStub(ch)  # type: ignore[no-untyped-call]


def _upload(
    stub: pb_grpc.HeAggregatorStub,
    info: pb.RoundInfo,
    sender: int,
    chunks: list[bytes],
    ident: Ed25519PrivateKey | None = None,
) -> grpc.StatusCode:
    """``chunks`` as ``sender``, tagged and signed with ``ident`` (none: no tag, no signature)."""
    sealed = sig = b""
    if ident is not None:
        up = signed_upload(he_wire.config_from_pb(info.config), info.tag_key, sender, ident, chunks)
        sealed, sig = up.sealed_tag, up.signature
    msgs = [
        pb.UploadChunk(
            round=info.config.round,
            session_id=info.config.session_id,
            sender=sender,
            index=i,
            ciphertext=c,
            sealed_tag=sealed if i == 0 else b"",
            signature=sig if i == 0 else b"",
        )
        for i, c in enumerate(chunks)
    ]
    try:
        stub.Upload(iter(msgs), timeout=30)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
def test_he_round_over_grpc_with_a_dropout_and_hostile_uploads(
    tmp_path: Path, procs: _Procs
) -> None:
    cons = init_consortium(8, tmp_path / "consortium")
    members = load_consortium(cons)
    issue_keyholder_cert(cons)
    rng = np.random.default_rng(11)
    inputs = {i: rng.normal(0.0, 0.6, D) for i in (*HONEST, KILLED)}
    for i, x in inputs.items():
        np.save(tmp_path / f"x{i}.npy", x, allow_pickle=False)
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    out = tmp_path / "output"
    procs.start(
        "aggregator", "-m", "aggregator.he_service", "serve", "--listen", addr,
        "--consortium", str(cons), "--state", str(tmp_path / "state"), "--output", str(out),
        "--dimension", str(D), "--upload-timeout", "15", "--first-round-wait", "15",
        "--keyholder-timeout", "30", "--test-crash-marker", MARKER.hex(),
    )  # fmt: skip
    procs.start("keyholder", "-m", "aggregator.keyholder", "run", "--aggregator", addr,
                "--consortium", str(cons))  # fmt: skip
    for i in (*HONEST, KILLED):
        extra = ["--kill-before-upload", "0"] if i == KILLED else []
        procs.start(f"client{i}", "-m", "client.he_agent", "join", "--aggregator", addr,
                    "--consortium", str(cons), "--id", str(i), "--input",
                    str(tmp_path / f"x{i}.npy"), *extra)  # fmt: skip

    channels = []
    try:
        ch6, bad6 = _stub(cons, port, TRUNCATOR)
        ch7, bad7 = _stub(cons, port, CRASHER)
        ch8, bad8 = _stub(cons, port, FORGER)
        chk, kh = _stub(cons, port, None)
        channels = [ch6, ch7, ch8, chk]
        ident6, ident7 = members.member(TRUNCATOR).identity, members.member(CRASHER).identity
        info = bad6.GetRound(
            pb.GetRoundRequest(client_id=TRUNCATOR, after_round=-1), timeout=60, wait_for_ready=True
        )
        cfg = he_wire.config_from_pb(info.config)
        lo, _ = cfg.he_params.chunk_bounds()
        chunks = cfg.layout.chunks
        # A truncated ciphertext: refused on its size, the sender excluded from the round.
        assert (
            _upload(bad6, info, TRUNCATOR, [bytes(100)] * chunks, ident6)
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        assert (
            _upload(bad6, info, TRUNCATOR, [bytes(lo)] * chunks, ident6)
            == grpc.StatusCode.FAILED_PRECONDITION
        )
        # A ciphertext that kills the parser (SIGSEGV in the sandbox): refused, service alive.
        assert (
            _upload(bad7, info, CRASHER, [MARKER + bytes(lo)] * chunks, ident7)
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        # A genuine encryption signed by a key that is not member 8's registered identity (the
        # aggregator cannot invent contributors either: the key holder checks the same).
        pub = HeClient(
            cfg, info.public_context, info.tag_key, FORGER, Ed25519PrivateKey.generate()
        ).encrypt(np.zeros(D))
        assert (
            _upload(bad8, info, FORGER, list(pub.chunks), Ed25519PrivateKey.generate())
            == grpc.StatusCode.INVALID_ARGUMENT
        )
        # ... and an upload without tag or signature is refused on its form.
        assert _upload(bad8, info, FORGER, list(pub.chunks)) == grpc.StatusCode.INVALID_ARGUMENT
        # Identities are enforced: member 6 cannot upload as 1, a member cannot take key tasks,
        # the key holder cannot join as a member.
        assert _upload(bad6, info, 1, [bytes(lo)] * chunks) == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            bad6.NextTask(pb.TaskRequest(), timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as err:
            kh.GetRound(pb.GetRoundRequest(client_id=1, after_round=-1), timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED

        assert procs.wait("aggregator", 90) == 0, procs.dump()
        assert procs.wait("keyholder", 30) == 0, procs.dump()
        for i in HONEST:
            assert procs.wait(f"client{i}", 30) == 0, procs.dump()
            assert "1/1 HE rounds completed" in procs.log(f"client{i}")
        assert procs.wait(f"client{KILLED}", 30) == -9
    except BaseException:
        sys.stdout.write(procs.dump())
        raise
    finally:
        for ch in channels:
            ch.close()

    summary = json.loads((out / "round-0.json").read_text())
    assert summary["included"] == list(HONEST)
    assert summary["dropped"] == [KILLED, TRUNCATOR, CRASHER, FORGER]
    assert set(summary["rejected"]) == {str(TRUNCATOR), str(CRASHER), str(FORGER)}
    assert "HE-05" in summary["rejected"][str(CRASHER)]
    assert "signature" in summary["rejected"][str(FORGER)]
    assert summary["count"] == 4 and summary["mode"] == "he" and summary["params"] == "bfv-4096"
    aggregate = np.load(out / "round-0.npy", allow_pickle=False)
    truth = sum(np.clip(inputs[i], -1.0, 1.0) for i in HONEST)
    assert np.max(np.abs(aggregate - truth)) <= summary["error_bound"]
    assert "released" in procs.log("keyholder")
