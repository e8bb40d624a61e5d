"""End to end, a consortium as it is deployed (docs/consortium.md), with real processes over
mutual TLS on two loopback addresses:

* an administrator, an aggregator operator and 6 members, each with its own folder: every key is
  made by its owner, only certificate signing requests and certificates change hands;
* the aggregator's certificate names ``aggregator.consortium.test`` and ``127.0.0.2``; it
  listens on 127.0.0.1 and 127.0.0.2; half the members dial 127.0.0.2 (the IP in the
  certificate), half dial 127.0.0.1 under the DNS name (``--server-name``); a wrong name is
  refused at once;
* two rounds; then member 6 is revoked (refused in the next round) and member 5 rotates its keys
  (accepted; its old certificate is refused); then the aggregator is SIGKILLed mid-round and
  restarted: the members join the next round and every exit status says what happened.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest

from proofs_tests.e2e.cluster import _LIVE, REPO, Proc, _argv, child_env
from protos.secagg.v1 import secagg_pb2 as pb

DNS = "aggregator.consortium.test"
D = 200


def _port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.2", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no port free on both loopback addresses")


class Deployment:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir()
        self.procs: list[Proc] = []
        self.admin = root / "admin"
        self.public = self.admin / "public"
        self.agg = root / "aggregator"
        self.state = root / "state"
        self.output = root / "output"
        self.port = _port()
        rng = np.random.default_rng(15)
        self.inputs = {i: rng.normal(0.0, 0.5, D) for i in range(1, 7)}
        for i, x in self.inputs.items():
            np.save(root / f"x{i}.npy", x, allow_pickle=False)

    def member(self, i: int) -> Path:
        return self.root / f"member-{i}"

    def cli(self, *args: str, rc: int = 0) -> str:
        out = subprocess.run(
            _argv(args), cwd=REPO, env=child_env(), capture_output=True, timeout=60
        )
        text = out.stdout.decode() + out.stderr.decode()
        assert out.returncode == rc, f"{args}: rc {out.returncode}\n{text}"
        return text

    def spawn(self, name: str, args: Sequence[str]) -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as fh:
            p = subprocess.Popen(
                _argv(args), cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        _LIVE.add(p)
        proc = Proc(name, p, log, list(args))
        self.procs.append(proc)
        return proc

    def aggregator(self, name: str, rounds: int, *, stage_timeout: float = 8.0) -> Proc:
        proc = self.spawn(name, [
            "-m", "aggregator.cli", "serve", "--consortium", str(self.agg),
            "--listen", f"127.0.0.1:{self.port}", "--listen", f"127.0.0.2:{self.port}",
            "--state", str(self.state), "--output", str(self.output), "--dimension", str(D),
            "--rounds", str(rounds), "--stage-timeout", str(stage_timeout),
            "--first-round-wait", "40",
        ])  # fmt: skip
        self.wait_log(proc, "listening on port", 30)
        return proc

    def client(self, i: int, rounds: int, *, name: str | None = None, extra: Sequence[str] = (),
               via_dns: bool | None = None, member: Path | None = None) -> Proc:  # fmt: skip
        via_dns = i <= 3 if via_dns is None else via_dns
        target = ["--aggregator", f"127.0.0.1:{self.port}", "--server-name", DNS] if via_dns else [
            "--aggregator", f"127.0.0.2:{self.port}"
        ]  # fmt: skip
        return self.spawn(name or f"client-{i}", [
            "-m", "client.cli", "join", *target, "--member", str(member or self.member(i)),
            "--input", str(self.root / f"x{i}.npy"), "--rounds", str(rounds),
            "--reconnect-timeout", "60", *extra,
        ])  # fmt: skip

    def wait_log(self, proc: Proc, needle: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if needle in proc.text():
                return
            assert proc.alive(), f"{proc.name} exited before {needle!r}:\n{proc.text()}"
            time.sleep(0.05)
        raise AssertionError(f"no {needle!r} in {proc.name} after {timeout} s:\n{proc.text()}")

    def round(self, r: int, included: list[int]) -> dict[str, object]:
        summary = json.loads((self.output / f"round-{r}.json").read_text())
        assert summary["included"] == included, summary
        got = np.load(self.output / f"round-{r}.npy", allow_pickle=False)
        want = sum(np.clip(self.inputs[i], -1, 1) for i in included)
        assert np.max(np.abs(got - want)) <= summary["error_bound"] * (1 + 1e-9) + 1e-12
        return dict(summary)

    def rounds_in_db(self) -> list[tuple[int, str, str | None]]:
        import sqlite3

        db = sqlite3.connect(f"file:{self.state / 'aggregator.db'}?mode=ro", uri=True)
        try:
            return list(db.execute("SELECT round, status, reason FROM rounds ORDER BY round"))
        finally:
            db.close()

    def close(self) -> str:
        for p in self.procs:
            p.kill()
        return "\n".join(f"--- {p.name} (rc={p.popen.poll()}) ---\n{p.text()[-3000:]}"
                         for p in self.procs)  # fmt: skip


def _wait_all(procs: Sequence[Proc], timeout: float) -> list[int]:
    return [p.wait(timeout) for p in procs]


@pytest.mark.timeout(240)
def test_enrol_rounds_revoke_rotate_and_restart(tmp_path: Path) -> None:
    dep = Deployment(tmp_path)
    try:
        _scenario(dep)
    except BaseException:
        print(dep.close())
        raise
    dep.close()


def _scenario(dep: Deployment) -> None:
    admin, public, agg = str(dep.admin), str(dep.public), str(dep.agg)
    # -- enrolment: every party makes its own keys ----------------------------------------
    dep.cli("-m", "aggregator.admin", "init", "--dir", admin, "--name", "e2e consortium")
    dep.cli("-m", "aggregator.cli", "request-cert", "--dir", agg, "--dns", DNS, "--ip", "127.0.0.2")
    dep.cli("-m", "aggregator.admin", "certify-aggregator", "--dir", admin,
            "--csr", f"{agg}/aggregator.csr.pem", "--out", str(dep.root / "agg.pem"))  # fmt: skip
    for i in range(1, 7):
        m = str(dep.member(i))
        dep.cli("-m", "client.cli", "enrol", "--member", m, "--id", str(i))
        dep.cli("-m", "aggregator.admin", "enrol", "--dir", admin, "--csr",
                f"{m}/member.csr.pem", "--out", str(dep.root / f"cert-{i}.pem"))  # fmt: skip
        # Installed right away: early members hold an older registry, the aggregator relays
        # the newest and they adopt it.
        dep.cli("-m", "client.cli", "install", "--member", m, "--public", public,
                "--cert", str(dep.root / f"cert-{i}.pem"))  # fmt: skip
    dep.cli("-m", "aggregator.cli", "install", "--dir", agg, "--public", public,
            "--cert", str(dep.root / "agg.pem"))  # fmt: skip
    for i in range(1, 7):  # no member's private key ever left its folder
        for f in ("member.key", "identity.key"):
            assert (dep.member(i) / f).stat().st_mode & 0o777 == 0o600
            assert not list(dep.admin.rglob(f)) and not list(dep.agg.rglob(f))
    assert not (dep.agg / "ca.key").exists()

    # -- two rounds, members on two addresses, the certificate checked by name --------------
    a1 = dep.aggregator("aggregator-1", rounds=2)
    wrong = dep.client(1, 1, name="wrong-name", extra=["--server-name", "wrong.consortium.test"])
    # 127.0.0.1 is not in the certificate: dialled without the DNS name, it is refused.
    unlisted = dep.spawn("unlisted-ip-1", [
        "-m", "client.cli", "join", "--aggregator", f"127.0.0.1:{dep.port}",
        "--member", str(dep.member(4)), "--input", str(dep.root / "x4.npy"),
    ])  # fmt: skip
    clients = [dep.client(i, 2) for i in range(1, 7)]
    assert wrong.wait(20) == 2 and unlisted.wait(20) == 2
    for p in (wrong, unlisted):
        assert "does not name the host dialled" in p.text(), p.text()
        assert "Traceback" not in p.text()
    assert _wait_all(clients, 90) == [0] * 6, [p.text() for p in clients]
    assert a1.wait(30) == 0, a1.text()
    for r in (0, 1):
        dep.round(r, [1, 2, 3, 4, 5, 6])
    assert "registry v7 adopted" in clients[0].text()  # member 1 installed v2

    # -- revoke member 6, rotate member 5 ------------------------------------------------
    old5 = dep.root / "member-5-before-rotation"
    shutil.copytree(dep.member(5), old5)
    out = dep.cli("-m", "aggregator.admin", "revoke", "--dir", admin, "--id", "6")
    assert "registry v8" in out
    dep.cli("-m", "client.cli", "rotate", "--member", str(dep.member(5)))
    csr5 = dep.member(5) / "pending" / "member.csr.pem"
    dep.cli("-m", "aggregator.admin", "rotate", "--dir", admin, "--csr", str(csr5),
            "--out", str(dep.root / "cert-5b.pem"))  # fmt: skip
    dep.cli("-m", "client.cli", "install", "--member", str(dep.member(5)), "--public", public,
            "--cert", str(dep.root / "cert-5b.pem"))  # fmt: skip
    dep.cli("-m", "aggregator.cli", "install", "--dir", agg, "--public", public)
    shown = dep.cli("-m", "aggregator.admin", "show", "--dir", public)
    assert "registry v9" in shown and "revoked: 6" in shown

    # -- round 2 normal, round 3 interrupted by a SIGKILL, round 4 after the restart ------
    a2 = dep.aggregator("aggregator-2", rounds=2, stage_timeout=20.0)
    revoked = dep.client(6, 1, name="revoked-6")
    stale5 = dep.client(5, 1, name="old-keys-5", member=old5)
    members = [
        dep.client(i, 2, extra=["--fault", "delay:3:MASKED_INPUT:4"] if i == 1 else [])
        for i in range(1, 6)
    ]
    assert revoked.wait(30) == 2, revoked.text()
    assert "member 6 was revoked (registry v9)" in revoked.text(), revoked.text()
    assert stale5.wait(30) == 2, stale5.text()
    assert "not member 5's current certificate" in stale5.text(), stale5.text()
    # The aggregator itself refuses member 5's old certificate.
    creds = grpc.ssl_channel_credentials(
        (old5 / "ca.pem").read_bytes(),
        (old5 / "member.key").read_bytes(),
        (old5 / "member.pem").read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.2:{dep.port}", creds) as ch:
        call = ch.unary_unary("/secagg.v1.Aggregator/GetRound")
        with pytest.raises(grpc.RpcError) as err:
            call(pb.GetRoundRequest(client_id=5, after_round=99).SerializeToString(), timeout=5)
        assert err.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "not member 5's current certificate" in (err.value.details() or "")

    dep.wait_log(a2, "round 2 published", 60)
    dep.round(2, [1, 2, 3, 4, 5])
    dep.wait_log(a2, "round 3 SHARE_KEYS", 60)  # mid-round: member 1 holds back its input
    a2.popen.send_signal(signal.SIGKILL)
    assert a2.wait(10) == -signal.SIGKILL
    a3 = dep.aggregator("aggregator-3", rounds=1)
    dep.wait_log(a3, "round 3 was interrupted by a restart", 10)
    assert _wait_all(members, 90) == [0] * 5, [p.text() for p in members]
    assert a3.wait(30) == 0, a3.text()
    dep.round(4, [1, 2, 3, 4, 5])
    for i, p in enumerate(members, 1):
        assert f"client {i}: 2/2 rounds completed" in p.text(), p.text()
        assert "round 3 lost" in p.text() or "round 3 ended" in p.text(), p.text()
        assert "Traceback" not in p.text()
    assert [(r, s) for r, s, _ in dep.rounds_in_db()] == [
        (0, "completed"),
        (1, "completed"),
        (2, "completed"),
        (3, "aborted"),
        (4, "completed"),
    ]
    assert "registry v9" in a2.text()
