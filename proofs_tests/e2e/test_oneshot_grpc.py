"""End to end, one-shot mode: an aggregator, three committee members and four client processes
on 127.0.0.1 over mutual TLS, started and killed by the test.

Clients 1, 2 and 3 run ``secagg-client join --protocol oneshot``: one upload each, then they
exit (before the round ends). Client 5 is SIGKILLed just before it uploads (a dropout); member
4, played by the test, sends a truncated upload (INVALID_ARGUMENT, excluded) and a second one
(ALREADY/INVALID: never counted twice). Committee member 8 is SIGKILLed after it issued its round
key, while uploads are open: members 6 and 7 (t_c = 2 of c = 3) check, sign and release. The
published sum is the clipped sum of clients 1..3, within the round's error bound.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from aggregator.consortium import init_consortium, load_consortium
from proofs_tests.e2e.test_he_grpc import _free_port, _Procs, procs  # noqa: F401 - fixture
from protos import oneshot_wire as wire
from protos.secagg.oneshot.v1 import oneshot_pb2 as pb
from protos.secagg.oneshot.v1 import oneshot_pb2_grpc as pb_grpc
from secagg.oneshot import OneShotClient

D = 5000
HONEST = (1, 2, 3)
KILLED = 5
HOSTILE = 4
COMMITTEE = (6, 7, 8)
KILLED_MEMBER = 8


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_oneshot_round_over_grpc_with_client_and_member_dropouts(
    tmp_path: Path,
    procs: _Procs,  # noqa: F811
) -> None:
    cons = init_consortium(8, tmp_path / "consortium")
    c = load_consortium(cons)
    rng = np.random.default_rng(5)
    inputs = {i: rng.normal(0.0, 0.6, D) for i in (*HONEST, KILLED)}
    for i, x in inputs.items():
        np.save(tmp_path / f"x{i}.npy", x, allow_pickle=False)
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    out = tmp_path / "output"
    procs.start(
        "aggregator", "-m", "aggregator.cli", "serve", "--protocol", "oneshot", "--listen", addr,
        "--consortium", str(cons), "--state", str(tmp_path / "state"), "--output", str(out),
        "--dimension", str(D), "--committee", ",".join(map(str, COMMITTEE)),
        "--committee-threshold", "2", "--stage-timeout", "20", "--first-round-wait", "20",
        "--committee-timeout", "6",
    )  # fmt: skip
    for m in COMMITTEE:
        procs.start(f"member{m}", "-m", "client.committee_agent", "run", "--aggregator", addr,
                    "--consortium", str(cons), "--id", str(m))  # fmt: skip
    for i in (*HONEST, KILLED):
        fault = ["--fault", "kill:0:UPLOAD", "--fault", "kill:1:UPLOAD"] if i == KILLED else []
        procs.start(f"client{i}", "-m", "client.cli", "join", "--protocol", "oneshot",
                    "--aggregator", addr, "--consortium", str(cons), "--id", str(i),
                    "--input", str(tmp_path / f"x{i}.npy"), *fault)  # fmt: skip

    m4 = c.member(HOSTILE)
    ch = grpc.secure_channel(addr, grpc.ssl_channel_credentials(c.ca, m4.key, m4.cert))
    try:
        stub = pb_grpc.OneShotAggregatorStub(ch)  # type: ignore[no-untyped-call]
        info = stub.GetRound(
            pb.GetRoundRequest(client_id=HOSTILE, after_round=-1), timeout=60, wait_for_ready=True
        )
        cfg = wire.config_from_pb(info.config)
        keys = [wire.member_key_from_pb(k) for k in info.member_keys]
        up = OneShotClient(cfg, HOSTILE, m4.identity, c.registry).upload(np.zeros(D), keys)
        parts = list(wire.upload_parts(up))
        parts[0].masked = parts[0].masked[:-7]  # truncated
        with pytest.raises(grpc.RpcError) as e:
            stub.Upload(iter(parts), timeout=30)
        assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        # Clients leave as soon as they uploaded, long before the round ends.
        for i in HONEST:
            assert procs.wait(f"client{i}", 60) == 0, procs.dump()
        procs.procs[f"member{KILLED_MEMBER}"].kill()
        assert procs.wait(f"client{KILLED}", 5) != 0
        assert not list(out.glob("round-*.json")), "the round ended before its deadline"
        t_left = time.monotonic()
        assert procs.wait("aggregator", 120) == 0, procs.dump()
        assert time.monotonic() - t_left > 1.0
    finally:
        ch.close()
    (summary_path,) = out.glob("round-*.json")
    summary = json.loads(summary_path.read_text())
    assert summary["mode"] == "oneshot"
    assert summary["included"] == list(HONEST)
    assert str(HOSTILE) in summary["rejected"]
    assert summary["committee"] == list(COMMITTEE)
    assert KILLED_MEMBER not in summary["decryptors"] and len(summary["decryptors"]) == 2
    agg = np.load(summary_path.with_suffix(".npy"), allow_pickle=False)
    want = sum(np.clip(inputs[i], -1.0, 1.0) for i in HONEST)
    assert np.abs(agg - want).max() <= summary["error_bound"]
    assert summary["upload_vs_float32"] < 1.5 + 3 * 12 * 1024 / (4 * D)
    for m in (6, 7):
        assert procs.wait(f"member{m}", 30) == 0, procs.dump()
        assert "1 share sums released" in procs.log(f"member{m}")
