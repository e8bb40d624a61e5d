"""The verification bound of a DP-LoRA round (aggregator/fl.py, protocol.md §7): what an honest
distributed-DP encoder produces stays within it, it is not absurdly loose, and a round of
DP-encoded vectors with verification on decodes to the same sum as one without."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from aggregator.fl import FlParams, _noise_norm_bound, choose_dp_config, verification_norm_bound
from dp import DistributedDPConfig, SeededRandom, decode, encode
from dp.noise import discrete_gaussian, skellam
from proofs_tests.support import make_round, run_honest
from secagg import RoundConfig
from secagg.verify_round import squared_norm


def _cfg(dim: int, mechanism: str = "gaussian", z: float = 0.3) -> DistributedDPConfig:
    return DistributedDPConfig.calibrated(
        l2_clip=1.0,
        noise_multiplier=z,
        dim=dim,
        num_clients=4,
        min_survivors=3,
        mechanism=mechanism,  # type: ignore[arg-type]
        bits=20,
        allow_seeded_rng=True,
    )


def _centred(ring: npt.NDArray[np.uint32], bits: int) -> npt.NDArray[np.int64]:
    r = ring.astype(np.int64)
    return np.where(r >= 1 << (bits - 1), r - (1 << bits), r)


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_honest_encodings_stay_within_the_bound(mechanism: str) -> None:
    cfg = _cfg(200, mechanism)
    bound = verification_norm_bound(cfg)
    rng = SeededRandom(b"fl-bound")
    gen = np.random.default_rng(0)
    for i in range(40):
        x = gen.normal(size=200)
        x *= 5.0 / np.linalg.norm(x) if i % 2 else 1.0  # half of them far beyond the clip
        ring = encode(x, cfg, bytes(16), rng)
        assert squared_norm(_centred(ring, cfg.bits)) <= bound
    # Not absurdly loose: within a small factor of the expected squared norm (the Skellam
    # bound goes through a maximum and Bernstein's inequality: looser at small d).
    expected = cfg.rounded_l2_bound**2 + cfg.encoded_dim * cfg.local_noise_variance
    assert expected < bound < (4 if mechanism == "gaussian" else 10) * expected


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_noise_norm_tail_is_conservative(mechanism: str) -> None:
    """With a generous tail (1/4) the noise-norm bound must fail at most that often; it fails
    far less (the bounds are tail inequalities, not estimates)."""
    cfg = _cfg(256, mechanism, z=1.0)
    nb = _noise_norm_bound(cfg, 0.25)
    rng = SeededRandom(b"noise-tail")
    sample = skellam if mechanism == "skellam" else discrete_gaussian
    over = sum(
        math.sqrt(squared_norm(sample(cfg.local_noise_parameter, 256, rng))) > nb
        for _ in range(200)
    )
    assert over <= 50


def test_bound_fits_64_bits_for_the_demo_sizes_and_refuses_bad_tails() -> None:
    params = FlParams(l2_clip=10.0, noise_multiplier=0.005)
    cfg = choose_dp_config(190_000, 6, 4, params)  # about SmolLM2's FFA-LoRA adapter
    assert 0 < verification_norm_bound(cfg) < 1 << 64
    for tail in (0.0, 1.0, -1.0):
        with pytest.raises(ValueError):
            verification_norm_bound(cfg, tail)


def test_verified_round_of_dp_encodings_decodes_like_an_unverified_one() -> None:
    dp_cfg = _cfg(100)
    gen = np.random.default_rng(1)
    rng = SeededRandom(b"fl-round")
    ring = {u: encode(gen.normal(size=100), dp_cfg, bytes(16), rng) for u in (1, 2, 3, 4)}
    bound = verification_norm_bound(dp_cfg)
    sums = []
    for norm_bound in (None, bound):
        cfg = RoundConfig(n=4, t=2, d=dp_cfg.encoded_dim, bits=dp_cfg.bits, norm_bound=norm_bound)
        rnd = make_round(cfg, seed=2)
        rnd.inputs = dict(ring)
        server = run_honest(rnd)
        assert server.result.included == frozenset({1, 2, 3, 4})
        sums.append(server.result.ring_sum)
    assert np.array_equal(sums[0], sums[1])
    want = sum(r.astype(np.int64) for r in ring.values()) % (1 << dp_cfg.bits)
    assert np.array_equal(sums[1], want)
    dec = decode(sums[1], dp_cfg, bytes(16), 4)
    assert dec.values.shape == (100,)


def test_choose_dp_config_widens_the_ring_instead_of_refusing_small_noise() -> None:
    """A ring too small for the noise (WrapAroundRisk) must make the search try wider rings."""
    from aggregator.fl import FlParams, choose_dp_config

    cfg = choose_dp_config(184_320, 8, 5, FlParams(l2_clip=5.0, noise_multiplier=0.005))
    assert cfg.bits > 12
