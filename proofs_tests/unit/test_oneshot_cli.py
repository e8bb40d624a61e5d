"""The one-shot variant's switches and wire conversions: one setting selects it, verification
is refused with a clear error (SPEC.md O9), and the wire refuses malformed parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aggregator.cli import main as aggregator_main
from aggregator.oneshot_service import choose_committee
from client.cli import main as client_main
from proofs_tests.oneshot_helpers import grid_input, make_round
from protos import oneshot_wire as wire
from secagg.he import simulate_round
from secagg.oneshot import OneShotConfig, OneShotSimulationResult


def test_verification_is_refused_with_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = aggregator_main(["serve", "--protocol", "oneshot", "--norm-bound", "9", "--dimension", "8",
                          "--consortium", str(tmp_path), "--state", str(tmp_path / "s"),
                          "--output", str(tmp_path / "o")])  # fmt: skip
    assert rc == 2 and "not available with --protocol oneshot" in capsys.readouterr().err
    x = tmp_path / "x.npy"
    np.save(x, np.zeros(8))
    rc = client_main(["join", "--protocol", "oneshot", "--require-verification", "--consortium",
                      str(tmp_path), "--id", "1", "--input", str(x)])  # fmt: skip
    assert rc == 2 and "without norm proofs" in capsys.readouterr().err


def test_one_setting_selects_the_protocol() -> None:
    cfg = OneShotConfig(n=4, d=50, committee=(1, 2, 3), threshold=2)
    inputs = [grid_input(cfg, u) for u in range(1, 5)]
    res = simulate_round(cfg, inputs, {"upload": [4]}, seed=2)
    assert isinstance(res, OneShotSimulationResult) and res.included == frozenset({1, 2, 3})


def test_committee_choice_is_per_session_and_within_candidates() -> None:
    a = choose_committee(range(1, 20), bytes(16), 5)
    b = choose_committee(range(1, 20), bytes([1]) * 16, 5)
    assert len(a) == 5 and set(a) <= set(range(1, 20)) and a != b and a == tuple(sorted(a))


def test_wire_round_trips_and_refuses_malformed_parts() -> None:
    r = make_round(n=5, d=5000)
    cfg = r.cfg
    assert wire.config_from_pb(wire.config_to_pb(cfg)).digest == cfg.digest
    bad = wire.config_to_pb(cfg)
    bad.threshold = 1  # t_c <= c/2
    with pytest.raises(wire.WireError):
        wire.config_from_pb(bad)
    bad = wire.config_to_pb(cfg)
    bad.n = cfg.n + 1  # digest no longer matches
    with pytest.raises(wire.WireError):
        wire.config_from_pb(bad)
    up = r.upload(1)
    parts = list(wire.upload_parts(up))
    asm = wire.UploadAssembler(cfg)
    for p in parts:
        asm.add(p)
    assert asm.upload() == up
    for mutate in ("order", "mixed", "extra", "header", "shares"):
        ps = list(wire.upload_parts(up))
        ps.append(
            type(ps[0])(
                round=up.round,
                session_id=up.session_id,
                sender=up.client_id,
                index=len(ps),
                masked=b"x",
            )
        )
        asm = wire.UploadAssembler(cfg)
        if mutate == "order":
            ps[0].index = 1
        elif mutate == "mixed":
            ps[-1].sender = 2
        elif mutate == "header":
            ps[-1].signature = bytes(64)
        elif mutate == "shares":
            del ps[0].shares[-1]
        with pytest.raises(wire.WireError):
            for p in ps:
                asm.add(p)
            asm.upload()
    key = wire.member_key_to_pb(r.keys[0])
    key.public_key = key.public_key[:31]
    with pytest.raises(wire.WireError):
        wire.member_key_from_pb(key)
