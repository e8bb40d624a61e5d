"""End-to-end harness: real ``secagg-aggregator`` / ``secagg-client`` processes on 127.0.0.1.

A :class:`Cluster` owns one folder (the test's ``tmp_path``): the consortium material, the
aggregator's state and output, the clients' inputs, and one log file per process. Every process
it starts is recorded and killed (SIGKILL) when the cluster closes, whatever happened; a child
also gets ``PR_SET_PDEATHSIG`` so it dies with the test process if that is killed first (the
signal follows the thread that started it: start processes from the test's main thread).

Usage::

    with Cluster(tmp_path, members=4, threshold=3) as c:
        c.start_aggregator(rounds=1)
        c.start_clients(c.ids)
        aggregate, summary = c.wait_round(0)
        c.assert_aggregate(0)
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SERVICE = "secagg.v1.Aggregator"

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:  # last resort if a test process exits without teardown
    for p in list(_LIVE):
        if p.poll() is None:
            p.kill()


atexit.register(_kill_leftovers)


# Started as ``python -c _LAUNCHER <parent pid> <args...>``: ask the kernel to SIGKILL this
# process when the test process dies (PR_SET_PDEATHSIG survives exec), then exec the real
# command. Done in a fresh interpreter, not in a ``preexec_fn``: forking a process that holds
# gRPC channels and running Python code before exec crashes the child's gRPC poller.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(1)\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n"
)


def _argv(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *args]


def free_port() -> int:
    """A port the kernel says is free right now (bind to port 0 on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Proc:
    """One started process and its log file (stdout and stderr together)."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; its return code (fails the test on timeout)."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout} s\n--- log ---\n{self.text()[-4000:]}"
            ) from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # a zombie we cannot reap
            self.popen.wait(10)
        _LIVE.discard(self.popen)


class Cluster:
    """A consortium, one aggregator (restartable) and any number of client processes."""

    def __init__(
        self,
        root: Path,
        *,
        members: int,
        threshold: int,
        dimension: int = 1000,
        neighbors: int | None = None,
        stage_timeout: float = 4.0,
        first_round_wait: float = 60.0,
        clip: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.root = root
        self.members = members
        self.threshold = threshold
        self.dimension = dimension
        self.neighbors = neighbors
        self.stage_timeout = stage_timeout
        self.first_round_wait = first_round_wait
        self.clip = clip
        self.consortium = root / "consortium"
        self.state = root / "state"
        self.output = root / "output"
        self.logs = root / "logs"
        self.inputs_dir = root / "inputs"
        for d in (self.logs, self.inputs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.channels: list[grpc.Channel] = []
        self.aggregator: Proc | None = None
        self.port = 0
        self._starts: dict[str, int] = {}
        rng = np.random.default_rng(seed)
        # Some coordinates beyond the clip, so clipping is exercised.
        self.inputs: dict[int, npt.NDArray[np.float64]] = {
            i: rng.normal(0.0, 0.7 * clip, dimension) for i in self.ids
        }
        for i, x in self.inputs.items():
            np.save(self.input_path(i), x, allow_pickle=False)
        self.init_consortium(self.consortium, members)

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()
        if exc_type is not None:
            sys.stdout.write(self.dump_logs())  # shown by pytest with the failure

    def close(self) -> None:
        """Kill every process this cluster started (SIGKILL; idempotent); close channels."""
        for ch in self.channels:
            ch.close()
        self.channels.clear()
        for p in self.procs:
            p.kill()

    @property
    def ids(self) -> list[int]:
        return list(range(1, self.members + 1))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def input_path(self, i: int) -> Path:
        return self.inputs_dir / f"x{i}.npy"

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, args: Sequence[str]) -> Proc:
        n = self._starts.get(name, 0)
        self._starts[name] = n + 1
        log = self.logs / (f"{name}.log" if n == 0 else f"{name}.{n}.log")
        argv = _argv(args)
        with open(log, "wb") as fh:
            popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        _LIVE.add(popen)
        proc = Proc(name, popen, log, argv)
        self.procs.append(proc)
        return proc

    def run_cli(self, args: Sequence[str], timeout: float = 60.0) -> str:
        """Run a short command to completion (SIGKILLed on timeout); returns its output."""
        out = subprocess.run(
            _argv(args),
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
        text = out.stdout.decode(errors="replace") + out.stderr.decode(errors="replace")
        assert out.returncode == 0, f"{args} failed ({out.returncode}):\n{text}"
        return text

    def init_consortium(self, out: Path, members: int) -> Path:
        args = ["-m", "aggregator.cli", "init-consortium"]
        self.run_cli([*args, "--members", str(members), "--out", str(out)])
        return out

    def start_aggregator(
        self,
        *,
        rounds: int = 1,
        stage_timeout: float | None = None,
        first_round_wait: float | None = None,
        extra: Sequence[str] = (),
        wait_ready: float = 60.0,
        same_port: bool = False,
    ) -> Proc:
        """Start ``serve`` on a fresh free port (or, ``same_port``, the previous aggregator's:
        a restart) and wait until it listens."""
        assert self.aggregator is None or not self.aggregator.alive(), "already running"
        if not (same_port and self.port):
            self.port = free_port()
        args = [
            "-m",
            "aggregator.cli",
            "serve",
            "--listen",
            self.address,
            "--consortium",
            str(self.consortium),
            "--state",
            str(self.state),
            "--output",
            str(self.output),
            "--dimension",
            str(self.dimension),
            "--threshold",
            str(self.threshold),
            "--rounds",
            str(rounds),
            "--stage-timeout",
            str(self.stage_timeout if stage_timeout is None else stage_timeout),
            "--first-round-wait",
            str(self.first_round_wait if first_round_wait is None else first_round_wait),
            "--clip",
            str(self.clip),
        ]
        if self.neighbors is not None:
            args += ["--neighbors", str(self.neighbors)]
        args += list(extra)
        self.aggregator = self._spawn("aggregator", args)
        self.wait_log(self.aggregator, "listening on port", wait_ready)
        return self.aggregator

    def start_client(
        self,
        i: int,
        *,
        rounds: int = 1,
        faults: Iterable[str] = (),
        consortium: Path | None = None,
        name: str | None = None,
    ) -> Proc:
        args = [
            "-m",
            "client.cli",
            "join",
            "--aggregator",
            self.address,
            "--consortium",
            str(consortium or self.consortium),
            "--id",
            str(i),
            "--input",
            str(self.input_path(i)),
            "--rounds",
            str(rounds),
        ]
        for f in faults:
            args += ["--fault", f]
        return self._spawn(name or f"client-{i}", args)

    def start_clients(
        self,
        ids: Iterable[int],
        *,
        rounds: int = 1,
        faults: dict[int, Sequence[str]] | None = None,
    ) -> dict[int, Proc]:
        """Start the clients in parallel (Popen does not wait for them)."""
        faults = faults or {}
        return {i: self.start_client(i, rounds=rounds, faults=faults.get(i, ())) for i in ids}

    # -- waiting --------------------------------------------------------------------------

    def wait_for(
        self,
        what: str,
        pred: Callable[[], bool],
        timeout: float,
        *,
        needs_aggregator: bool = False,
    ) -> None:
        """Poll ``pred`` until true; fail (with every log) after ``timeout`` seconds, or at once
        if ``needs_aggregator`` and the aggregator has exited without making it true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            agg = self.aggregator
            if needs_aggregator and agg is not None and not agg.alive():
                time.sleep(0.2)  # its last writes are renames: let a reader catch up
                if pred():
                    return
                raise AssertionError(
                    f"the aggregator exited ({agg.popen.returncode}) before {what}\n"
                    + self.dump_logs()
                )
            time.sleep(0.05)
        if pred():
            return
        raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{self.dump_logs()}")

    def wait_log(self, proc: Proc, needle: str, timeout: float) -> None:
        def seen() -> bool:
            if needle in proc.text():
                return True
            if not proc.alive():
                raise AssertionError(
                    f"{proc.name} exited ({proc.popen.returncode}) before logging {needle!r}\n"
                    f"{proc.text()[-4000:]}"
                )
            return False

        self.wait_for(f"{needle!r} in {proc.name}'s log", seen, timeout)

    def round_files(self, r: int) -> tuple[Path, Path]:
        return self.output / f"round-{r}.npy", self.output / f"round-{r}.json"

    def wait_round(
        self, r: int, timeout: float = 90.0
    ) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
        """Wait (bounded) until round ``r`` is published; its aggregate and summary."""
        npy, js = self.round_files(r)
        # The json is written after the npy: once it exists both are complete (atomic renames).
        self.wait_for(f"round {r}'s output", js.exists, timeout, needs_aggregator=True)
        return np.load(npy, allow_pickle=False), json.loads(js.read_text())

    def wait_round_ended(self, r: int, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the database says round ``r`` is no longer open; its row."""

        def ended() -> bool:
            row = self.db_round(r)
            return row is not None and row["status"] != "open"

        self.wait_for(f"round {r} to end in the database", ended, timeout, needs_aggregator=True)
        row = self.db_round(r)
        assert row is not None
        return row

    # -- the aggregator's durable state ---------------------------------------------------

    def db_rows(self) -> list[dict[str, Any]]:
        """Every row of ``rounds`` (joined with ``aggregates``), read-only."""
        path = self.state / "aggregator.db"
        if not path.exists():
            return []
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            cur = db.execute(
                "SELECT r.round, r.status, r.reason, r.session_id, a.included_json, a.sha256, "
                "a.npy_path FROM rounds r LEFT JOIN aggregates a USING (round) ORDER BY r.round"
            )
            return [
                {
                    "round": rnd,
                    "status": status,
                    "reason": reason,
                    "session_id": bytes(session).hex(),
                    "included": json.loads(inc) if inc else None,
                    "sha256": digest,
                    "npy_path": npy,
                }
                for rnd, status, reason, session, inc, digest, npy in cur
            ]
        finally:
            db.close()

    def db_round(self, r: int) -> dict[str, Any] | None:
        return next((row for row in self.db_rows() if row["round"] == r), None)

    # -- checks ---------------------------------------------------------------------------

    def expected_sum(self, included: Iterable[int]) -> npt.NDArray[np.float64]:
        total = np.zeros(self.dimension)
        for i in included:
            total += np.clip(self.inputs[i], -self.clip, self.clip)
        return total

    def assert_aggregate(self, r: int, *, included: Iterable[int] | None = None) -> dict[str, Any]:
        """Round ``r``'s aggregate is the numpy sum of its ``included`` clipped inputs (within
        the summary's error bound); if ``included`` is given, it is exactly that set."""
        aggregate, summary = self.wait_round(r)
        got = sorted(summary["included"])
        if included is not None:
            assert got == sorted(included), f"round {r}: included {got}, want {sorted(included)}"
        assert aggregate.dtype == np.float64 and aggregate.shape == (self.dimension,)
        truth = self.expected_sum(got)
        err = float(np.max(np.abs(aggregate - truth)))
        bound = float(summary["error_bound"])
        assert err <= bound * (1 + 1e-9) + 1e-12, f"round {r}: error {err} > bound {bound}"
        assert sorted(summary["dropped"]) == sorted(set(self.ids) - set(got))
        return summary

    # -- talking to the service directly ---------------------------------------------------

    def channel(
        self,
        member: int | None,
        *,
        consortium: Path | None = None,
        ca: bytes | None = None,
        max_send: int = 64 << 20,
    ) -> grpc.Channel:
        """A TLS channel to the aggregator presenting ``member``'s certificate from
        ``consortium`` (default: ours), or no client certificate if ``member`` is None; the
        server is checked against ``ca`` (default: our CA)."""
        cons = consortium or self.consortium
        root = ca if ca is not None else (self.consortium / "admin" / "ca.pem").read_bytes()
        if member is None:
            creds = grpc.ssl_channel_credentials(root_certificates=root)
        else:
            m = cons / "members" / f"member-{member}"
            creds = grpc.ssl_channel_credentials(
                root_certificates=root,
                private_key=(m / "member.key").read_bytes(),
                certificate_chain=(m / "member.pem").read_bytes(),
            )
        ch = grpc.secure_channel(
            self.address, creds, options=[("grpc.max_send_message_length", max_send)]
        )
        self.channels.append(ch)
        return ch

    @staticmethod
    def raw(channel: grpc.Channel, method: str) -> grpc.UnaryUnaryMultiCallable:
        """``/secagg.v1.Aggregator/<method>`` taking and returning raw bytes."""
        return channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=None, response_deserializer=None
        )

    @staticmethod
    def health(channel: grpc.Channel, service: str = "", timeout: float = 10.0) -> int:
        """grpc.health.v1 Check: the serving status (``health_pb2.HealthCheckResponse``)."""
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return int(reply.status)

    def dump_logs(self, tail: int = 3000) -> str:
        parts = []
        for p in self.procs:
            rc = p.popen.poll()
            parts.append(f"--- {p.log.name} (rc={rc}) ---\n{p.text()[-tail:]}")
        return "\n".join(parts) + "\n"
