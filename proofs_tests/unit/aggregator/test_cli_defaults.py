"""The aggregator's parameters agree with its members' default policy (issue 15): what it picks
by itself is accepted, what members would refuse is refused at start-up with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.consortium import init_consortium
from aggregator.parameters import client_policy, resolve
from protos.consortium import load_consortium
from secagg import ConfigError, RoundConfig


def _serve(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "serve",
        "--consortium",
        str(tmp_path / "c"),
        "--state",
        str(tmp_path / "s"),
        "--output",
        str(tmp_path / "o"),
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--dimension", "10", "--threshold", "1"], "every client would refuse these rounds: "
         "threshold t=1 too low for k=5 with 1 corrupt neighbours: need t >= 4"),
        (["--dimension", "1000000000"], "above the maximum"),
        (["--dimension", "10", "--threshold", "9"], "cannot run with 6 members"),
        (["--dimension", "10", "--neighbors", "3"], "ring degree must be even"),
    ],
)  # fmt: skip
def test_parameters_members_would_refuse_are_refused_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    init_consortium(6, tmp_path / "c")
    rc = main(_serve(tmp_path, *extra))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s").exists()  # refused before anything is written


@pytest.mark.parametrize("members", [3, 4, 6, 7, 12])
def test_automatic_parameters_pass_every_members_default_policy(
    tmp_path: Path, members: int
) -> None:
    init_consortium(members, tmp_path / "c")
    signed = load_consortium(tmp_path / "c").signed
    params = resolve(signed, d=10, threshold=None, neighbors=None, expected_dropout=0.1)
    client_policy(signed).check(RoundConfig(n=members, t=params.t, d=10, k=params.k))
    assert "parameters for n=" in params.note


def test_a_consortium_too_small_for_any_round_is_refused_in_one_sentence(
    tmp_path: Path,
) -> None:
    init_consortium(2, tmp_path / "c")
    signed = load_consortium(tmp_path / "c").signed
    with pytest.raises(ConfigError, match="below the smallest cohort clients accept"):
        resolve(signed, d=10, threshold=None, neighbors=None, expected_dropout=0.1)
