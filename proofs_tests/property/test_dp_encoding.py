"""Property tests of the distributed-DP encoding (hypothesis).

With the noise off, encode -> ring sum over any survivors -> decode returns the sum of the
clipped inputs within the stated rounding bound, for every shape, clip, ring size and rotation;
decoded shapes match the input; a single client never decodes to more than the clip.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dp import DistributedDPConfig, SeededRandom, clip_l2, decode, encode

SEED = b"hypothesis-round-seed"
COORD = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)


@st.composite
def rounds(draw: st.DrawFn) -> tuple[DistributedDPConfig, list[np.ndarray], int]:
    dim = draw(st.integers(1, 40))
    n = draw(st.integers(1, 6))
    t = draw(st.integers(1, n))
    cfg = DistributedDPConfig.calibrated(
        l2_clip=draw(st.floats(0.01, 100.0)),
        dim=dim,
        num_clients=n,
        min_survivors=t,
        noise_multiplier=0.0,
        bits=draw(st.integers(8, 32)),
        beta=draw(st.sampled_from([0.0, 0.1, float(np.exp(-0.5))])),
        rotation=draw(st.sampled_from(["hadamard", "none"])),
        allow_seeded_rng=True,
    )
    vectors = [np.array(draw(st.lists(COORD, min_size=dim, max_size=dim))) for _ in range(n)]
    survivors = draw(st.integers(t, n))
    return cfg, vectors, survivors


def ring_sum(vectors: list[np.ndarray], modulus: int) -> np.ndarray:
    acc = np.zeros(vectors[0].shape, dtype=np.uint64)
    for v in vectors:
        acc = (acc + v.astype(np.uint64)) % np.uint64(modulus)
    return acc.astype(np.uint32)


@settings(max_examples=80, deadline=None)
@given(rounds(), st.integers(0, 2**32))
def test_round_trip_without_noise_is_within_the_bound(
    case: tuple[DistributedDPConfig, list[np.ndarray], int], seed: int
) -> None:
    cfg, vectors, survivors = case
    rng = SeededRandom(seed)
    encoded = [encode(v, cfg, SEED, rng) for v in vectors]
    for e in encoded:
        assert e.dtype == np.uint32 and e.shape == (cfg.encoded_dim,)
        assert int(e.max(initial=0)) < cfg.modulus
    out = decode(ring_sum(encoded[:survivors], cfg.modulus), cfg, SEED, survivors)
    assert out.values.shape == vectors[0].shape
    truth = sum(clip_l2(v, cfg.l2_clip) for v in vectors[:survivors])
    assert np.linalg.norm(out.values - truth) <= out.rounding_error_bound
    assert out.noise_stddev == 0.0


@settings(max_examples=60, deadline=None)
@given(rounds(), st.integers(0, 2**32))
def test_a_single_client_is_clipped(
    case: tuple[DistributedDPConfig, list[np.ndarray], int], seed: int
) -> None:
    cfg, vectors, _ = case
    single = DistributedDPConfig(
        l2_clip=cfg.l2_clip,
        noise_multiplier=0.0,
        dim=cfg.dim,
        num_clients=cfg.num_clients,
        min_survivors=1,
        scale=cfg.scale,
        bits=cfg.bits,
        beta=cfg.beta,
        rotation=cfg.rotation,
        allow_seeded_rng=True,
    )
    big = vectors[0] * 1e6 + 1.0  # far outside the clip
    out = decode(encode(big, single, SEED, SeededRandom(seed)), single, SEED, 1)
    assert np.linalg.norm(out.values) <= single.l2_clip + out.rounding_error_bound
    # the rounded integer vector itself obeys the conditional-rounding bound (the sensitivity)
    assert np.linalg.norm(out.values) * single.scale <= single.rounded_l2_bound * (1 + 1e-9)
