"""End to end, fuzzing the running service: for a bounded time a seeded generator throws
malformed and mutated protobuf at Submit, Await and GetRound (random bytes, truncated or
bit-flipped valid envelopes, valid envelopes with wrong sizes, ids, rounds, sessions). The
aggregator must answer each with a status (never UNKNOWN/INTERNAL, never dying), keep passing
its health check, stay within a bounded memory growth, and afterwards run a real round.

The fuzzer holds member 4's certificate (so it gets past TLS and the identity check and reaches
the decoders and the state machine); member 4 is thereby excluded from round 0, which members
1..3 then complete.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from proofs_tests.e2e.cluster import Cluster, rss_bytes
from protos.secagg.v1 import secagg_pb2 as pb

FUZZ_SECONDS = 20.0
RSS_GROWTH_LIMIT = 100 << 20
FUZZER = 4
_CT_BYTES = 12 + 8 + 2 * 66 + 16  # protos/wire.py
ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # long-polls given a short deadline
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class Fuzzer:
    """Seeded generator of hostile requests for one round's config."""

    def __init__(self, seed: int, cfg: pb.RoundConfig) -> None:
        self.rng = random.Random(seed)
        self.cfg = cfg
        self.packed = math.ceil(cfg.d * cfg.bits / 8)

    # -- building blocks ------------------------------------------------------------------

    def blob(self, size: int) -> bytes:
        """``size`` bytes, usually, and sometimes a wrong size."""
        r = self.rng
        if r.random() < 0.3:
            size = r.choice([0, 1, size - 1, size + 1, 2 * size, r.randrange(0, 300)])
        return r.randbytes(max(0, size))

    def an_id(self) -> int:
        return self.rng.choice([FUZZER] * 6 + [0, 1, 2, 3, 5, self.cfg.n + 1, 2**31, 2**32 - 1])

    def envelope(self) -> pb.ClientEnvelope:
        r, cfg = self.rng, self.cfg
        env = pb.ClientEnvelope(
            round=r.choice([cfg.round] * 8 + [cfg.round + 1, 2**64 - 1]),
            session_id=r.choice([cfg.session_id] * 8 + [r.randbytes(16), b""]),
            sender=r.choice([FUZZER] * 8 + [self.an_id()]),
        )
        kind = r.randrange(6)
        count = lambda: r.choice([cfg.k] * 3 + [0, 1, cfg.k + 1, r.randrange(0, 60)])  # noqa: E731
        if kind == 0:
            env.advertise_keys.c_pk = self.blob(32)
            env.advertise_keys.s_pk = self.blob(32)
            env.advertise_keys.signature = self.blob(64)
        elif kind == 1:
            sk = env.share_keys
            sk.b_commitment = self.blob(32)
            for _ in range(count()):
                sk.share_digests.add(
                    holder=self.an_id(), s_digest=self.blob(32), b_digest=self.blob(32)
                )
            for _ in range(count()):
                sk.ciphertexts.add(holder=self.an_id(), ciphertext=self.blob(_CT_BYTES))
            sk.signature = self.blob(64)
        elif kind == 2:
            env.masked_input.packed = self.blob(self.packed)
            env.masked_input.signature = self.blob(64)
        elif kind == 3:
            env.consistency.signature = self.blob(64)
        elif kind == 4:
            for shares in (env.unmask.b_shares, env.unmask.s_shares):
                for _ in range(count()):
                    shares.add(owner=self.an_id(), y=self.blob(66))
        # kind 5: no body at all
        return env

    def mutate(self, raw: bytes) -> bytes:
        """Byte-level damage to a serialized message."""
        r = self.rng
        data = bytearray(raw)
        op = r.randrange(6)
        if op == 0 and data:  # truncate
            return bytes(data[: r.randrange(len(data))])
        if op == 1 and data:  # flip bits
            for _ in range(r.randint(1, 8)):
                data[r.randrange(len(data))] ^= 1 << r.randrange(8)
        elif op == 2:  # insert random bytes
            at = r.randint(0, len(data))
            data[at:at] = r.randbytes(r.randint(1, 16))
        elif op == 3:  # a varint that claims a huge length
            data += bytes([0x62]) + b"\xff\xff\xff\xff\x0f"
        elif op == 4:  # two messages back to back (protobuf merges them)
            data += raw
        return bytes(data)

    # -- one request ----------------------------------------------------------------------

    def request(self) -> tuple[str, bytes, float]:
        """(method, raw request, timeout)."""
        r, cfg = self.rng, self.cfg
        method = r.choices(["Submit", "Await", "GetRound"], weights=[8, 1, 1])[0]
        if method == "Submit":
            msg = self.envelope().SerializeToString()
        elif method == "Await":
            msg = pb.AwaitRequest(
                round=r.choice([cfg.round, cfg.round, cfg.round + 1, 2**64 - 1]),
                session_id=r.choice([cfg.session_id, cfg.session_id, r.randbytes(16)]),
                client_id=r.choice([FUZZER] * 4 + [self.an_id()]),
                stage=r.choice([0, 1, 2, 3, 4, 5, 6, 99, 2**31 - 1]),
            ).SerializeToString()
        else:
            msg = pb.GetRoundRequest(
                client_id=r.choice([FUZZER] * 4 + [self.an_id()]),
                after_round=r.choice([-1, -(2**63), cfg.round - 1, cfg.round, 2**63 - 1]),
            ).SerializeToString()
        shape = r.random()
        if shape < 0.15:
            msg = r.randbytes(r.randrange(0, 2000))
        elif shape < 0.5:
            msg = self.mutate(msg)
        return method, msg, 2.0 if method == "Submit" else 0.15


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fuzz_rpcs(tmp_path: Path) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    with Cluster(tmp_path, members=4, threshold=2) as c:
        agg = c.start_aggregator(rounds=1, first_round_wait=FUZZ_SECONDS + 90)
        ch = c.channel(FUZZER)
        calls: dict[str, Callable[..., bytes]] = {
            m: c.raw(ch, m) for m in ("Submit", "Await", "GetRound")
        }
        cfg = pb.RoundInfo.FromString(
            calls["GetRound"](
                pb.GetRoundRequest(client_id=FUZZER, after_round=-1).SerializeToString(),
                timeout=10,
            )
        ).config
        assert c.health(ch) == serving
        base = rss_bytes(agg.pid)
        peak = base
        fuzz = Fuzzer(2024, cfg)
        codes: Counter[str] = Counter()
        bad: list[str] = []
        sent = 0
        t_end = time.monotonic() + FUZZ_SECONDS
        next_probe = 0.0
        while time.monotonic() < t_end:
            if time.monotonic() >= next_probe:
                assert agg.alive(), f"the aggregator died after {sent} requests"
                assert c.health(ch) == serving
                peak = max(peak, rss_bytes(agg.pid))
                next_probe = time.monotonic() + 1.0
            method, raw, timeout = fuzz.request()
            sent += 1
            try:
                calls[method](raw, timeout=timeout)
                codes[f"OK ({method})"] += 1
            except grpc.RpcError as exc:
                code = exc.code()
                codes[code.name] += 1
                if code not in ALLOWED and len(bad) < 10:
                    bad.append(f"{method} {raw[:64].hex()}...: {code.name} {exc.details()}")
        assert agg.alive()
        assert c.health(ch) == serving
        assert c.health(ch, "secagg.v1.Aggregator") == serving
        peak = max(peak, rss_bytes(agg.pid))
        print(f"fuzz: {sent} requests, {dict(codes)}, RSS {base >> 20} -> {peak >> 20} MiB")
        assert not bad, "\n".join(bad)
        assert codes["OK (Submit)"] == 0, "a forged submission was accepted"
        assert sent > 100, f"only {sent} requests in {FUZZ_SECONDS} s"
        assert codes["INVALID_ARGUMENT"] > 0 and codes["PERMISSION_DENIED"] > 0, codes
        assert peak - base <= RSS_GROWTH_LIMIT, f"RSS grew {(peak - base) >> 20} MiB"

        # Make sure the fuzzer's member is out of round 0 (so the stage need not wait for it),
        # then the honest members run a real round.
        poison = pb.ClientEnvelope(round=cfg.round, session_id=cfg.session_id, sender=FUZZER)
        poison.advertise_keys.c_pk = b"\x01" * 31
        with pytest.raises(grpc.RpcError) as info:
            calls["Submit"](poison.SerializeToString(), timeout=5)
        assert info.value.code() in {
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
        }
        honest = c.start_clients([1, 2, 3])
        summary = c.assert_aggregate(0, included=[1, 2, 3])
        assert str(FUZZER) in summary["rejected"]
        for p in honest.values():
            assert p.wait(30) == 0, p.text()
        assert agg.wait(30) == 0
        assert "Traceback" not in agg.text()
