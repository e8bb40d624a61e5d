"""The one-shot variant's switches and wire conversions: one setting selects it, verification
is refused with a clear error (SPEC.md O9), and the wire refuses malformed parts."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aggregator.cli import main as aggregator_main
from aggregator.oneshot_service import choose_committee
from client.cli import main as client_main
from proofs_tests.oneshot_helpers import grid_input, make_round
from protos import oneshot_wire as wire
from secagg.he import simulate_round
from secagg.oneshot import OneShotConfig, OneShotSimulationResult


def test_verification_is_refused_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = aggregator_main(["serve", "--protocol", "oneshot", "--norm-bound", "9", "--dimension", "8",
                          "--consortium", str(tmp_path), "--state", str(tmp_path / "s"),
                          "--output", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2 and "not available with --protocol oneshot" in capsys.readouterr().err
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(8))
    rc = client_main(["join", "--protocol", "oneshot", "--require-verification", "--consortium",
                      str(tmp_path), "--id", "1", "--input", str(x)])  # fmt: skip
    assert rc == 2 and "without norm proofs" in capsys.readouterr().err


def test_one_setting_selects_the_protocol() -> None:
    cfg = OneShotConfig(n=4, d=50, committee=(1, 2, 3), threshold=2)
    inputs = [grid_input(cfg, u) for u in range(1, 5)]
    res = simulate_round(cfg, inputs, {"upload": [4]}, seed=2)
    assert isinstance(res, OneShotSimulationResult) and res.included == frozenset({1, 2, 3})


def test_committee_choice_is_per_session_and_within_candidates() -> None:
    a = choose_committee(range(1, 20), bytes(16), 5)
    b = choose_committee(range(1, 20), bytes([1]) * 16, 5)
    assert len(a) == 5 and set(a) <= set(range(1, 20)) and a != b and a == tuple(sorted(a))


def test_wire_round_trips_and_refuses_malformed_parts() -> None:
    r = make_round(n=5, d=5000)
    cfg = r.cfg
    assert wire.config_from_pb(wire.config_to_pb(cfg)).digest == cfg.digest
    bad = wire.config_to_pb(cfg)
    bad.threshold = 1  # t_c <= c/2
    with pytest.raises(wire.WireError):
        wire.config_from_pb(bad)
    bad = wire.config_to_pb(cfg)
    bad.n = cfg.n + 1  # digest no longer matches
    with pytest.raises(wire.WireError):
        wire.config_from_pb(bad)
    up = r.upload(1)
    parts = list(wire.upload_parts(up))
    asm = wire.UploadAssembler(cfg)
    for p in parts:
        asm.add(p)
    assert asm.upload() == up
    for mutate in ("order", "mixed", "extra", "header", "shares"):
        ps = list(wire.upload_parts(up))
        ps.append(
            type(ps[0])(
                round=up.round,
                session_id=up.session_id,
                sender=up.client_id,
                index=len(ps),
                masked=b"x",
            )
        )
        asm = wire.UploadAssembler(cfg)
        if mutate == "order":
            ps[0].index = 1
        elif mutate == "mixed":
            ps[-1].sender = 2
        elif mutate == "header":
            ps[-1].signature = bytes(64)
        elif mutate == "shares":
            del ps[0].shares[-1]
        with pytest.raises(wire.WireError):
            for p in ps:
                asm.add(p)
            asm.upload()
    key = wire.member_key_to_pb(r.keys[0])
    key.public_key = key.public_key[:31]
    with pytest.raises(wire.WireError):
        wire.member_key_from_pb(key)


def test_distributed_dp_noise_shares_compose_with_one_shot_uploads() -> None:
    """SPEC.md O9: each client adds its distributed-DP noise share (calibrated to the cohort
    floor, min_survivors = min_cohort) before its one upload; the one-shot sum, reduced mod
    2^b, is exactly the DP ring sum, and the DP decoder accepts it for the included count."""
    from dp.distributed import DistributedDPConfig, decode, encode
    from proofs_tests.oneshot_helpers import POLICY
    from secagg import DeterministicRandom
    from secagg.oneshot import CommitteeMember, OneShotAggregator, OneShotClient, plaintext_bits_for

    n, dim = 6, 40
    dp_cfg = DistributedDPConfig.calibrated(
        l2_clip=1.0, dim=dim, num_clients=n, min_survivors=3, noise_multiplier=0.5, bits=16,
        allow_seeded_rng=True,
    )  # fmt: skip
    base = make_round(n=n, d=dp_cfg.encoded_dim)
    cfg = OneShotConfig(
        n=n, d=dp_cfg.encoded_dim, committee=(1, 2, 3), threshold=2, min_cohort=3,
        bits=plaintext_bits_for(n, dp_cfg.bits),
    ).with_session(bytes(range(16)))  # fmt: skip
    members = {m: CommitteeMember(m, base.ids[m], base.registry, rng=DeterministicRandom(m),
                                  allow_deterministic_rng=True) for m in (1, 2, 3)}  # fmt: skip
    keys = [members[m].open_round(cfg) for m in (1, 2, 3)]
    agg = OneShotAggregator(cfg, base.registry, keys)
    seed = bytes(16)
    rng = np.random.default_rng(0)
    xs = {u: rng.normal(0, 0.1, dim) for u in range(1, n + 1)}
    ring_sum = np.zeros(dp_cfg.encoded_dim, dtype=np.int64)
    for u in (1, 2, 4, 5):  # 3 and 6 drop
        r = encode(xs[u], dp_cfg, seed, DeterministicRandom(100 + u)).astype(np.int64)
        ring_sum = (ring_sum + r) % dp_cfg.modulus
        centred = np.where(r >= dp_cfg.modulus // 2, r - dp_cfg.modulus, r)
        c = OneShotClient(cfg, u, base.ids[u], base.registry, policy=POLICY,
                          rng=DeterministicRandom(u), allow_deterministic_rng=True)  # fmt: skip
        agg.add(c.upload_ints(centred, keys))
    inc = agg.close()
    for m in (1, 2, 3):
        members[m].check(agg.check_request(m))
        agg.add_signature(members[m].sign(cfg.session_id, cfg.round, inc))  # type: ignore[arg-type]
    req = agg.release_request()
    for m in (1, 2):
        agg.add_share_sum(members[m].release(req))
    res = agg.finish()
    assert np.array_equal(np.mod(res.int_sum, dp_cfg.modulus), ring_sum)
    out = decode(np.mod(res.int_sum, dp_cfg.modulus).astype(np.uint32), dp_cfg, seed, len(inc))
    want = sum(xs[u] / max(1.0, np.linalg.norm(xs[u])) for u in inc)
    assert np.abs(out.values - want).max() < 6 * out.noise_stddev + out.rounding_error_bound


_FUZZ_ROUND = make_round(n=5, d=300)
_FUZZ_AGG = _FUZZ_ROUND.server()
for _u in (1, 2, 3):
    _FUZZ_AGG.add(_FUZZ_ROUND.upload(_u))
_FUZZ_AGG.close()


def _mutations():  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st

    return st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 2**32 - 1), st.binary(max_size=40)),
        min_size=1,
        max_size=4,
    )


def _mutate(msg, muts):  # type: ignore[no-untyped-def]
    """Overwrite scalar or bytes fields, anywhere in ``msg`` (nested ones too)."""
    from google.protobuf.descriptor import FieldDescriptor

    fields = []

    def walk(m):  # type: ignore[no-untyped-def]
        for f in m.DESCRIPTOR.fields:
            if f.type == FieldDescriptor.TYPE_MESSAGE:
                if f.is_repeated:
                    for sub in getattr(m, f.name):
                        walk(sub)
                elif m.HasField(f.name):
                    walk(getattr(m, f.name))
            else:
                fields.append((m, f))

    walk(msg)
    for i, v, raw in muts:
        m, f = fields[i % len(fields)]
        rep = f.is_repeated
        if f.type == FieldDescriptor.TYPE_BYTES:
            if rep:
                getattr(m, f.name).append(raw)
            else:
                setattr(m, f.name, raw)
        elif f.type == FieldDescriptor.TYPE_DOUBLE:
            setattr(m, f.name, float(v) / 7)
        elif rep:
            getattr(m, f.name).append(v)
        else:
            setattr(m, f.name, v % (2**32))
    return msg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations())
@example([(9, 0, b""), (10, 0, b"")])  # once found: level_bits = 0 reached a negative shift
def test_wire_decoders_raise_only_wire_errors(muts) -> None:  # type: ignore[no-untyped-def]
    r, agg = _FUZZ_ROUND, _FUZZ_AGG
    cfg = r.cfg
    from secagg import SecAggError

    check = _mutate(wire.check_to_pb(cfg, agg.check_request(1)), muts)
    with contextlib.suppress(wire.WireError):
        _, req = wire.check_from_pb(check)
        with contextlib.suppress(SecAggError):
            r.members[1].check(req)  # typed refusals only, never another exception
    part = _mutate(next(iter(wire.upload_parts(r.upload(4)))), muts)
    asm = wire.UploadAssembler(cfg)
    with contextlib.suppress(wire.WireError):
        asm.add(part)
        asm.upload()
    key = _mutate(wire.member_key_to_pb(r.keys[0]), muts)
    with contextlib.suppress(wire.WireError):
        wire.member_key_from_pb(key)


def test_a_client_refuses_dp_parameters_that_do_not_fit_the_one_shot_round() -> None:
    """SPEC.md O9: before training, a DP-LoRA client checks that the task's DP parameters are
    for this round's grid and clients, calibrated for no more than the smallest released set,
    and tolerate at least the corrupt contributors it demands (docs/threats.md DP-10)."""
    from dataclasses import replace

    from client.agent import AgentError
    from client.fl import check_oneshot_dp
    from dp.distributed import DistributedDPConfig
    from secagg import ClientPolicy
    from secagg.oneshot import plaintext_bits_for

    n, dim, cohort = 8, 40, 4
    corrupt = ClientPolicy().corrupt_bound(cohort)
    assert corrupt >= 1

    def dp(**kw: object) -> DistributedDPConfig:
        args: dict[str, object] = dict(
            l2_clip=1.0, dim=dim, num_clients=n, min_survivors=cohort, noise_multiplier=0.5,
            bits=16, max_corrupt=corrupt,
        )  # fmt: skip
        return DistributedDPConfig.calibrated(**{**args, **kw})  # type: ignore[arg-type]

    good = dp()
    cfg = OneShotConfig(
        n=n, d=good.encoded_dim, committee=(1, 2, 3), threshold=2, min_cohort=cohort,
        bits=plaintext_bits_for(n, good.bits),
    )  # fmt: skip
    check_oneshot_dp(good, cfg, dim)
    refusals = [
        (good, cfg, dim + 1, "do not match"),  # another adapter
        (good, replace(cfg, d=good.encoded_dim * 2), dim, "do not match"),
        (good, replace(cfg, bits=cfg.encoding.bits + 1), dim, "do not match"),
        (dp(num_clients=n + 1), cfg, dim, "do not match"),
        (dp(min_survivors=cohort + 1), cfg, dim, "calibrated for 5 contributors"),
        (dp(max_corrupt=corrupt - 1), cfg, dim, "corrupt"),
    ]
    for dp_cfg, round_cfg, size, match in refusals:
        with pytest.raises(AgentError, match=match):
            check_oneshot_dp(dp_cfg, round_cfg, size)
    with pytest.raises(AgentError, match="corrupt"):  # a client demanding a wider margin
        check_oneshot_dp(good, cfg, dim, max_corrupt=corrupt + 1)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_job_digests_round_trip_the_wire_and_name_the_round(task: bytes, model: bytes) -> None:
    from dataclasses import replace

    base = OneShotConfig(n=6, d=64, committee=(4, 5, 6), threshold=2, bits=16)
    base = base.with_session(bytes(16), 3)
    if task == bytes(32):
        model = bytes(32)
    cfg = replace(base, task_digest=task, model_digest=model)
    back = wire.config_from_pb(wire.config_to_pb(cfg))
    assert back == cfg and back.digest == cfg.digest
    assert (cfg.digest == base.digest) == (task == bytes(32))
