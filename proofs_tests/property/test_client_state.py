"""Issue 16, item 5: a SecAggClient exported and restored between every stage (in a new
object, as a new process would) gives the same round as one never interrupted: the same
messages, byte for byte, and the same sum; the export is sealed and bound to its round."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import wire
from secagg import ClientPolicy, ClientState, RoundConfig, SecAggClient, Stage, simulate
from secagg.state import StateError, export_client, restore_client, snapshot_header

KEY = bytes(range(32))


class Restarting:
    """A client that is written out and rebuilt from its export before and after every step."""

    exports = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.inner = SecAggClient(*args, **kwargs)
        self.key = os.urandom(32)
        self.cycle()

    def cycle(self) -> None:
        if self.inner.state in (ClientState.DONE, ClientState.ABORTED):
            return
        blob = export_client(self.inner, self.key)
        config = self.inner.config
        self.inner = restore_client(blob, self.key, config, expect_state=self.inner.state)
        Restarting.exports += 1

    def advertise(self) -> Any:
        self.cycle()
        out = self.inner.advertise()
        self.cycle()
        return out

    def receive(self, message: Any) -> Any:
        self.cycle()
        out = self.inner.receive(message)
        self.cycle()
        return out


def _transcript(config: RoundConfig, inputs: list[Any], seed: int, drops: Any, factory: Any):
    sent: list[bytes] = []

    def down(stage: Stage, u: int, msg: Any) -> Any:
        sent.append(b"S" + wire.server_to_pb(msg, config_of[0]).SerializeToString())
        return msg

    def up(stage: Stage, u: int, msg: Any) -> Any:
        sent.append(b"C" + wire.client_to_pb(msg, config_of[0]).SerializeToString())
        return msg

    config_of = [config.with_session(bytes(range(16)))]
    res = simulate(
        config_of[0],
        inputs,
        drops=drops,
        tamper=down,
        client_tamper=up,
        seed=seed,
        client_factory=factory,
    )
    return res, sent


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(4, 6),
    seed=st.integers(0, 2**16),
    drop=st.sampled_from(
        [None, Stage.SHARE_KEYS, Stage.MASKED_INPUT, Stage.CONSISTENCY, Stage.UNMASK]
    ),
    verified=st.booleans(),
)
def test_export_restore_at_every_stage_gives_the_same_round(
    n: int, seed: int, drop: Stage | None, verified: bool
) -> None:
    d = 12
    t = ClientPolicy().min_threshold(n - 1)
    config = RoundConfig(n=n, t=t, d=d, norm_bound=(1 << 40) if verified else None)
    inputs = [np.random.default_rng(seed + i).uniform(-1, 1, d) for i in range(n)]
    drops = {drop: [n]} if drop is not None else None
    before = Restarting.exports
    plain, plain_sent = _transcript(config, inputs, seed, drops, None)
    moved, moved_sent = _transcript(config, inputs, seed, drops, Restarting)
    assert Restarting.exports - before >= 4 * (n - 1)  # every live client, every stage
    assert moved_sent == plain_sent  # every message, byte for byte
    assert np.array_equal(moved.ring_sum, plain.ring_sum)
    assert moved.included == plain.included


def _client_after_advertise() -> tuple[SecAggClient, RoundConfig, bytes]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from secagg._crypto import ed25519_public

    ids = {u: Ed25519PrivateKey.generate() for u in (1, 2, 3)}
    reg = {u: ed25519_public(k) for u, k in ids.items()}
    cfg = RoundConfig(n=3, t=2, d=4, round=5).with_session(os.urandom(16))
    c = SecAggClient(cfg, 1, ids[1], reg, np.zeros(4, dtype=np.uint32))
    c.advertise()
    return c, cfg, export_client(c, KEY)


def test_a_replay_into_another_round_or_session_is_refused() -> None:
    _, cfg, blob = _client_after_advertise()
    assert restore_client(blob, KEY, cfg).state is ClientState.ADVERTISED
    with pytest.raises(StateError, match="replay"):
        restore_client(blob, KEY, replace(cfg, round=6))
    with pytest.raises(StateError, match="replay"):
        restore_client(blob, KEY, cfg.with_session(os.urandom(16)))
    with pytest.raises(StateError, match="configuration"):
        restore_client(blob, KEY, replace(cfg, d=5))
    with pytest.raises(StateError, match="not shared"):
        restore_client(blob, KEY, cfg, expect_state=ClientState.SHARED)


def test_a_wrong_key_or_any_altered_byte_is_refused() -> None:
    _, cfg, blob = _client_after_advertise()
    with pytest.raises(StateError, match="key"):
        restore_client(blob, os.urandom(32), cfg)
    for i in (len(blob) - 1, len(blob) // 2, len(blob) - 30):
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(StateError):
            restore_client(bytes(bad), KEY, cfg)
    # The header is authenticated too: rewrite the stage it claims.
    head = snapshot_header(blob)
    assert head["state"] is ClientState.ADVERTISED and head["client_id"] == 1
    forged = blob.replace(b"advertised", b"shared\x00\x00\x00\x00", 1)
    with pytest.raises(StateError):
        restore_client(forged, KEY, cfg)
    with pytest.raises(StateError):
        restore_client(blob[:40], KEY, cfg)
    with pytest.raises(StateError, match="32 bytes"):
        export_client(_client_after_advertise()[0], b"short")


def test_fields_that_cannot_be_carried_are_refused_not_dropped() -> None:
    client, cfg, _ = _client_after_advertise()
    client._later = object()  # type: ignore[attr-defined]  # a field of a type the format lacks
    with pytest.raises(StateError, match="_later"):
        export_client(client, KEY)
    client._later = 7  # type: ignore[attr-defined]  # exportable, but unknown to this version
    blob = export_client(client, KEY)
    with pytest.raises(StateError, match="fields differ"):
        restore_client(blob, KEY, cfg)
    del client._later  # type: ignore[attr-defined]
    client.state = ClientState.ABORTED
    with pytest.raises(StateError, match="nothing to resume"):
        export_client(client, KEY)
    assert b"\x00" * 4 not in export_client.__doc__.encode()  # docstring sanity for help()


def test_he_client_restored_in_a_new_object_continues_its_stream() -> None:
    """The HE variant: a member's client exported before its upload and restored (the round's
    public context re-read and re-checked) produces exactly the upload the original would."""
    pytest.importorskip("tenseal")
    from proofs_tests.he_helpers import REGISTRY, he_client
    from secagg.he import HeKeyHolder, HeRoundConfig
    from secagg.state import export_he_client, restore_he_client

    cfg = HeRoundConfig(n=4, d=64, session_id=bytes(range(16)), round=2)
    keys = HeKeyHolder(REGISTRY, min_cohort=3).open_round(cfg)
    x = np.linspace(-0.5, 0.5, 64)
    original = he_client(cfg, keys, 1, seed="s")
    blob = export_he_client(he_client(cfg, keys, 1, seed="s"), KEY, keys.public_context)
    restored = restore_he_client(blob, KEY, cfg)
    a, b = original.encrypt(x), restored.encrypt(x)
    # Our random source resumes exactly (the sealed tag seed); SEAL draws its own encryption
    # randomness, so the ciphertexts differ as any two encryptions do (not their number).
    assert a.sealed_tag == b.sealed_tag and len(a.chunks) == len(b.chunks)
    assert (a.session_id, a.round, a.client_id) == (b.session_id, b.round, b.client_id)
    with pytest.raises(StateError, match="replay"):
        restore_he_client(blob, KEY, replace(cfg, round=3))
    with pytest.raises(StateError, match="secagg client, not he"):
        restore_he_client(export_client(_client_after_advertise()[0], KEY), KEY, cfg)
    with pytest.raises(StateError, match="he client, not secagg"):
        restore_client(blob, KEY, _client_after_advertise()[1])
    with pytest.raises(StateError, match="key"):
        restore_he_client(blob, os.urandom(32), cfg)
