"""What the aggregator's commands (``secagg-aggregator``, ``python -m aggregator.he_service``,
``secagg-keyholder``) share: logging, stopping on a signal, and the arguments every ``serve``
takes."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path

__all__ = ["add_serve_arguments", "setup_logging", "stop_on_signals"]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        datefmt="%H:%M:%S",
    )


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set (for a clean shutdown)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def add_serve_arguments(p: argparse.ArgumentParser, *, listen: str) -> None:
    """Where a service listens, its consortium, its SQLite state and its output folder."""
    p.add_argument("--listen", default=listen)
    p.add_argument("--consortium", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="folder for the SQLite state")
    p.add_argument("--output", type=Path, required=True, help="where round-<r>.npy/.json go")
