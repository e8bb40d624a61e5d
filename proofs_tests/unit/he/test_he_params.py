"""The allow-list (threats.md HE-04), the round config and the packing layout."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts  # type: ignore[import-untyped]

from proofs_tests.he_helpers import REGISTRY, identity
from secagg import ConfigError, DeterministicRandom
from secagg.he import (
    ALLOWED_PARAMS,
    BFV_4096,
    CKKS_4096,
    DecryptionRefused,
    HeAccumulator,
    HeClient,
    HeParams,
    HeRoundConfig,
    HeScheme,
    InvalidCiphertext,
    PackingLayout,
    WeakParameters,
    get_params,
)
from secagg.he._ops import new_context, params_of, serialize_parameters, serialize_public
from secagg.he.params import HE_STANDARD_MAX_BITS

SESSION = bytes(range(16))
TAG_KEY = bytes([9]) + bytes(31)  # the X25519 base point: a well-formed tag key


def _keyless(ctx: ts.Context) -> bytes:
    return serialize_parameters(ctx)


@pytest.mark.parametrize("p", list(ALLOWED_PARAMS.values()), ids=lambda p: p.name)
def test_allow_list_meets_the_he_standard_and_matches_seal(p: HeParams) -> None:
    assert p.total_bits <= HE_STANDARD_MAX_BITS[p.poly_modulus_degree]
    # The primes written in params.py are what SEAL builds for those bit sizes.
    assert params_of(new_context(p)) == p


def test_weak_parameters_are_refused_by_the_factory() -> None:
    with pytest.raises(WeakParameters, match="poly_modulus_degree 2048"):
        HeParams("mine", HeScheme.BFV, 2048, (40961, 65537), plain_modulus=12289)
    q60, q40a, q40b = get_params("ckks-8192").coeff_modulus
    with pytest.raises(WeakParameters, match="below 128-bit security"):
        HeParams("big", HeScheme.CKKS, 4096, (q60, q40a, q40b), scale_bits=40)
    with pytest.raises(WeakParameters, match="not an allow-listed"):
        get_params("bfv-2048")
    with pytest.raises(WeakParameters):
        HeRoundConfig(n=3, d=10, params="ckks-16384")


@pytest.mark.parametrize(
    "build",
    [
        lambda: ts.context(ts.SCHEME_TYPE.BFV, 2048, 40961, [27, 27], n_threads=1),
        lambda: ts.context(ts.SCHEME_TYPE.BFV, 4096, 1032193, [36, 36, 37], n_threads=1),
        lambda: ts.context(ts.SCHEME_TYPE.BFV, 8192, 1032193, [60, 60, 60], n_threads=1),
    ],
    ids=["N2048", "other-t", "N8192-not-listed"],
)
def test_a_serialized_context_with_other_parameters_is_refused(build) -> None:  # type: ignore[no-untyped-def]
    ctx = build()
    cfg = HeRoundConfig(n=3, d=10, session_id=SESSION)
    with pytest.raises(WeakParameters):
        HeAccumulator(cfg, _keyless(ctx), REGISTRY)
    # A public context that is larger than any of this set is refused before parsing.
    with pytest.raises((WeakParameters, InvalidCiphertext)):
        HeClient(cfg, serialize_public(ctx), TAG_KEY, 1, identity(1))


def test_a_ckks_context_with_another_scale_or_set_is_refused() -> None:
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[36, 36, 37], n_threads=1)
    ctx.global_scale = 2.0**30
    cfg = HeRoundConfig(n=3, d=10, params="ckks-4096", session_id=SESSION)
    with pytest.raises(WeakParameters):
        HeAccumulator(cfg, _keyless(ctx), REGISTRY)
    # An allow-listed context, but for another round's parameter set.
    bfv_cfg = HeRoundConfig(n=3, d=10, session_id=SESSION)
    with pytest.raises(WeakParameters, match="the round uses bfv-4096"):
        HeAccumulator(bfv_cfg, _keyless(new_context(CKKS_4096)), REGISTRY)


def test_config_checks_and_digest() -> None:
    with pytest.raises(ConfigError, match="CKKS only"):
        HeRoundConfig(n=3, d=10, flood=5)
    with pytest.raises(ConfigError):
        HeRoundConfig(n=BFV_4096.max_clients + 1, d=10)
    with pytest.raises(ConfigError):
        HeRoundConfig(n=3, d=0)
    a = HeRoundConfig(n=3, d=10, session_id=SESSION)
    assert a.digest != a.with_session(SESSION, 1).digest
    assert a.digest != HeRoundConfig(n=3, d=10, params="ckks-4096", session_id=SESSION).digest
    assert HeRoundConfig(n=3, d=10, params="ckks-4096").flood_units == 3


def test_default_layout_packs_two_fields_per_slot() -> None:
    cfg = HeRoundConfig(n=100, d=1_000_000)
    lay = cfg.layout
    assert (lay.field_bits, lay.fields_per_slot, lay.chunks) == (23, 2, 123)
    assert HeRoundConfig(n=100, d=1_000_000, params="ckks-4096").layout.chunks == 245


def test_packing_round_trips_every_sum_that_fits() -> None:
    lay = PackingLayout(field_bits=12, fields_per_slot=3, slots_per_chunk=64, values=150)
    rng = np.random.default_rng(0)
    for _ in range(50):
        fields = rng.integers(-(2**11) + 1, 2**11, lay.values)
        fields[:3] = [2**11 - 1, -(2**11) + 1, 0]
        assert np.array_equal(lay.unpack(lay.pack(fields)), fields)
    slots = lay.pack(np.ones(lay.values, dtype=np.int64))
    bad = slots.copy()
    bad[-1] += 1 << 24  # the last plane of the last slot: a padding field
    with pytest.raises(DecryptionRefused, match="padding"):
        lay.unpack(bad)
    bad = slots.copy()
    bad[0] += 1 << 36  # digits beyond the last field
    with pytest.raises(DecryptionRefused, match="decompose"):
        lay.unpack(bad)


def test_client_refuses_a_deterministic_rng_by_default() -> None:
    cfg = HeRoundConfig(n=3, d=10, session_id=SESSION)
    pub = serialize_public(new_context(BFV_4096))
    with pytest.raises(ConfigError, match="tests only"):
        HeClient(cfg, pub, TAG_KEY, 1, identity(1), rng=DeterministicRandom(1))
