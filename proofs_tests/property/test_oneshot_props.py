"""Properties of the one-shot variant (SPEC.md O2..O7): exact ring arithmetic, sampling,
vector Shamir, residue packing, and whole rounds over n, c, t_c, d and drop schedules."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proofs_tests.oneshot_helpers import grid_input
from secagg import DeterministicRandom
from secagg._errors import EncodingError
from secagg.oneshot import OneShotConfig, OneShotInsufficient, error_bound, simulate_oneshot
from secagg.oneshot.ring import (
    CBD_ETA,
    NttTables,
    cbd_errors,
    crt_combine,
    lagrange_at_zero,
    ntt_prime_below,
    schoolbook_negacyclic,
    shamir_share,
    ternary,
    uniform_mod,
)
from secagg.oneshot.scheme import pack_residues, unpack_residues

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.sampled_from([2, 4, 8, 16, 32]), st.integers(12, 30), st.randoms(use_true_random=False))
def test_ntt_product_is_the_negacyclic_product(n: int, bits: int, rnd: random.Random) -> None:
    q = ntt_prime_below(bits, 2 * n)
    t = NttTables(q, n)
    a = [rnd.randrange(q) for _ in range(n)]
    b = [rnd.randrange(q) for _ in range(n)]
    A, B = (t.forward(np.array(v, dtype=np.uint64)) for v in (a, b))
    assert list(t.inverse(A * B % np.uint64(q))) == schoolbook_negacyclic(a, b, q)
    assert list(t.inverse(A)) == a


def test_ntt_of_the_real_ring_at_the_largest_prime_is_exact() -> None:
    """N = 2048 with a 31-bit prime: products near 2^62 stay exact in uint64."""
    q = ntt_prime_below(31, 4096)
    t = NttTables(q, 2048)
    rnd = random.Random(1)
    a = [q - 1 - rnd.randrange(3) for _ in range(2048)]
    b = [q - 1 - rnd.randrange(3) for _ in range(2048)]
    got = t.inverse(
        t.forward(np.array(a, dtype=np.uint64))
        * t.forward(np.array(b, dtype=np.uint64))
        % np.uint64(q)
    )
    # X^0 coefficient by hand (negacyclic convolution), and one more.
    ref = schoolbook_negacyclic(a, b, q)
    assert int(got[0]) == ref[0] and int(got[2047]) == ref[2047]


@FAST
@given(st.lists(st.integers(0, 2**62), min_size=1, max_size=50))
def test_crt_combine_gives_the_centred_representative(vals: list[int]) -> None:
    q1, q2 = ntt_prime_below(27, 4096), ntt_prime_below(26, 4096)
    q = q1 * q2
    vs = [v % q for v in vals]
    got = crt_combine(
        np.array([v % q1 for v in vs], dtype=np.uint64),
        np.array([v % q2 for v in vs], dtype=np.uint64),
        q1,
        q2,
    )
    want = [v - q if v > q // 2 else v for v in vs]
    assert got.tolist() == want


@FAST
@given(st.integers(1, 8), st.data())
def test_vector_shamir_any_t_shares_rebuild_and_sums_rebuild_sums(
    t: int, data: st.DataObject
) -> None:
    holders = data.draw(st.integers(t, 9))
    q = ntt_prime_below(23, 4096)
    rng = DeterministicRandom(data.draw(st.integers(0, 10**6)))
    s1 = uniform_mod(q, 64, rng=rng)
    s2 = uniform_mod(q, 64, rng=rng)
    sh1 = shamir_share(s1, q, t, holders, rng)
    sh2 = shamir_share(s2, q, t, holders, rng)
    pick = sorted(data.draw(st.lists(st.integers(1, holders), min_size=t, max_size=t, unique=True)))
    w = lagrange_at_zero(tuple(pick), q)
    qq = np.uint64(q)
    rec = (
        sum(
            (np.uint64(wj) * ((sh1[x - 1] + sh2[x - 1]) % qq) % qq for wj, x in zip(w, pick)),
            np.zeros(64, dtype=np.uint64),
        )
        % qq
    )
    assert np.array_equal(rec, (s1 + s2) % qq)


def test_fewer_than_t_shares_are_uniform_whatever_the_secret() -> None:
    """t - 1 shares are uniform and independent of the secret: over GF(7) with t = 3, the pair
    of shares at x = 1, 2 has the same (uniform) histogram for secret 0 and secret 5."""
    q, trials = 7, 9800
    rng = DeterministicRandom(3)
    for secret in (0, 5):
        sh = shamir_share(np.full(trials, secret, dtype=np.uint64), q, 3, 5, rng)
        pairs = (sh[0] * 7 + sh[1]).astype(np.int64)
        counts = np.bincount(pairs, minlength=49)
        assert counts.size == 49 and counts.min() > 200 - 5 * 14 and counts.max() < 200 + 5 * 14


@FAST
@given(st.integers(1, 3000), st.integers(0, 10**6))
def test_sampling_is_in_range_and_centred(count: int, seed: int) -> None:
    rng = DeterministicRandom(seed)
    q = ntt_prime_below(20, 4096)
    u = uniform_mod(q, count, rng=rng)
    assert u.dtype == np.uint64 and int(u.max()) < q
    s = ternary(count, rng)
    assert set(np.unique(s).tolist()) <= {-1, 0, 1}
    e = cbd_errors(count, rng)
    assert int(np.abs(e).max()) <= CBD_ETA


def test_cbd_has_the_stated_variance_and_public_a_is_reproducible() -> None:
    e = cbd_errors(200_000, DeterministicRandom(1))
    assert abs(e.var() - CBD_ETA / 2) < 0.2 and abs(e.mean()) < 0.05
    q = ntt_prime_below(24, 4096)
    a1 = uniform_mod(q, 1000, key=bytes(32))
    assert np.array_equal(a1, uniform_mod(q, 1000, key=bytes(32)))
    assert not np.array_equal(a1, uniform_mod(q, 1000, key=bytes(31) + b"\x01"))


@FAST
@given(st.integers(1, 5000), st.integers(16, 31), st.integers(16, 31), st.integers(0, 100))
def test_residue_packing_round_trips_and_refuses_out_of_range(
    count: int, b1: int, b2: int, seed: int
) -> None:
    primes = (ntt_prime_below(b1, 4096), ntt_prime_below(b2, 4096, 1 if b1 == b2 else 0))
    bits = (primes[0].bit_length(), primes[1].bit_length())
    rng = DeterministicRandom(seed)
    r = (uniform_mod(primes[0], count, rng=rng), uniform_mod(primes[1], count, rng=rng))
    raw = pack_residues(r, bits)
    back = unpack_residues(raw, count, primes, bits)
    assert np.array_equal(back[0], r[0]) and np.array_equal(back[1], r[1])
    bad = (r[0].copy(), r[1])
    bad[0][count // 2] = primes[0]  # = q: fits the bits, not the field
    with pytest.raises(EncodingError):
        unpack_residues(pack_residues(bad, bits), count, primes, bits)
    with pytest.raises(EncodingError):
        unpack_residues(raw[:-1], count, primes, bits)


@FAST
@given(st.integers(2, 100_000))
def test_parameters_cannot_wrap_and_errors_cannot_flip_a_rounding(n: int) -> None:
    cfg = OneShotConfig(n=n, d=10, committee=(1, 2, 3), threshold=2, min_cohort=2)
    ring, enc = cfg.ring, cfg.encoding
    assert ring.q.bit_length() <= 54  # HE Standard, 128-bit, N = 2048
    assert ring.delta * (n * enc.max_abs) + error_bound(n) < ring.q // 2  # no wrap
    assert 2 * error_bound(n) < ring.delta  # never flips a rounding
    assert all((p - 1) % (2 * ring.n) == 0 for p in ring.primes)


ROUND = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUND
@given(st.data())
def test_round_sum_is_numpys_over_the_included_clients(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 9), label="n")
    c = data.draw(st.integers(1, min(5, n)), label="c")
    t = data.draw(st.integers(c // 2 + 1, c), label="t_c")
    d = data.draw(st.sampled_from([1, 7, 2048, 2049, 4500]), label="d")
    committee = tuple(
        sorted(data.draw(st.lists(st.integers(1, n), min_size=c, max_size=c, unique=True)))
    )
    drops = set(data.draw(st.lists(st.integers(1, n), max_size=n, unique=True), label="drops"))
    spare = c - t
    gone_members = data.draw(st.lists(st.sampled_from(committee), max_size=c, unique=True))
    schedule: dict[str, set[int]] = {}
    for m in gone_members:
        schedule.setdefault(data.draw(st.sampled_from(["check", "sign", "release"])), set()).add(m)
    cfg = OneShotConfig(n=n, d=d, committee=committee, threshold=t, min_cohort=2)
    inputs = [grid_input(cfg, u) for u in range(1, n + 1)]
    survivors = n - len(drops)
    if survivors < 2 or len(gone_members) > spare:
        with pytest.raises(OneShotInsufficient):
            simulate_oneshot(cfg, inputs, drops, member_drops=schedule, seed=1)
        return
    res = simulate_oneshot(cfg, inputs, drops, member_drops=schedule, seed=1)
    assert res.included == frozenset(range(1, n + 1)) - drops
    want = sum(np.rint(inputs[u - 1] * cfg.encoding.scale).astype(np.int64) for u in res.included)
    assert np.array_equal(res.int_sum, want)
    np.testing.assert_allclose(
        res.aggregate, sum(inputs[u - 1] for u in res.included), atol=res.error_bound
    )
    assert len(res.decryptors) == t and not set(res.decryptors) & set(gone_members)


def test_off_grid_inputs_are_within_the_error_bound_and_clipped() -> None:
    cfg = OneShotConfig(n=5, d=3000, committee=(1, 2, 3), threshold=2)
    rng = np.random.default_rng(0)
    inputs = [rng.normal(0, 0.7, 3000) for _ in range(5)]
    res = simulate_oneshot(cfg, inputs, {3})
    want = sum(np.clip(inputs[u - 1], -1, 1) for u in res.included)
    assert np.abs(res.aggregate - want).max() <= res.error_bound
