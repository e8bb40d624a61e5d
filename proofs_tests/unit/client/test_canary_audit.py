"""The one-run canary audit (issue 5) on the tiny model: an honest DP-SGD run is not flagged,
and runs with the noise or the clipping switched off, still claiming the intended epsilon, are
(their empirical epsilon lower bound exceeds the claim). Test seeds keep every run fixed."""

from __future__ import annotations

import pytest

from client.canary_audit import PRESETS, run_canary_audit
from client.training import InvalidTrainingConfig

SEED = 0


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["noise", "clip"])
def test_honest_run_is_not_flagged(preset: str) -> None:
    res = run_canary_audit(seed=SEED, **PRESETS[preset])
    assert res.broken is None
    assert 1.0 < res.upper_bound < 2.5  # a small claimed epsilon
    assert not res.flagged and res.lower_bound < res.upper_bound, res.to_dict()


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["noise", "clip"])
def test_broken_run_is_flagged(broken: str) -> None:
    res = run_canary_audit(
        seed=SEED, noise_off=broken == "noise", clip_off=broken == "clip", **PRESETS[broken]
    )
    assert res.broken == broken
    assert res.flagged and res.lower_bound > res.upper_bound, res.to_dict()
    assert res.correct >= 55 and res.guesses == 60


def test_bad_audit_settings_are_refused() -> None:
    with pytest.raises(InvalidTrainingConfig):
        run_canary_audit(m=10, k_pos=6, k_neg=6)
    with pytest.raises(InvalidTrainingConfig):
        run_canary_audit(noise_multiplier=0.0)
