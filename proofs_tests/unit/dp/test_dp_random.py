"""Randomness sources: the OS CSPRNG in production, seeded streams refused outside test mode."""

from __future__ import annotations

import os

import numpy as np
import pytest

import dp._random as dprandom
from dp import (
    DistributedDPConfig,
    InsecureRandomness,
    InvalidParameter,
    OsRandom,
    RandomSource,
    SeededRandom,
    encode,
    require_csprng,
)
from dp._random import (
    random_bits,
    uniform_below,
    uniform_floats,
    uniform_u64,
)

SEED = bytes(range(16))


def config(allow_seeded_rng: bool) -> DistributedDPConfig:
    return DistributedDPConfig.calibrated(
        l2_clip=1.0,
        dim=8,
        num_clients=4,
        min_survivors=2,
        noise_multiplier=1.0,
        bits=20,
        allow_seeded_rng=allow_seeded_rng,
    )


def test_sources_satisfy_the_protocol() -> None:
    assert isinstance(OsRandom(), RandomSource)
    assert isinstance(SeededRandom(1), RandomSource)
    assert OsRandom.deterministic is False
    assert SeededRandom.deterministic is True


def test_seeded_source_is_reproducible_and_seed_sensitive() -> None:
    assert SeededRandom(b"a").bytes(64) == SeededRandom(b"a").bytes(64)
    assert SeededRandom(b"a").bytes(64) != SeededRandom(b"b").bytes(64)
    assert SeededRandom(7).bytes(32) == SeededRandom(7).bytes(32)
    assert SeededRandom("x").bytes(32) == SeededRandom(b"x").bytes(32)
    stream = SeededRandom(3)
    assert stream.bytes(16) + stream.bytes(16) == SeededRandom(3).bytes(32)


def test_require_csprng_refuses_deterministic_and_unflagged_sources() -> None:
    require_csprng(OsRandom())
    with pytest.raises(InsecureRandomness):
        require_csprng(SeededRandom(0))

    class Unflagged:
        def bytes(self, n: int) -> bytes:
            return bytes(n)

    with pytest.raises(InsecureRandomness):
        require_csprng(Unflagged())
    require_csprng(SeededRandom(0), allow_seeded=True)


def test_production_encode_refuses_a_seeded_source() -> None:
    """threats.md DP-04: a user-settable seed is allowed only in a test-mode configuration."""
    x = np.ones(8)
    with pytest.raises(InsecureRandomness):
        encode(x, config(allow_seeded_rng=False), SEED, SeededRandom(1))
    out = encode(x, config(allow_seeded_rng=True), SEED, SeededRandom(1))
    assert out.dtype == np.uint32


def test_default_source_reads_os_urandom(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.urandom

    def spy(n: int) -> bytes:
        calls.append(n)
        return real(n)

    monkeypatch.setattr(dprandom.os, "urandom", spy)
    encode(np.ones(8), config(allow_seeded_rng=False), SEED)  # rng defaults to OsRandom
    assert sum(calls) > 0


def test_uniform_derivations() -> None:
    rng = SeededRandom("uniform")
    f = uniform_floats(rng, 100_000)
    assert f.min() >= 0.0 and f.max() < 1.0
    assert abs(f.mean() - 0.5) < 0.005
    bits = random_bits(rng, 100_001)
    assert bits.shape == (100_001,) and abs(bits.mean() - 0.5) < 0.01
    assert uniform_u64(rng, 3).dtype == np.uint64
    assert uniform_floats(rng, 0).shape == (0,)


@pytest.mark.parametrize("bound", [1, 2, 3, 7, 64, 1000, 2**40 + 3])
def test_uniform_below_is_in_range_and_uniform(bound: int) -> None:
    x = uniform_below(SeededRandom(f"below/{bound}"), bound, 60_000)
    assert x.dtype == np.int64 and x.min() >= 0 and x.max() < bound
    if bound <= 1000:
        counts = np.bincount(x, minlength=bound)
        expected = x.size / bound
        stat = float(np.sum((counts - expected) ** 2 / expected))
        assert stat < bound - 1 + 6 * np.sqrt(2 * max(bound - 1, 1)) + 10


def test_uniform_below_rejects_bad_bounds() -> None:
    with pytest.raises(InvalidParameter):
        uniform_below(SeededRandom(0), 0, 3)
    with pytest.raises(InvalidParameter):
        uniform_below(SeededRandom(0), 2**63, 3)
    with pytest.raises(InvalidParameter):
        uniform_floats(SeededRandom(0), -1)


def test_no_global_or_non_cryptographic_rng_in_dp() -> None:
    """threats.md DP-04 / SA-10: nothing in dp/ imports ``random`` or touches ``numpy.random``."""
    import ast
    from pathlib import Path

    import dp

    offenders = []
    for path in sorted(Path(dp.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Attribute) and node.attr == "random":
                base = node.value
                is_numpy = isinstance(base, ast.Name) and base.id in ("np", "numpy")
                names = ["numpy.random"] if is_numpy else []
            else:
                continue
            bad = [n for n in names if n == "random" or n.startswith("numpy.random")]
            offenders += [f"{path.name}:{node.lineno}: {n}" for n in bad]
    assert not offenders, offenders
