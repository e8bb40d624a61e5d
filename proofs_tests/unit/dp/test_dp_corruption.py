"""DistributedDPConfig's corruption parameters (threats.md DP-10): validation, canonical form,
calibration arithmetic and what the events record."""

from __future__ import annotations

import math

import pytest

from dp._errors import InvalidParameter
from dp.accounting import DistributedDiscreteGaussianEvent, distributed_event
from dp.distributed import DistributedDPConfig, round_privacy


def _cfg(**kw: object) -> DistributedDPConfig:
    base: dict[str, object] = dict(
        l2_clip=1.0, dim=64, num_clients=10, min_survivors=6, noise_multiplier=1.0, bits=20
    )
    base.update(kw)
    return DistributedDPConfig.calibrated(**base)  # type: ignore[arg-type]


def test_max_corrupt_and_calibration_are_validated() -> None:
    for bad in (-1, 6, 7, True, 1.0):
        with pytest.raises(InvalidParameter, match="max_corrupt"):
            _cfg(max_corrupt=bad)
    with pytest.raises(InvalidParameter, match="calibration"):
        _cfg(max_corrupt=1, calibration="half")


def test_canonical_form_carries_corruption_and_round_trips() -> None:
    cfg = _cfg(max_corrupt=2, calibration="all-survivors")
    raw = cfg.canonical_bytes()
    assert b'"max_corrupt":2' in raw and b'"calibration":"all-survivors"' in raw
    assert DistributedDPConfig.from_canonical(raw) == cfg
    assert _cfg(max_corrupt=2).canonical_bytes() != raw


def test_shares_split_over_honest_survivors_by_default() -> None:
    target = lambda c: (c.noise_multiplier * c.l2_clip * c.scale) ** 2  # noqa: E731
    honest, legacy, none = (
        _cfg(max_corrupt=2),
        _cfg(max_corrupt=2, calibration="all-survivors"),
        _cfg(),
    )
    assert honest.noise_shares == 4 and legacy.noise_shares == 6 and none.noise_shares == 6
    assert honest.local_noise_variance * 4 >= target(honest)
    assert math.isclose(legacy.local_noise_variance * 6, target(legacy), rel_tol=1e-6)
    assert honest.honest_noise_stddev(6) >= honest.target_stddev * (1 - 1e-9)
    assert legacy.honest_noise_stddev(6) < legacy.target_stddev
    rp = round_privacy(legacy, 8)
    assert (rp.num_survivors, rp.decoded_survivors, rp.assumed_corrupt) == (6, 8, 2)


def test_event_refuses_an_inconsistent_derivation() -> None:
    ev = distributed_event(round_privacy(_cfg(max_corrupt=2)))
    assert (ev.survivors, ev.decoded_survivors, ev.assumed_corrupt) == (4, 6, 2)
    with pytest.raises(InvalidParameter, match="honest shares"):
        DistributedDiscreteGaussianEvent(
            local_stddev=ev.local_stddev,
            survivors=6,
            participation_rate=1.0,
            l2_sensitivity=ev.l2_sensitivity,
            dimension=ev.dimension,
            decoded_survivors=6,
            assumed_corrupt=2,
        )
