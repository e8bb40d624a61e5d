"""What the aggregator's commands (``secagg-aggregator``, ``secagg-he-aggregator``,
``secagg-keyholder``) share: stopping cleanly on a signal, and the arguments every ``serve``
takes (logging and one-line errors: :mod:`protos.ops`)."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["StopEvent", "add_serve_arguments", "stop_on_signals"]


class StopEvent(threading.Event):
    """Set by SIGTERM or SIGINT; ``signum`` says which (for the exit status, 128 + signum)."""

    signum: int = 0


def stop_on_signals(on_stop: Callable[[], None] | None = None) -> StopEvent:
    """An event that SIGTERM and SIGINT set (for a clean shutdown); ``on_stop`` also runs, in
    the signal handler (e.g. to close a channel a long-poll is blocked on)."""
    stop = StopEvent()

    def handler(signum: int, _frame: object) -> None:
        stop.signum = signum
        stop.set()
        if on_stop is not None:
            on_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop


class _Listen(argparse.Action):
    """``--listen`` may be repeated; the first use replaces the default."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        if not isinstance(current, list) or current is self.default:
            current = []
        current.append(values)
        setattr(namespace, self.dest, current)


def add_serve_arguments(p: argparse.ArgumentParser, *, listen: str) -> None:
    """Where a service listens, its consortium, its SQLite state and its output folder."""
    p.add_argument(
        "--listen",
        action=_Listen,
        default=[listen],
        metavar="HOST:PORT",
        help="address to listen on; repeat to listen on several (a host reached under several "
        f"addresses); port 0 picks a free one (default: {listen})",
    )
    p.add_argument(
        "--consortium",
        type=Path,
        required=True,
        help="the aggregator's folder (from `install`), or a bundle from init-consortium",
    )
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        help="folder for the durable SQLite state (one aggregator per folder: it is locked)",
    )
    p.add_argument(
        "--output", type=Path, required=True, help="where round-<r>.npy and round-<r>.json go"
    )
