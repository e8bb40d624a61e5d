"""Contribution verification wired into rounds (protocol.md §7, SPEC.md D11, D12): the config,
the state machines, the simulator and the wire, with verification on (small d, four clients)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proofs_tests.adversarial.harness import resign_check
from proofs_tests.support import Round, make_round
from protos import wire
from secagg import (
    ClientPolicy,
    ConfigError,
    InvalidContribution,
    InvalidMessage,
    NormBoundExceeded,
    PolicyViolation,
    RoundConfig,
    SecAggServer,
    Stage,
    simulate,
)
from secagg.messages import CheckRequest, CheckResponse, MaskedInput
from secagg.verify import Commitment, NormProof
from secagg.verify_round import (
    MAX_PROOF_BYTES,
    POINT_BYTES,
    centred,
    max_commitment_bytes,
    squared_norm,
)

F64 = npt.NDArray[np.float64]
D = 128
PLAIN = RoundConfig(n=4, t=2, d=D)  # k=3, c=0: t >= 2
M = PLAIN.encoding.max_abs  # largest encoded magnitude of one coordinate
LOOSE = D * M * M  # every clipped input is within it
CFG = replace(PLAIN, norm_bound=LOOSE)
WHOLE = replace(PLAIN, norm_bound=D * 4 ** (PLAIN.ring_bits - 1))  # any vector of the ring


def _inputs(seed: int, n: int = 4, spread: float = 1.5) -> list[F64]:
    gen = np.random.default_rng(seed)
    return [gen.uniform(-spread, spread, D) for _ in range(n)]


def _truth(inputs: list[F64], included: frozenset[int]) -> F64:
    return sum((np.clip(inputs[u - 1], -1.0, 1.0) for u in included), np.zeros(D))


def test_norm_bound_is_validated_signed_and_can_be_required() -> None:
    for bad in (-1, 1 << 64, 2.5, True):
        with pytest.raises(ConfigError):
            RoundConfig(n=4, t=2, d=D, norm_bound=bad)  # type: ignore[arg-type]
    RoundConfig(n=4, t=2, d=D, norm_bound=0)
    RoundConfig(n=4, t=2, d=D, norm_bound=(1 << 64) - 1)
    s = bytes(16)
    off, on = PLAIN.with_session(s), CFG.with_session(s)
    other = replace(CFG, norm_bound=LOOSE - 1).with_session(s)
    assert len({off.digest, on.digest, other.digest}) == 3  # the bound is signed by everyone
    assert b"norm_bound" not in off.canonical()  # unverified digests are what they were
    assert off.upload_dim == on.upload_dim == D and on.verified and not off.verified
    assert Stage.CHECK in on.stages and Stage.CHECK not in off.stages
    ClientPolicy().check(off)
    ClientPolicy(require_norm_bound=True).check(on)
    with pytest.raises(PolicyViolation):
        ClientPolicy(require_norm_bound=True).check(off)


def test_honest_round_with_verification_gives_the_same_aggregate_as_without() -> None:
    inputs = _inputs(1)
    plain = simulate(PLAIN, inputs, seed=5)
    checked = simulate(CFG, inputs, seed=5)
    assert checked.included == plain.included == frozenset({1, 2, 3, 4})
    assert checked.rejected == {} and checked.refused == {}
    assert checked.ring_sum.shape == (D,)
    assert np.array_equal(checked.ring_sum, plain.ring_sum)
    assert np.array_equal(checked.aggregate, plain.aggregate)
    worst = float(np.max(np.abs(checked.aggregate - _truth(inputs, checked.included))))
    assert worst <= checked.error_bound + 1e-9
    # The uploads carry the commitment, the claims and the proof beside the vector.
    assert checked.upload_bytes > plain.upload_bytes


@pytest.mark.parametrize(
    "stage",
    [Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CHECK, Stage.CONSISTENCY, Stage.UNMASK],
    ids=lambda s: s.name,
)
def test_dropouts_still_complete_with_verification(stage: Stage) -> None:
    """A client dropping before its check answer is a dropout (its upload leaves the sum, its
    masks are rebuilt from shares); after it, it is in the sum."""
    inputs = _inputs(2)
    res = simulate(CFG, inputs, drops={stage: [3]}, seed=6)
    want = {1, 2, 4} if stage.value <= Stage.CHECK.value else {1, 2, 3, 4}
    assert res.included == frozenset(want) and res.rejected == {}
    plain_stage = Stage.MASKED_INPUT if stage is Stage.CHECK else stage
    plain = simulate(PLAIN, inputs, drops={plain_stage: [3]}, seed=6)
    assert plain.included == res.included
    worst = float(np.max(np.abs(res.aggregate - _truth(inputs, res.included))))
    assert worst <= res.error_bound + 1e-9


def test_input_one_unit_over_the_bound_stays_out_and_the_round_completes() -> None:
    """Inputs at +-clip encode exactly to +-M (no rounding): client 4's squared norm is D*M^2.
    With the bound one below it, client 4 cannot prove and stays out; with the bound exactly
    at it, client 4 takes part."""
    inputs = _inputs(3, spread=0.5)
    inputs[3] = np.where(np.arange(D) % 2 == 0, 1.0, -1.0)
    exact = D * M * M
    tight = simulate(replace(PLAIN, norm_bound=exact - 1), inputs, seed=7)
    assert tight.included == frozenset({1, 2, 3})
    assert set(tight.refused) == {4} and "above the round's bound" in tight.refused[4]
    assert tight.rejected == {}
    worst = float(np.max(np.abs(tight.aggregate - _truth(inputs, tight.included))))
    assert worst <= tight.error_bound + 1e-9
    at = simulate(replace(PLAIN, norm_bound=exact), inputs, seed=7)
    assert at.included == frozenset({1, 2, 3, 4}) and at.refused == {}


def test_client_refuses_an_input_over_the_bound_before_anything_is_sent() -> None:
    rnd = make_round(replace(CFG, norm_bound=24), seed=4)
    x = np.zeros(D, dtype=np.int64)
    x[0] = 5
    ring = (x & CFG.encoding.mask).astype(np.uint32)
    assert squared_norm(centred(CFG, ring)) == 25
    rnd.inputs[1] = ring
    with pytest.raises(NormBoundExceeded):
        rnd.client(1)
    rnd.config = replace(rnd.config, norm_bound=25)
    client = rnd.client(1)
    x[0] = -6  # the centred lift is what counts: -6 is 6 units long
    with pytest.raises(NormBoundExceeded):
        client.set_input((x & CFG.encoding.mask).astype(np.uint32))


def test_squared_norm_is_exact_at_the_extremes() -> None:
    x = np.array([-(1 << 31), (1 << 31) - 1, 0, 1] * 1000, dtype=np.int64)
    assert squared_norm(x) == 1000 * ((1 << 62) + ((1 << 31) - 1) ** 2 + 1)


def _checked(
    cfg: RoundConfig, seed: int
) -> tuple[Round, SecAggServer, dict[int, MaskedInput], dict[int, CheckResponse]]:
    """The honest masked inputs and check answers of a round, and a server that received the
    masked inputs and waits for the answers."""
    rnd = make_round(cfg, seed=seed)
    clients = {u: rnd.client(u) for u in rnd.inputs}
    server = rnd.server()
    for c in clients.values():
        server.receive(c.advertise())
    out = server.close_stage()
    for u, m in out.items():
        server.receive(clients[u].receive(m))
    out = server.close_stage()
    masked = {}
    for u, m in out.items():
        reply = clients[u].receive(m)
        assert isinstance(reply, MaskedInput)
        masked[u] = reply
        server.receive(reply)
    out = server.close_stage()
    checks = {}
    for u, m in out.items():
        assert isinstance(m, CheckRequest)
        reply = clients[u].receive(m)
        assert isinstance(reply, CheckResponse)
        checks[u] = reply
    return rnd, server, masked, checks


def test_messages_carry_commitment_claims_and_proof_over_the_wire() -> None:
    _, server, masked, checks = _checked(WHOLE, seed=8)
    cfg = server.config
    m, c = masked[2], checks[2]
    assert m.masked.shape == (cfg.upload_dim,)
    assert 0 < len(m.commitment) <= max_commitment_bytes(D)
    assert 0 < len(c.proof) <= MAX_PROOF_BYTES and len(c.self_claim) == POINT_BYTES
    assert [v for v, _ in c.pair_claims] == [1, 3, 4]
    Commitment.from_bytes(m.commitment)
    assert NormProof.from_bytes(c.proof).checked
    for msg in (m, c):
        env = wire.client_to_pb(msg, cfg)
        back = wire.client_from_pb(env, cfg)
        assert wire.max_message_bytes(cfg) > env.ByteSize()
        if isinstance(msg, MaskedInput):
            assert isinstance(back, MaskedInput) and np.array_equal(back.masked, msg.masked)
            assert (back.commitment, back.signature) == (msg.commitment, msg.signature)
        else:
            assert back == msg
    req = CheckRequest(2, bytes(range(32)))
    assert wire.server_from_pb(wire.server_to_pb(req, cfg), cfg) == req
    # The config travels with its bound, and the digest the clients recompute still matches.
    pb_cfg = wire.config_to_pb(cfg)
    back_cfg = wire.config_from_pb(pb_cfg)
    assert pb_cfg.HasField("norm_bound") and back_cfg.norm_bound == cfg.norm_bound
    assert back_cfg.digest == cfg.digest and back_cfg.upload_dim == cfg.upload_dim
    assert not wire.config_to_pb(PLAIN.with_session(bytes(16))).HasField("norm_bound")
    # Sizes are checked before anything is parsed.
    for bad in (
        replace(m, commitment=bytes(max_commitment_bytes(D) + 1)),
        replace(m, commitment=b""),
        replace(c, proof=bytes(MAX_PROOF_BYTES + 1)),
        replace(c, proof=b""),
        replace(c, self_claim=bytes(47)),
        replace(c, pair_claims=((1, bytes(49)),)),
        replace(c, pair_claims=tuple((v, bytes(48)) for v in range(1, cfg.degree + 3))),
    ):
        with pytest.raises(wire.WireError):
            wire.client_from_pb(wire.client_to_pb(bad, cfg), cfg)
    # Commitments, check answers and check requests in a round that asks for none are refused.
    plain_cfg = PLAIN.with_session(cfg.session_id or bytes(16))
    for stray in (MaskedInput(2, m.masked, m.signature, m.commitment), c):
        with pytest.raises(wire.WireError):
            wire.client_from_pb(wire.client_to_pb(stray, plain_cfg), plain_cfg)
    with pytest.raises(wire.WireError):
        wire.server_from_pb(wire.server_to_pb(req, plain_cfg), plain_cfg)


def test_server_excludes_a_missing_commitment_and_a_malformed_answer() -> None:
    rnd, server, masked, checks = _checked(WHOLE, seed=9)
    assert server.stage is Stage.CHECK
    wrong_set = resign_check(
        server.config,
        rnd.identities[1],
        replace(checks[1], pair_claims=checks[1].pair_claims[:-1]),
        server._check_seed,
    )
    with pytest.raises(InvalidContribution):
        server.receive(wrong_set)
    assert "InvalidContribution" in server.rejected[1] and 1 in server.cheaters
    for u in (2, 3, 4):
        server.preverify(checks[u])  # what the gRPC service does outside its lock
        server.receive(checks[u])
    out = server.close_stage()
    assert server.u3 == frozenset({2, 3, 4}) and set(out) == {2, 3, 4}
    del masked


def test_unverified_server_refuses_a_stray_commitment() -> None:
    rnd = make_round(PLAIN, seed=10)
    clients = {u: rnd.client(u) for u in rnd.inputs}
    server = rnd.server()
    for c in clients.values():
        server.receive(c.advertise())
    out = server.close_stage()
    for u, m in out.items():
        server.receive(clients[u].receive(m))
    out = server.close_stage()
    m1 = clients[1].receive(out[1])
    assert isinstance(m1, MaskedInput) and m1.commitment == b""
    with pytest.raises(InvalidMessage):
        server.receive(replace(m1, commitment=b"x"))


_CONCURRENT = """
import sys, threading
from pathlib import Path
from secagg.verify import Commitment
from secagg.verify_round import parse_point, verify_check
from secagg import RoundConfig
d, n, bound = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cfg = RoundConfig(n=n, t=2, d=d, norm_bound=bound).with_session(bytes(16))
folder = Path(sys.argv[1])
seed = (folder / "seed").read_bytes()
out = {}
def check(u):
    c = Commitment.from_bytes((folder / f"{u}.c").read_bytes())
    y = [int(v) for v in (folder / f"{u}.y").read_text().split()]
    claims = (folder / f"{u}.claims").read_bytes()
    pts = [parse_point(claims[i:i + 48]) for i in range(0, len(claims), 48)]
    signs = [int(v) for v in (folder / f"{u}.signs").read_text().split()]
    p = (folder / f"{u}.p").read_bytes()
    try:
        verify_check(cfg, u, c, seed, y, pts[0], list(zip(pts[1:], signs)), p)
        out[u] = "ok"
    except Exception as exc:
        out[u] = repr(exc)
