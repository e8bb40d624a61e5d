"""Distributed-DP encoder/decoder: configuration checks, ring sizing, dropouts, privacy helper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dp import (
    WRAP_PROBABILITY,
    DistributedDPConfig,
    InsufficientSurvivors,
    InvalidParameter,
    InvalidVector,
    PrivacyError,
    RoundingFailure,
    SeededRandom,
    WrapAroundRisk,
    choose_bits,
    choose_scale,
    clip_l2,
    decode,
    discrete_gaussian,
    encode,
    round_privacy,
    skellam,
)
from dp._bounds import log_tail_skellam, log_tail_subgaussian
from dp.distributed import _conditional_round, _sum_squares

SEED = b"public-round-seed-01"
BASE = {
    "l2_clip": 1.0,
    "noise_multiplier": 1.0,
    "dim": 100,
    "num_clients": 10,
    "min_survivors": 5,
}


def make(**overrides: object) -> DistributedDPConfig:
    kw: dict[str, object] = {**BASE, "allow_seeded_rng": True}
    kw.update(overrides)
    if "scale" in kw:
        return DistributedDPConfig(**kw)  # type: ignore[arg-type]
    return DistributedDPConfig.calibrated(**kw)  # type: ignore[arg-type]


def ring_sum(vectors: list[np.ndarray], modulus: int) -> np.ndarray:
    acc = np.zeros_like(vectors[0], dtype=np.uint64)
    for v in vectors:
        acc = (acc + v.astype(np.uint64)) % np.uint64(modulus)
    return acc.astype(np.uint32)


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"l2_clip": 0.0},
        {"l2_clip": float("inf")},
        {"noise_multiplier": -1.0},
        {"noise_multiplier": float("nan")},
        {"dim": 0},
        {"dim": 3.0},
        {"num_clients": 0},
        {"min_survivors": 0},
        {"min_survivors": 11},
        {"mechanism": "laplace"},
        {"rotation": "dct"},
        {"beta": 1.0},
        {"beta": -0.1},
        {"bits": 33},
        {"bits": 1},
        {"bits": True},
        {"scale": 0.0},
        {"scale": float("nan")},
        {"allow_seeded_rng": 1},
    ],
)
def test_invalid_parameters_raise(overrides: dict[str, object]) -> None:
    kw: dict[str, object] = {**BASE, "scale": 1024.0, "bits": 32, **overrides}
    with pytest.raises(InvalidParameter):
        DistributedDPConfig(**kw)  # type: ignore[arg-type]


def test_errors_share_one_base() -> None:
    for err in (InvalidParameter, InvalidVector, WrapAroundRisk, InsufficientSurvivors):
        assert issubclass(err, PrivacyError)
    assert issubclass(InvalidParameter, ValueError)


def test_calibrated_takes_exactly_one_noise_setting() -> None:
    a = make(noise_multiplier=None, target_stddev=2.5, l2_clip=0.5)
    assert a.noise_multiplier == pytest.approx(5.0)
    assert a.target_stddev == pytest.approx(2.5)
    with pytest.raises(InvalidParameter):
        make(target_stddev=1.0)  # noise_multiplier also given (from BASE)
    with pytest.raises(InvalidParameter):
        make(noise_multiplier=None)


def test_tiny_discrete_gaussian_shares_are_refused() -> None:
    """KLS21 needs sigma >= 1/2 per share; a coarse grid would silently violate it."""
    with pytest.raises(InvalidParameter):
        make(scale=0.25)


# --- ring size ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_choose_bits_is_minimal_and_keeps_wrap_below_bound(mechanism: str) -> None:
    kw = {**BASE, "mechanism": mechanism, "scale": 2.0**10}
    bits = choose_bits(**kw)  # type: ignore[arg-type]
    cfg = DistributedDPConfig(**kw, bits=bits)  # type: ignore[arg-type]
    assert cfg.wrap_probability < WRAP_PROBABILITY
    with pytest.raises(WrapAroundRisk):
        DistributedDPConfig(**kw, bits=bits - 1)  # type: ignore[arg-type]


def test_choose_bits_refuses_more_than_32_bits() -> None:
    with pytest.raises(WrapAroundRisk):
        choose_bits(**BASE, scale=2.0**40)  # type: ignore[arg-type]
    with pytest.raises(WrapAroundRisk):
        DistributedDPConfig(**BASE, scale=2.0**40)  # type: ignore[arg-type]


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
@pytest.mark.parametrize("bits", [16, 24, 32])
def test_choose_scale_is_the_largest_safe_power_of_two(mechanism: str, bits: int) -> None:
    kw = {**BASE, "mechanism": mechanism, "bits": bits}
    scale = choose_scale(**kw)  # type: ignore[arg-type]
    assert math.frexp(scale)[0] == 0.5  # a power of two
    assert DistributedDPConfig(**kw, scale=scale).wrap_probability < WRAP_PROBABILITY  # type: ignore[arg-type]
    with pytest.raises(WrapAroundRisk):
        DistributedDPConfig(**kw, scale=2 * scale)  # type: ignore[arg-type]


def test_choose_scale_refuses_a_ring_too_small_for_the_noise() -> None:
    with pytest.raises(WrapAroundRisk):
        choose_scale(**{**BASE, "num_clients": 2000, "min_survivors": 1000}, bits=12)  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma2", [2.0, 150.0])
def test_tail_bounds_dominate_monte_carlo(sigma2: float) -> None:
    shares = 4
    rng = SeededRandom(f"tails/{sigma2}")
    dg = sum(discrete_gaussian(sigma2, 50_000, rng) for _ in range(shares))
    sk = sum(skellam(sigma2, 50_000, rng) for _ in range(shares))
    sd = math.sqrt(shares * sigma2)
    for k in (1.0, 2.0, 3.0):
        a = math.ceil(k * sd)
        assert np.mean(dg >= a) <= math.exp(log_tail_subgaussian(a, shares * sigma2))
        assert np.mean(sk >= a) <= math.exp(log_tail_skellam(a, shares * sigma2))


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_adversarial_inputs_with_noise_never_wrap(mechanism: str) -> None:
    """Every client puts its whole norm in one coordinate; the sum must still decode."""
    kw = {**BASE, "dim": 16, "rotation": "none", "mechanism": mechanism, "scale": 2.0**6}
    bits = choose_bits(**kw)  # type: ignore[arg-type]
    cfg = DistributedDPConfig(**kw, bits=bits, allow_seeded_rng=True)  # type: ignore[arg-type]
    spike = np.zeros(16)
    spike[0] = 5.0  # clipped to 1.0
    rng = SeededRandom(f"spike/{mechanism}")
    sd = cfg.noise_stddev(cfg.num_clients)
    for sign in (1.0, -1.0):
        for _ in range(20):
            enc = [encode(sign * spike, cfg, SEED, rng) for _ in range(cfg.num_clients)]
            out = decode(ring_sum(enc, cfg.modulus), cfg, SEED, cfg.num_clients)
            assert abs(out.values[0] - sign * cfg.num_clients) < 8 * sd + 0.01


# --- encode / decode ------------------------------------------------------------------------------


def test_encode_output_shape_dtype_and_range() -> None:
    cfg = make(bits=20)
    out = encode(np.linspace(-1, 1, 100), cfg, SEED, SeededRandom(1))
    assert out.dtype == np.uint32
    assert out.shape == (cfg.encoded_dim,) == (128,)
    assert int(out.max()) < 2**20


@pytest.mark.parametrize(
    "vector",
    [
        np.full(100, np.nan),
        np.concatenate([np.zeros(99), [np.inf]]),
        np.zeros(99),
        np.zeros((10, 10)),
        np.array(["a"] * 100),
    ],
)
def test_encode_rejects_bad_vectors(vector: np.ndarray) -> None:
    with pytest.raises(InvalidVector):
        encode(vector, make(), SEED, SeededRandom(1))


def test_encode_rejects_a_short_round_seed() -> None:
    with pytest.raises(InvalidParameter):
        encode(np.zeros(100), make(), b"short", SeededRandom(1))


@pytest.mark.parametrize(
    "ring",
    [
        np.zeros(128, dtype=np.float64),
        np.zeros(127, dtype=np.uint32),
        np.zeros(128, dtype=bool),
        np.full(128, -1, dtype=np.int64),
        np.full(128, 2**20, dtype=np.uint32),
        np.full(128, 2**63, dtype=np.uint64),
    ],
)
def test_decode_rejects_bad_ring_vectors(ring: np.ndarray) -> None:
    with pytest.raises(InvalidVector):
        decode(ring, make(bits=20), SEED, 5)


def test_decode_refuses_fewer_survivors_than_calibrated() -> None:
    """threats.md DP-10: below t survivors the sum is under-noised, so decoding aborts."""
    cfg = make()
    ring = np.zeros(cfg.encoded_dim, dtype=np.uint32)
    with pytest.raises(InsufficientSurvivors):
        decode(ring, cfg, SEED, cfg.min_survivors - 1)
    with pytest.raises(InvalidParameter):
        decode(ring, cfg, SEED, cfg.num_clients + 1)
    assert decode(ring, cfg, SEED, cfg.min_survivors).values.shape == (cfg.dim,)


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_noise_variance_never_below_target_with_dropouts(mechanism: str) -> None:
    for scale in (2.0, 4.0, 64.0, 2.0**20):  # scale 2: share sigma^2 = 0.8, still inflated
        cfg = make(mechanism=mechanism, scale=scale, bits=32)
        target_int = (cfg.noise_multiplier * cfg.l2_clip * cfg.scale) ** 2
        for s in range(cfg.min_survivors, cfg.num_clients + 1):
            assert s * cfg.local_noise_variance >= target_int * (1 - 1e-12)
            assert cfg.noise_stddev(s) >= cfg.target_stddev * (1 - 1e-12)
        with pytest.raises(InsufficientSurvivors):
            cfg.noise_stddev(cfg.min_survivors - 1)


def test_small_discrete_gaussian_shares_are_inflated_to_reach_the_variance() -> None:
    cfg = make(scale=1.0, noise_multiplier=0.8, min_survivors=2)  # share sigma^2 = 0.32
    target = 0.8**2 / 2
    assert cfg.local_noise_parameter > target  # N_Z(0, 0.32) alone has variance < 0.32
    assert cfg.local_noise_variance >= target


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_empirical_noise_with_t_survivors_meets_target(mechanism: str) -> None:
    cfg = make(mechanism=mechanism, dim=4096, num_clients=6, min_survivors=3, bits=24)
    rng = SeededRandom(f"dropouts/{mechanism}")
    enc = [encode(np.zeros(cfg.dim), cfg, SEED, rng) for _ in range(cfg.num_clients)]
    for s in (3, 4, 6):
        out = decode(ring_sum(enc[:s], cfg.modulus), cfg, SEED, s)
        var = float(np.var(out.values))
        expected = (s / cfg.min_survivors) * cfg.target_stddev**2
        assert out.noise_stddev**2 == pytest.approx(expected, rel=1e-6)
        assert abs(var / expected - 1) < 5 * math.sqrt(2 / cfg.dim)  # sd of a sample variance
    assert out.mean.shape == (cfg.dim,)


def test_clip_l2() -> None:
    np.testing.assert_array_equal(clip_l2(np.array([0.3, 0.4]), 1.0), [0.3, 0.4])
    huge = clip_l2(np.array([1e300, -1e300, 1e300]), 2.0)
    assert np.linalg.norm(huge) == pytest.approx(2.0)
    assert not clip_l2(np.zeros(4), 1.0).any()
    with pytest.raises(InvalidVector):
        clip_l2(np.array([np.nan]), 1.0)
    with pytest.raises(InvalidVector):
        clip_l2(["x"], 1.0)


def test_conditional_rounding_respects_the_norm_bound() -> None:
    rng = SeededRandom("rounding")
    y = np.random.default_rng(0).normal(size=257)  # test data only
    y *= 30.0 / np.linalg.norm(y)
    max_sq = 30**2 + 40  # well below the unconditional (30 + sqrt(257))^2
    for _ in range(50):
        r = _conditional_round(y, max_sq, rng)
        assert _sum_squares(r) <= max_sq
        assert np.all(np.abs(r - y) < 1.0)
    with pytest.raises(RoundingFailure):
        _conditional_round(np.full(64, 0.5), 0, rng)


def test_sum_squares_is_exact_near_the_limits() -> None:
    r = np.array([2**31 - 1, -(2**31 - 1), 3, -7] * 1000, dtype=np.int64)
    assert _sum_squares(r) == sum(int(v) ** 2 for v in r)


def test_canonical_bytes() -> None:
    a, b = make(), make()
    assert a.canonical_bytes() == b.canonical_bytes()
    assert make(bits=24).canonical_bytes() != a.canonical_bytes()
    ints = DistributedDPConfig(**{**BASE, "l2_clip": 1}, scale=a.scale, allow_seeded_rng=True)  # type: ignore[arg-type]
    assert ints.canonical_bytes() == a.canonical_bytes()  # 1 and 1.0 are the same parameter
    doc = json.loads(a.canonical_bytes())
    assert float.fromhex(doc["scale"]) == a.scale


# --- privacy of one round -------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
def test_round_privacy_approaches_the_gaussian_at_fine_scales(mechanism: str) -> None:
    cfg = make(mechanism=mechanism, noise_multiplier=2.0)
    rp = round_privacy(cfg)
    assert rp.num_survivors == cfg.min_survivors
    assert rp.l2_sensitivity >= cfg.l2_clip * cfg.scale
    assert rp.rho == pytest.approx(1 / (2 * 2.0**2), rel=1e-3)
    for order in (1.5, 2.0, 8.0, 64.0):
        assert rp.rdp(order) <= order * rp.rho * (1 + 1e-12)
    assert round_privacy(cfg, cfg.num_clients).rho < rp.rho  # more shares, more noise
    with pytest.raises(InsufficientSurvivors):
        round_privacy(cfg, cfg.min_survivors - 1)
    with pytest.raises(InvalidParameter):
        rp.rdp(1.0)


def test_round_privacy_charges_tau_for_small_shares() -> None:
    cfg = make(scale=1.0, noise_multiplier=2.0, min_survivors=5)  # share sigma ~ 0.9
    rp = round_privacy(cfg)
    assert rp.tau > 0
    ideal = rp.l2_sensitivity**2 / (2 * rp.num_survivors * rp.local_noise_parameter)
    assert rp.rho > ideal


def test_round_privacy_without_noise_is_infinite() -> None:
    rp = round_privacy(make(noise_multiplier=0.0))
    assert rp.rho == math.inf and rp.rdp(2.0) == math.inf


@pytest.mark.parametrize("mechanism", ["gaussian", "skellam"])
@pytest.mark.parametrize("scale", [2.0, 2.0**12])
def test_round_privacy_agrees_with_the_accountant(mechanism: str, scale: float) -> None:
    """The encoder's per-round bound and dp.accounting's event curve are the same numbers."""
    from dp import accounting

    cfg = make(mechanism=mechanism, scale=scale, noise_multiplier=1.5)
    for s in (cfg.min_survivors, cfg.num_clients):
        rp = round_privacy(cfg, s)
        event = accounting.distributed_event(rp)
        curve = (accounting.ddg_rdp if mechanism == "gaussian" else accounting.skellam_rdp)(
            event,  # type: ignore[arg-type]
            (2, 8, 32),
        )
        ours = [rp.rdp(order) for order in (2, 8, 32)]
        np.testing.assert_allclose(curve, ours, rtol=1e-9)


def test_absurd_scales_fail_cleanly() -> None:
    with pytest.raises(WrapAroundRisk):
        DistributedDPConfig(**BASE, scale=2.0**1000)  # type: ignore[arg-type]
    with pytest.raises(WrapAroundRisk):
        choose_bits(**{**BASE, "noise_multiplier": 1e200}, scale=1.0)  # type: ignore[arg-type]
    huge_clip = choose_scale(**{**BASE, "l2_clip": 1e300})  # type: ignore[arg-type]
    assert huge_clip * 1e300 < 2**31


def test_canonical_bytes_round_trip_and_refuse_edits() -> None:
    """The public DP parameters travel as canonical bytes (bound into dp_digest); a client
    rebuilds and re-validates them, and refuses anything not exactly canonical."""
    from dp import InvalidParameter as Bad
    from dp.distributed import DistributedDPConfig as Cfg

    cfg = Cfg.calibrated(
        l2_clip=1.0, dim=1000, num_clients=6, min_survivors=4, noise_multiplier=0.8, bits=24
    )
    raw = cfg.canonical_bytes()
    assert Cfg.from_canonical(raw) == cfg
    for bad in (
        raw.replace(b'"bits":24', b'"bits":25'),  # valid JSON, no longer canonical for the rest?
        raw.replace(b"dp/v1/distributed", b"dp/v0/x"),
        raw[:-1],
        b"[]",
        raw.replace(b'"dim":1000,', b""),
    ):
        if bad == raw:
            continue
        try:
            got = Cfg.from_canonical(bad)
        except (Bad, ValueError):
            continue
        assert got.canonical_bytes() == bad  # only an equally valid, different config passes
