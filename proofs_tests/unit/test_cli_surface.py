"""Every command a user runs (issue 15): help on every flag with its default, a plain
description, ``--version``, one-line errors for bad input and missing extras, a clean stop on
SIGINT / SIGTERM, and logs with a time zone (or JSON)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from protos import ops

ROOT = Path(__file__).resolve().parents[2]


def _parsers() -> dict[str, Callable[[], argparse.ArgumentParser]]:
    from aggregator import admin, cli, he_service, keyholder
    from client import cli as client_cli
    from client import committee_agent, demo, he_agent
    from dp import audit

    return {
        "secagg-aggregator": cli._parser,
        "secagg-admin": admin._parser,
        "secagg-client": client_cli._parser,
        "secagg-audit": audit._parser,
        "secagg-he-aggregator": he_service._parser,
        "secagg-keyholder": keyholder._parser,
        "he-client": he_agent._parser,
        "secagg-demo": demo._parser,
        "secagg-committee": committee_agent._parser,
    }


def _walk(p: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")


@pytest.mark.parametrize("prog", sorted(_parsers()))
def test_every_flag_has_help_and_says_its_default(prog: str) -> None:
    missing = []
    for path, p in _walk(_parsers()[prog](), prog):
        assert p.description is None or "``" not in p.description, f"{path}: raw reST"
        assert p.description is None or ":class:" not in p.description, f"{path}: raw reST"
        for a in p._actions:
            if isinstance(a, argparse._HelpAction | argparse._SubParsersAction):
                continue
            flag = isinstance(a, argparse._StoreTrueAction | argparse._StoreFalseAction)
            if a.help == argparse.SUPPRESS:
                continue
            name = "/".join(a.option_strings) or a.dest
            if not a.help:
                missing.append(f"{path} {name}: no help")
                continue
            has_default = (
                a.default not in (None, False, [], argparse.SUPPRESS)
                and not a.required
                and not flag
            )
            if has_default and "default" not in a.help:
                missing.append(f"{path} {name}: default {a.default!r} not stated")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    "module",
    ["aggregator.cli", "aggregator.admin", "client.cli", "dp.audit", "aggregator.he_service",
     "aggregator.keyholder", "client.committee_agent"],
)  # fmt: skip
def test_version(module: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", module, "--version"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"\d+\.\d+\.\d+|unknown", out.stdout), out.stdout


def test_missing_extra_is_named() -> None:
    msg = ops.missing_extra(ModuleNotFoundError("No module named 'grpc'", name="grpc"))
    assert "pip install 'secagg-dplora[grpc]'" in msg
    msg = ops.missing_extra(ModuleNotFoundError("x", name="dp_accounting.rdp"))
    assert "[audit]" in msg
    assert "[metrics]" in ops.missing_extra(ModuleNotFoundError("x", name="prometheus_client"))


def test_run_cli_turns_errors_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def parser() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(prog="t")

    def missing(_: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'tenseal'", name="tenseal")

    def bad(_: argparse.Namespace) -> int:
        raise ValueError("the input is wrong\nsecond line")

    def interrupted(_: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    def bug(_: argparse.Namespace) -> int:
        raise ZeroDivisionError("division by zero")

    assert ops.run_cli("t", parser, missing, []) == 2
    assert ops.run_cli("t", parser, bad, []) == 2
    assert ops.run_cli("t", parser, interrupted, []) == 130
    assert ops.run_cli("t", parser, bug, []) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "t: error: this command needs the 'he' extra (module 'tenseal' is missing): "
        "pip install 'secagg-dplora[he]'",
        "t: error: the input is wrong",
        "t: stopped by SIGINT",
        "t: internal error (ZeroDivisionError: division by zero); rerun with -v for the traceback",
    ]


def test_logs_carry_a_time_zone_or_are_json(capsys: pytest.CaptureFixture[str]) -> None:
    ops.setup_logging(False, "text")
    logging.getLogger("secagg.test").info("hello %s", "world")
    line = capsys.readouterr().err.strip()
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO secagg.test hello world$", line
    ), line
    ops.setup_logging(False, "json")
    logging.getLogger("secagg.test").warning("a %d", 1)
    doc = json.loads(capsys.readouterr().err)
    assert doc["level"] == "WARNING" and doc["message"] == "a 1" and doc["logger"] == "secagg.test"
    assert re.search(r"[+-]\d\d:\d\d$", doc["time"])
    logging.getLogger().handlers.clear()


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_waiting_client_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    """A client waiting for an aggregator that is not there: Ctrl-C or SIGTERM ends it with one
    line and status 128 + signal, no traceback."""
    from aggregator.consortium import init_consortium

    init_consortium(3, tmp_path / "c")
    import numpy as np

    np.save(tmp_path / "x.npy", np.zeros(4))
    p = _spawn(
        "client.cli", "join", "--aggregator", "127.0.0.1:9", "--consortium", str(tmp_path / "c"),
        "--id", "1", "--input", str(tmp_path / "x.npy"),
    )  # fmt: skip
    time.sleep(3.0)  # imports done, retrying the connection
    p.send_signal(sig)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 128 + sig, out
    assert "Traceback" not in out and f"stopped by {sig.name}" in out, out
