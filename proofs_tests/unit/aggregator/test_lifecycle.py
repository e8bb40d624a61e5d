"""Start-up refusals of the aggregator (aggregator/lifecycle.py): the listen probe that turns
a taken port into our one sentence before gRPC binds, and the state-folder lock."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aggregator.lifecycle import StateLock, StateLocked, check_can_listen


def _listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_a_taken_port_is_refused_in_one_sentence() -> None:
    with _listener() as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:\d+: the port is in use"):
            check_can_listen(f"127.0.0.1:{port}")
        with pytest.raises(OSError, match="the port is in use"):
            check_can_listen(f"localhost:{port}")  # every address the name resolves to


def test_a_free_port_and_port_zero_pass() -> None:
    with _listener() as probe:
        port = probe.getsockname()[1]
    check_can_listen(f"127.0.0.1:{port}")  # closed again: free
    check_can_listen("127.0.0.1:0")
    check_can_listen("not an address")  # left to gRPC, which refuses it itself


def test_a_second_lock_on_one_state_folder_is_refused(tmp_path: Path) -> None:
    with StateLock(tmp_path), pytest.raises(StateLocked), StateLock(tmp_path):
        pass
    with StateLock(tmp_path):  # released with the first
        pass