threads = [threading.Thread(target=check, args=(u,)) for u in range(1, n + 1)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(out.items()))
"""


def test_proofs_verify_concurrently_in_a_fresh_process(tmp_path: Path) -> None:
    """The gRPC service verifies proofs in several threads at once (``preverify``, outside its
    round lock), in a process that never proved anything: every honest proof must verify."""
    _, server, masked, checks = _checked(WHOLE, seed=11)
    cfg = server.config
    assert cfg.session_id == bytes(16) and cfg.norm_bound is not None
    (tmp_path / "seed").write_bytes(server._check_seed)
    for u, m in masked.items():
        c = checks[u]
        (tmp_path / f"{u}.c").write_bytes(m.commitment)
        (tmp_path / f"{u}.y").write_text(" ".join(str(v) for v in server._y_proj[u]))
        (tmp_path / f"{u}.claims").write_bytes(c.self_claim + b"".join(p for _, p in c.pair_claims))
        (tmp_path / f"{u}.signs").write_text(
            " ".join("1" if u < v else "-1" for v, _ in c.pair_claims)
        )
        (tmp_path / f"{u}.p").write_bytes(c.proof)
    args = [str(tmp_path), str(D), str(cfg.n), str(cfg.norm_bound)]
    out = subprocess.run(
        [sys.executable, "-c", _CONCURRENT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str([(u, "ok") for u in range(1, cfg.n + 1)])


@pytest.fixture(scope="module")
def one_answer() -> tuple[SecAggServer, CheckResponse]:
    _, server, _, checks = _checked(WHOLE, seed=12)
    return server, checks[3]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_garbled_claims_and_proofs_raise_only_invalid_contribution(
    one_answer: tuple[SecAggServer, CheckResponse], data: st.DataObject
) -> None:
    """Whatever bytes arrive as claims or proof, the server's check answers with
    InvalidContribution (its sender is then excluded), never another exception."""
    server, c = one_answer
    target = data.draw(st.sampled_from(["self_claim", "proof"]))
    raw = bytearray(getattr(c, target))
    how = data.draw(st.sampled_from(["splice", "random", "truncate"]))
    if how == "splice":
        at = data.draw(st.integers(0, len(raw) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=64))
        raw[at : at + len(chunk)] = chunk
    elif how == "random":
        raw = bytearray(data.draw(st.binary(min_size=0, max_size=2 * len(raw))))
    else:
        del raw[data.draw(st.integers(0, len(raw) - 1)) :]
    changed = replace(c, **{target: bytes(raw)})  # type: ignore[arg-type]
    if changed == c:
        return
    got = server._check_proof(changed)
    assert isinstance(got, InvalidContribution)
