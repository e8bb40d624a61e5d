"""SafeDeserializer: untrusted bytes parsed in spawned workers; a crash there costs one input
(threats.md HE-05)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from proofs_tests.he_helpers import REGISTRY, he_upload
from secagg.he import (
    BFV_4096,
    ChunkSpec,
    ContextKind,
    DeserializerCrashed,
    HeAccumulator,
    HeKeyHolder,
    HeRoundConfig,
    InvalidCiphertext,
    SafeDeserializer,
    WeakParameters,
)
from secagg.he._ops import new_context, serialize_parameters

SESSION = bytes(range(16))
MARKER = b"\xde\xad-he05-crash-\xbe\xef"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SafeDeserializer]:
    with SafeDeserializer(2, timeout=60, crash_marker=MARKER) as sb:
        yield sb


def test_sandboxed_round_matches_in_process(sandbox: SafeDeserializer) -> None:
    cfg = HeRoundConfig(n=4, d=9000, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY, backend=sandbox)
    keys = holder.open_round(cfg)
    acc = HeAccumulator(cfg, keys.parameters_context, REGISTRY, backend=sandbox)
    xs = [np.full(cfg.d, 0.2 * u) for u in (1, 2, 3)]
    for u, x in enumerate(xs, start=1):
        acc.add(u, he_upload(cfg, keys, u, x))
    rel = holder.release(acc.close())
    assert rel.count == 3 and np.allclose(rel.aggregate, 1.2, atol=rel.error_bound)


def test_a_crash_costs_one_input_and_the_pool_restarts(sandbox: SafeDeserializer) -> None:
    cfg = HeRoundConfig(n=4, d=100, session_id=SESSION)
    holder = HeKeyHolder(REGISTRY)
    keys = holder.open_round(cfg)
    spec = ChunkSpec(cfg.he_params, keys.parameters_context)
    lo, _ = cfg.he_params.chunk_bounds()
    evil = MARKER + bytes(lo)
    before = sandbox.crashes
    with pytest.raises(DeserializerCrashed, match="HE-05"):
        sandbox.accumulate(spec, [None], [evil])
    assert sandbox.crashes == before + 1
    good = he_upload(cfg, keys, 1, np.zeros(100)).chunks
    assert len(sandbox.accumulate(spec, [None], list(good))) == 1  # serving again
    with pytest.raises(DeserializerCrashed):
        sandbox.check_context(MARKER, cfg.he_params, ContextKind.PARAMETERS)
    sandbox.check_context(keys.parameters_context, cfg.he_params, ContextKind.PARAMETERS)


def test_typed_errors_cross_the_process_boundary(sandbox: SafeDeserializer) -> None:
    from secagg.he import CKKS_4096

    with pytest.raises(WeakParameters):
        sandbox.check_context(
            serialize_parameters(new_context(CKKS_4096)), BFV_4096, ContextKind.PARAMETERS
        )
    spec = ChunkSpec(BFV_4096, serialize_parameters(new_context(BFV_4096)))
    lo, _ = BFV_4096.chunk_bounds()
    with pytest.raises(InvalidCiphertext, match="does not parse"):
        sandbox.accumulate(spec, [None], [bytes(lo)])
