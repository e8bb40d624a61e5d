"""The aggregator's k and t default to `secagg.params.choose_parameters` (issue 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.consortium import init_consortium
from secagg.params import choose_parameters


def test_without_threshold_a_tiny_consortium_is_refused_in_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_consortium(6, tmp_path / "c")
    rc = main(
        [
            "serve",
            "--consortium",
            str(tmp_path / "c"),
            "--state",
            str(tmp_path / "s"),
            "--output",
            str(tmp_path / "o"),
            "--dimension",
            "10",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "pass --threshold" in err and "Traceback" not in err


def test_defaults_pass_the_client_policy_at_scale() -> None:
    from secagg import ClientPolicy, RoundConfig

    choice = choose_parameters(1000, 0.1, 0.1)
    k = None if choice.k >= 999 else choice.k
    ClientPolicy(max_corrupt=choice.c).check(RoundConfig(n=1000, t=choice.t, d=8, k=k))
