"""Stage transitions of both state machines: every out-of-order or replayed message is refused.

Modelled on Flower's exhaustive ``test_stage_transition``: every (state, message) pair is tried.
"""

from __future__ import annotations

import numpy as np
import pytest

from proofs_tests.support import make_round, run_honest
from secagg import (
    ClientState,
    InvalidMessage,
    InvalidSignature,
    ProtocolAbort,
    RoundConfig,
    Stage,
    UnexpectedMessage,
)
from secagg.messages import MaskedInput

CFG = RoundConfig(n=5, t=3, d=16)
STATES_BEFORE = [
    ClientState.ADVERTISED,
    ClientState.SHARED,
    ClientState.MASKED,
    ClientState.SIGNED,
]


@pytest.fixture(scope="module")
def honest():  # type: ignore[no-untyped-def]
    rnd = make_round(CFG, seed=11)
    server = run_honest(rnd)
    return rnd, server


def test_honest_round_sums_inputs(honest) -> None:  # type: ignore[no-untyped-def]
    rnd, server = honest
    expected = sum(x.astype(np.uint64) for x in rnd.inputs.values()) % (1 << CFG.ring_bits)
    assert np.array_equal(server.result.ring_sum, expected.astype(np.uint32))
    assert server.result.included == frozenset(range(1, 6))


def _advance(client, transcript, steps: int) -> None:  # type: ignore[no-untyped-def]
    client.advertise()
    for msg in transcript[:steps]:
        client.receive(msg)


@pytest.mark.parametrize("steps", range(5))
@pytest.mark.parametrize("which", range(4))
def test_every_client_transition(honest, steps: int, which: int) -> None:  # type: ignore[no-untyped-def]
    """In each state, only the next server message is accepted; any other aborts the client."""
    rnd, _ = honest
    transcript = rnd.transcript[1]
    client = rnd.client(1)
    _advance(client, transcript, steps)
    if steps == 4:
        assert client.state is ClientState.DONE
    msg = transcript[which]
    if which == steps:
        reply = client.receive(msg)
        assert reply == rnd.sent[1][steps + 1] or isinstance(reply, MaskedInput)
        return
    with pytest.raises(UnexpectedMessage):
        client.receive(msg)
    assert client.state is ClientState.ABORTED
    # Terminal: nothing is accepted after an abort, not even the right message.
    with pytest.raises(UnexpectedMessage):
        client.receive(transcript[min(steps, 3)])
    with pytest.raises(UnexpectedMessage):
        client.advertise()


def test_client_refuses_a_second_advertise(honest) -> None:  # type: ignore[no-untyped-def]
    rnd, _ = honest
    client = rnd.client(1)
    client.advertise()
    with pytest.raises(UnexpectedMessage):
        client.advertise()


def test_client_refuses_messages_for_someone_else(honest) -> None:  # type: ignore[no-untyped-def]
    rnd, _ = honest
    client = rnd.client(1)
    client.advertise()
    with pytest.raises(UnexpectedMessage):
        client.receive(rnd.transcript[2][0])


def test_masked_output_is_reproducible(honest) -> None:  # type: ignore[no-untyped-def]
    rnd, _ = honest
    client = rnd.client(1)
    _advance(client, rnd.transcript[1], 1)
    y = client.receive(rnd.transcript[1][1])
    assert isinstance(y, MaskedInput)
    assert np.array_equal(y.masked, rnd.sent[1][2].masked)


def test_server_refuses_replays_and_wrong_stages() -> None:
    rnd = make_round(CFG, seed=12)
    clients = {u: rnd.client(u) for u in range(1, 6)}
    server = rnd.server()
    adverts = {u: c.advertise() for u, c in clients.items()}
    for m in adverts.values():
        server.receive(m)
    with pytest.raises(UnexpectedMessage):
        server.receive(adverts[1])  # replay within the stage
    assert 1 in server.rejected
    out = server.close_stage()
    replies = {u: clients[u].receive(out[u]) for u in out if u != 1}
    with pytest.raises(UnexpectedMessage):
        server.receive(adverts[2])  # an AdvertiseKeys during SHARE_KEYS
    assert 2 in server.rejected
    with pytest.raises(UnexpectedMessage):
        server.receive(replies[3])  # client 3 is fine...
        server.receive(replies[3])  # ...until it sends the same thing twice
    assert 3 in server.rejected and server.stage is Stage.SHARE_KEYS


def test_server_refuses_forged_and_malformed_messages() -> None:
    rnd = make_round(CFG, seed=13)
    clients = {u: rnd.client(u) for u in range(1, 6)}
    server = rnd.server()
    a1 = clients[1].advertise()
    from dataclasses import replace

    with pytest.raises(InvalidSignature):
        server.receive(replace(a1, sender=2))  # client 2's identity does not sign this
    with pytest.raises(InvalidMessage):
        server.receive(replace(a1, sender=99))  # not registered
    with pytest.raises(ProtocolAbort):
        server.receive(replace(clients[3].advertise(), c_pk=b"\x00" * 31))


def test_server_has_no_result_before_the_end() -> None:
    rnd = make_round(CFG, seed=14)
    with pytest.raises(UnexpectedMessage):
        _ = rnd.server().result
