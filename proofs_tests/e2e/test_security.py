"""End to end, transport security: only consortium members reach the service, only as
themselves; malformed and oversized messages are refused with a clear status while the honest
members' round goes on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from proofs_tests.e2e.cluster import Cluster
from protos.secagg.v1 import secagg_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING


def _code(call: object) -> grpc.StatusCode:
    """Run a zero-argument RPC thunk that must fail; the status code it failed with."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.mark.timeout(180)
def test_foreign_or_missing_certificate_cannot_talk(tmp_path: Path) -> None:
    with Cluster(tmp_path, members=4, threshold=3) as c:
        agg = c.start_aggregator(rounds=1)
        rogue_root = c.init_consortium(tmp_path / "rogue", 4)
        # A member of another consortium that does trust our aggregator (our CA), so the only
        # thing wrong is its certificate.
        rogue = tmp_path / "rogue-with-our-ca"
        shutil.copytree(rogue_root, rogue)
        shutil.copy(c.consortium / "admin" / "ca.pem", rogue / "members" / "member-1" / "ca.pem")
        intruder = c.start_client(1, consortium=rogue, name="intruder")
        # Refused at the TLS handshake: a permanent failure, reported at once, not retried.
        assert intruder.wait(15) == 2, intruder.text()
        assert "TLS handshake" in intruder.text(), intruder.text()
        assert "Traceback" not in intruder.text() and "ssl_transport" not in intruder.text()

        ok = c.channel(1)
        assert c.health(ok) == SERVING
        request = pb.GetRoundRequest(client_id=1, after_round=-1).SerializeToString()
        # No client certificate at all.
        bare = c.channel(None)
        assert _code(lambda: c.raw(bare, "GetRound")(request, timeout=5)) in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.PERMISSION_DENIED,
        }
        assert _code(lambda: c.health(bare, timeout=5)) is grpc.StatusCode.UNAVAILABLE
        # A certificate from another CA, for the same member number.
        foreign = c.channel(1, consortium=rogue)
        assert _code(lambda: c.raw(foreign, "GetRound")(request, timeout=5)) in {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.PERMISSION_DENIED,
        }
        # A member's own consortium but with an impostor CA: the client refuses the server.
        fooled = c.channel(1, ca=(rogue_root / "admin" / "ca.pem").read_bytes())
        assert _code(lambda: c.raw(fooled, "GetRound")(request, timeout=5)) is (
            grpc.StatusCode.UNAVAILABLE
        )

        honest = c.start_clients(c.ids)
        c.assert_aggregate(0, included=c.ids)
        for p in honest.values():
            assert p.wait(30) == 0, p.text()
        assert "secagg-client: error" in intruder.text()
        assert agg.wait(30) == 0


@pytest.mark.timeout(180)
def test_impostor_garbage_and_oversized_messages_refused(tmp_path: Path) -> None:
    with Cluster(tmp_path, members=4, threshold=3) as c:
        agg = c.start_aggregator(rounds=1)
        ch = c.channel(2)  # member 2's certificate
        get_round, submit, await_ = (c.raw(ch, m) for m in ("GetRound", "Submit", "Await"))

        # Member 2's certificate cannot speak for member 3, whatever the RPC.
        req = pb.GetRoundRequest(client_id=3, after_round=-1)
        assert _code(lambda: get_round(req.SerializeToString(), timeout=5)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )
        info = pb.RoundInfo.FromString(
            get_round(pb.GetRoundRequest(client_id=2, after_round=-1).SerializeToString())
        )
        cfg = info.config
        env = pb.ClientEnvelope(round=cfg.round, session_id=cfg.session_id, sender=3)
        env.consistency.signature = bytes(64)
        assert _code(lambda: submit(env.SerializeToString(), timeout=5)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )
        wait = pb.AwaitRequest(
            round=cfg.round, session_id=cfg.session_id, client_id=3, stage=pb.ADVERTISE_KEYS
        )
        assert _code(lambda: await_(wait.SerializeToString(), timeout=5)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )

        # Bytes that are not a protobuf message of the RPC's type.
        rng = np.random.default_rng(7)
        garbage = [b"\xff" * 16, b"\x0a\xff\xff", b"\x1a\x05ab"] + [
            rng.bytes(int(rng.integers(1, 4000))) for _ in range(20)
        ]
        codes = {
            _code(lambda m=m, g=g: c.raw(ch, m)(g, timeout=5))
            for g in garbage[:3]
            for m in ("Submit", "Await", "GetRound")
        }
        assert codes == {grpc.StatusCode.INVALID_ARGUMENT}, codes
        for g in garbage[3:]:
            try:
                submit(g, timeout=5)
            except grpc.RpcError as exc:  # random bytes may decode to a (refused) message
                assert exc.code() in {
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.PERMISSION_DENIED,
                }, (exc.code(), exc.details())
            else:
                raise AssertionError("a random byte string was accepted")

        # A message above the service's size limit.
        big = pb.ClientEnvelope(round=cfg.round, session_id=cfg.session_id, sender=2)
        big.masked_input.packed = os.urandom(4 << 20)
        big.masked_input.signature = bytes(64)
        assert _code(lambda: submit(big.SerializeToString(), timeout=10)) is (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )

        assert c.health(ch) == SERVING
        assert c.health(ch, "secagg.v1.Aggregator") == SERVING
        # None of that cost member 2 its place: every member is in the round that follows.
        honest = c.start_clients(c.ids)
        summary = c.assert_aggregate(0, included=c.ids)
        assert summary["rejected"] == {}
        for p in honest.values():
            assert p.wait(30) == 0, p.text()
        assert agg.wait(30) == 0
        assert "Traceback" not in agg.text()
