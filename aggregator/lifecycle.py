"""How an aggregator process starts and stops cleanly: one process per state folder (a lock),
one process per port (exclusive binding), and the count of rounds this run completed.

Security: two aggregators on one state folder would each open rounds under the other's
numbers, and a second one bound to the same port (SO_REUSEPORT, gRPC's default) would take
half of the members' connections; both are refused at start-up with one sentence.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

__all__ = ["EXCLUSIVE_PORT", "StateLock", "StateLocked", "check_can_listen"]

# gRPC server option: refuse to share a port with another process.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


def check_can_listen(address: str) -> None:
    """Raise ``OSError`` (one sentence) if ``host:port`` cannot be bound here: the port is
    taken, or the host is not an address of this machine. Probed with plain sockets before
    gRPC binds, so that a refused start prints our sentence and not gRPC's own log line; gRPC's
    bind stays the authority (a port taken between the probe and it is still refused). Port 0
    (any free port) is not probed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) == 0:
        return  # gRPC parses and refuses anything else itself
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = int(port_text)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {address}: {exc.strerror}") from None
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: SO_REUSEADDR (a port in TIME_WAIT is free), no SO_REUSEPORT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError:
                raise OSError(
                    f"cannot listen on {address}: the port is in use (another aggregator?) or "
                    "the address is not this host's"
                ) from None


class StateLocked(RuntimeError):
    """Another process holds the state folder."""


class StateLock:
    """An exclusive ``flock`` on ``<state>/aggregator.lock`` for the life of the process; the
    file records the holder's pid (for the error message only: the lock is the kernel's)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "aggregator.lock"
        self._fd: int | None = None

    def __enter__(self) -> StateLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateLocked(
                f"the state folder {self.path.parent} is in use by another aggregator "
                f"(pid {holder}); stop it first, or give this one its own --state"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
