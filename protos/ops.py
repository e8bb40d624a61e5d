"""What every command-line entry point shares: ``--version``, logging (ISO 8601 times with
the UTC offset, or one JSON object per line), clean SIGINT/SIGTERM, and one-line errors.

Standard library only, so that a command can explain a missing extra (``grpc``, ``train``,
``audit``, ...) before anything needs it.

Exit status of every command: 0 done; 1 ran, but the rounds asked for did not all complete
(or, for ``secagg-audit``, verification failed); 2 bad input, configuration or material; 130
stopped by SIGINT, 143 by SIGTERM (after a clean shutdown).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_OK",
    "add_common_arguments",
    "common_parent",
    "missing_extra",
    "one_line",
    "run_cli",
    "setup_logging",
    "sigint_ignored_by_children",
    "utc_now",
    "utc_stamp",
    "version",
]

EXIT_OK: Final = 0
EXIT_INCOMPLETE: Final = 1
EXIT_ERROR: Final = 2

# Which optional extra (pyproject.toml) provides a top-level module.
_EXTRAS: Final = {
    "grpc": "grpc",
    "grpc_health": "grpc",
    "google": "grpc",
    "torch": "train",
    "peft": "train",
    "opacus": "train",
    "transformers": "train",
    "safetensors": "train",
    "gguf": "train",
    "tqdm": "train",
    "dp_accounting": "audit",
    "scipy": "audit",
    "matplotlib": "audit",
    "tenseal": "he",
    "py_arkworks_bls12381": "verify",
    "prometheus_client": "metrics",
}


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def utc_stamp(now: _dt.datetime | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ``: the time format of registries and ledger rows."""
    return (now or utc_now()).astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def version() -> str:
    try:
        return importlib.metadata.version("secagg-dplora")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown (not installed)"


def missing_extra(exc: ModuleNotFoundError) -> str:
    """One sentence naming the extra that provides the missing module."""
    top = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return f"a module this command needs is missing: {exc.name}"
    return (
        f"this command needs the {extra!r} extra (module {top!r} is missing): "
        f"pip install 'secagg-dplora[{extra}]'"
    )


class _IsoFormatter(logging.Formatter):
    """``2026-12-03T07:05:10.123+00:00 INFO secagg.aggregator message``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        t = _dt.datetime.fromtimestamp(record.created).astimezone()
        return t.isoformat(timespec="milliseconds")

    def format(self, record: logging.LogRecord) -> str:
        record.asctime = self.formatTime(record)
        line = f"{record.asctime} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _JsonFormatter(_IsoFormatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(verbose: bool = False, fmt: str = "text") -> None:
    """Log to stderr with a time zone; ``fmt`` ``json`` writes one object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _IsoFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # gRPC's C core logs to stderr on its own; keep its internals out of the way unless asked.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR" if verbose else "NONE")


def common_parent() -> argparse.ArgumentParser:
    """``-v`` and ``--log-format``, for every subcommand (``parents=[common_parent()]``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text: one line per event with an ISO 8601 time and UTC offset; json: one JSON "
        "object per line (default: %(default)s)",
    )
    return p


def add_common_arguments(ap: argparse.ArgumentParser, *, logging_flags: bool = True) -> None:
    """``--version`` (and, unless ``logging_flags`` is False, ``-v`` / ``--log-format``)."""
    ap.add_argument(
        "--version", action="version", version=f"%(prog)s {version()}", help="print the version"
    )
    if logging_flags:
        for action in common_parent()._actions:
            if action.dest != "help":
                ap._add_action(action)


def one_line(exc: BaseException) -> str:
    """An exception as one sentence for a user: no traceback, no gRPC internals."""
    code = getattr(exc, "code", None)
    if callable(code) and hasattr(exc, "details"):  # a grpc.RpcError
        try:
            status, details = code(), exc.details()
        except Exception:  # a call that never reached the wire
            return "the call to the service failed"
        return f"{getattr(status, 'name', status)}: {details}"
    if isinstance(exc, ModuleNotFoundError):
        return missing_extra(exc)
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def sigint_ignored_by_children() -> Iterator[None]:
    """Processes started inside (multiprocessing "spawn" workers) ignore SIGINT: a Ctrl-C at
    the terminal reaches the whole process group, and only the parent should act on it (it
    stops the workers itself). An ignored signal stays ignored across exec, and Python then
    installs no KeyboardInterrupt handler of its own."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Stopped(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def run_cli(
    prog: str,
    parser: Callable[[], argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse, set up logging and signals, run; every failure is one line on stderr.

    ``expected`` are the exception types that mean bad input or material (exit 2) besides
    the ones every command shares (OSError, ValueError, the project's errors, gRPC errors,
    missing extras). SIGTERM is turned into the same clean stop as Ctrl-C, unless ``run``
    installs its own handler."""
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and bad usage (2)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_ERROR
    setup_logging(getattr(args, "verbose", False), getattr(args, "log_format", "text"))
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        return run(args)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        print(f"{prog}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum
    except ModuleNotFoundError as exc:
        print(f"{prog}: error: {missing_extra(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if _known(exc, expected):
            print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        elif getattr(args, "verbose", False):
            raise
        else:
            print(
                f"{prog}: internal error ({type(exc).__name__}: {one_line(exc)}); "
                "rerun with -v for the traceback",
                file=sys.stderr,
            )
        return EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous)


def _known(exc: BaseException, expected: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, (OSError, ValueError, *expected)):
        return True
    names = {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}
    return bool(
        names
        & {
            "secagg._errors.SecAggError",
            "dp._errors.PrivacyError",
            "grpc.RpcError",
            "client.agent.AgentError",
        }
    )
