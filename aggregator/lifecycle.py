"""How an aggregator process starts and stops cleanly: one process per state folder (a lock),
one process per port (exclusive binding), and the count of rounds this run completed.

Security: two aggregators on one state folder would each open rounds under the other's
numbers, and a second one bound to the same port (SO_REUSEPORT, gRPC's default) would take
half of the members' connections; both are refused at start-up with one sentence.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

__all__ = ["EXCLUSIVE_PORT", "StateLock", "StateLocked"]

# gRPC server option: refuse to share a port with another process.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


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
