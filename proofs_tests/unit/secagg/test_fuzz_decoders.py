"""Hypothesis fuzzers for the decoders of untrusted bytes (threats.md IV-01, IV-02, SA-08, GR-06,
DP-12). ``e2e/test_fuzz.py`` fuzzes the running service end to end; these reach each decoder
directly, many more times per second, and assert it raises only its typed error: never another
exception, never a hang (each example has a deadline).

* ``protos/wire.py`` ``client_from_pb`` / ``server_from_pb`` on protobuf-valid but nonsensical
  envelopes (every field drawn from its type, sizes near the real ones) -> ``WireError``;
* ``secagg.unpack_bits`` on random bytes -> ``EncodingError``;
* ``secagg.shamir.share_from_bytes`` -> ``InvalidShare``;
* ``dp.ledger`` open / verify on random and corrupted files -> ``LedgerError`` (or a verified
  report that names the problems).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import wire
from protos.secagg.v1 import secagg_pb2 as pb
from secagg import EncodingError, InvalidShare, RoundConfig, unpack_bits
from secagg.shamir import PRIME, SHARE_BYTES, share_from_bytes, share_to_bytes

CFG = RoundConfig(n=6, t=4, d=37, k=4).with_session(bytes(range(16)), 3)
SIZES = [0, 1, 16, 31, 32, 33, 63, 64, 65, 66, 67, 172, 173, wire.max_message_bytes(CFG) // 64]
FAST = settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[object]:
    t = field.type
    if t == FieldDescriptor.TYPE_BYTES:
        return st.one_of(
            st.sampled_from(SIZES).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
            st.binary(max_size=80),
        )
    if t == FieldDescriptor.TYPE_STRING:
        return st.text(max_size=20)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.integers(0, 10), st.integers(0, 2**64 - 1))
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.one_of(st.integers(0, CFG.n + 2), st.integers(0, 2**32 - 1))
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_INT32):
        return st.integers(-(2**31), 2**31 - 1)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    raise NotImplementedError(field.full_name)


@st.composite
def _message(draw: st.DrawFn, cls: type, depth: int = 0) -> object:
    msg = cls()
    oneofs = {o.name: list(o.fields) for o in cls.DESCRIPTOR.oneofs}
    chosen = {name: draw(st.sampled_from(fields)) for name, fields in oneofs.items()}
    for field in cls.DESCRIPTOR.fields:
        if field.containing_oneof is not None and chosen[field.containing_oneof.name] is not field:
            continue
        is_msg = field.type == FieldDescriptor.TYPE_MESSAGE
        if field.is_repeated:
            count = draw(st.integers(0, 6 if depth < 2 else 0))
            for _ in range(count):
                if is_msg:
                    getattr(msg, field.name).add().CopyFrom(
                        draw(_message(field.message_type._concrete_class, depth + 1))
                    )
                else:
                    getattr(msg, field.name).append(draw(_scalar(field)))
        elif is_msg:
            getattr(msg, field.name).CopyFrom(
                draw(_message(field.message_type._concrete_class, depth + 1))
            )
        else:
            setattr(msg, field.name, draw(_scalar(field)))
    return msg


@st.composite
def _envelope(draw: st.DrawFn, cls: type) -> object:
    env = draw(_message(cls))
    if draw(st.booleans()):  # mostly fresh, so the decoder gets past the freshness check
        env.round, env.session_id = CFG.round, CFG.session_id  # type: ignore[attr-defined]
    return env


@FAST
@given(env=_envelope(pb.ClientEnvelope))
def test_client_from_pb_raises_only_wire_errors(env: pb.ClientEnvelope) -> None:
    with contextlib.suppress(wire.WireError):
        wire.client_from_pb(env, CFG)


@FAST
@given(env=_envelope(pb.ServerEnvelope))
def test_server_from_pb_raises_only_wire_errors(env: pb.ServerEnvelope) -> None:
    with contextlib.suppress(wire.WireError):
        wire.server_from_pb(env, CFG)


@FAST
@given(raw=st.binary(max_size=200), bits=st.integers(-2, 40), count=st.integers(0, 60))
def test_unpack_bits_decodes_or_raises_encoding_error(raw: bytes, bits: int, count: int) -> None:
    try:
        out = unpack_bits(raw, bits, count)
    except EncodingError:
        return
    assert out.dtype == np.uint32 and out.shape == (count,)
    assert int(out.max(initial=0)) < 2**bits


@FAST
@given(raw=st.one_of(st.binary(max_size=80), st.binary(min_size=66, max_size=66)))
def test_share_from_bytes_accepts_exactly_the_field(raw: bytes) -> None:
    try:
        y = share_from_bytes(raw)
    except InvalidShare:
        assert len(raw) != SHARE_BYTES or int.from_bytes(raw, "big") >= PRIME
        return
    assert 0 <= y < PRIME and share_to_bytes(y) == raw


# -- the privacy ledger -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dp.accounting import DistributedDiscreteGaussianEvent
    from dp.ledger import Budget, PrivacyLedger, generate_signing_key

    path = tmp_path_factory.mktemp("ledger") / "l.db"
    event = DistributedDiscreteGaussianEvent(8.0, 50, 1.0, 40.0, 256)
    with PrivacyLedger.create(path, generate_signing_key(), accountants=("rdp",)) as ledger:
        for r in range(3):
            for who in ("alice", "bob"):
                ledger.charge(
                    event,
                    client_id=who,
                    run_id="run-1",
                    round_index=r,
                    budget=Budget(epsilon=100.0, delta=1e-5),
                )
    return path


def _open_and_verify(path: Path) -> None:
    from dp.ledger import LedgerError, PrivacyLedger, verify_ledger

    try:
        with PrivacyLedger.open(path, verify=False) as ledger:
            ledger.readable_entries()
            ledger.diagnose()
        verify_ledger(path)
    except LedgerError:
        pass


@settings(
    max_examples=60,
    deadline=3000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_ledger_open_and_verify_raise_only_ledger_errors(
    data: st.DataObject, ledger_file: Path, tmp_path: Path
) -> None:
    raw = bytearray(ledger_file.read_bytes())
    mode = data.draw(st.sampled_from(["random", "truncate", "flip", "splice"]))
    if mode == "random":
        raw = bytearray(data.draw(st.binary(max_size=4096)))
    elif mode == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            pos = data.draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
    else:
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos : pos + 16] = data.draw(st.binary(min_size=16, max_size=16))
    path = tmp_path / f"fuzz-{data.draw(st.integers(0, 2**32))}.db"
    path.write_bytes(bytes(raw))
    _open_and_verify(path)
