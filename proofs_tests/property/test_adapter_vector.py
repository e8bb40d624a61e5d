"""The adapter as one dense, fixed-length vector: any vector of the right layout round-trips
exactly, anything else is refused (threats.md SA-15)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from client.training import (
    AdapterMismatch,
    AdapterSpec,
    adapter_spec,
    adapter_to_vector,
    apply_mean_update,
    attach_lora,
    load_base_model,
    vector_to_adapter,
)


@lru_cache(maxsize=2)
def _model(mode: str) -> nn.Module:
    base, _ = load_base_model("tiny")
    return attach_lora(base, mode)  # type: ignore[arg-type]


@lru_cache(maxsize=2)
def _spec(mode: str) -> AdapterSpec:
    return adapter_spec(_model(mode))


_finite32 = st.floats(-1e6, 1e6, allow_nan=False, width=32)
_finite64 = st.floats(-1e6, 1e6, allow_nan=False)


@settings(max_examples=30, deadline=None)
@given(mode=st.sampled_from(["ffa", "lora"]), data=st.data())
def test_float32_vectors_round_trip_exactly(mode: str, data: st.DataObject) -> None:
    model, spec = _model(mode), _spec(mode)
    vec = data.draw(hnp.arrays(np.float32, spec.size, elements=_finite32))
    vector_to_adapter(model, vec, spec)
    out, out_spec = adapter_to_vector(model)
    assert out_spec == spec and out.dtype == np.float32
    assert np.array_equal(out, vec)


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_float64_vectors_are_stored_as_float32(data: st.DataObject) -> None:
    model, spec = _model("ffa"), _spec("ffa")
    vec = data.draw(hnp.arrays(np.float64, spec.size, elements=_finite64))
    vector_to_adapter(model, vec, spec)
    out64, _ = adapter_to_vector(model, np.float64)
    assert np.array_equal(out64, vec.astype(np.float32).astype(np.float64))


@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_mean_update_adds_to_the_adapter(data: st.DataObject) -> None:
    model, spec = _model("ffa"), _spec("ffa")
    old = data.draw(hnp.arrays(np.float32, spec.size, elements=st.floats(-1, 1, width=32)))
    delta = data.draw(hnp.arrays(np.float32, spec.size, elements=st.floats(-1, 1, width=32)))
    vector_to_adapter(model, old, spec)
    new = apply_mean_update(model, spec, delta)
    expected = (old.astype(np.float64) + delta.astype(np.float64)).astype(np.float32)
    assert np.array_equal(new, expected)
    assert np.array_equal(adapter_to_vector(model)[0], expected)


@settings(max_examples=30, deadline=None)
@given(length=st.integers(0, 10_000))
def test_wrong_lengths_are_refused(length: int) -> None:
    model, spec = _model("ffa"), _spec("ffa")
    if length == spec.size:
        length += 1
    before, _ = adapter_to_vector(model)
    with pytest.raises(AdapterMismatch):
        vector_to_adapter(model, np.zeros(length, np.float32), spec)
    with pytest.raises(AdapterMismatch):
        apply_mean_update(model, spec, np.zeros(length, np.float32))
    assert np.array_equal(adapter_to_vector(model)[0], before)  # nothing was written


@settings(max_examples=20, deadline=None)
@given(position=st.integers(0, 3071), bad=st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_vectors_are_refused(position: int, bad: float) -> None:
    model, spec = _model("ffa"), _spec("ffa")
    vec = np.zeros(spec.size, np.float32)
    vec[position % spec.size] = bad
    with pytest.raises(AdapterMismatch, match="NaN or infinite"):
        vector_to_adapter(model, vec, spec)


def _variants(spec: AdapterSpec) -> list[AdapterSpec]:
    """Specs that differ from ``spec`` in one field but keep the same vector length."""
    first, *rest = spec.shapes
    return [
        dataclasses.replace(spec, names=(spec.names[0] + "x", *spec.names[1:])),
        dataclasses.replace(spec, shapes=((first[1], first[0]), *rest)),
        dataclasses.replace(spec, dtype="float64"),
        dataclasses.replace(spec, lora=(("alpha", "32.0"), *spec.lora[1:])),
        dataclasses.replace(spec, frozen_digest="0" * 64),
    ]


@pytest.mark.parametrize("which", range(5))
def test_same_length_but_other_spec_is_refused(which: int) -> None:
    model, spec = _model("ffa"), _spec("ffa")
    other = _variants(spec)[which]
    assert other.size == spec.size and other.digest != spec.digest
    with pytest.raises(AdapterMismatch):
        vector_to_adapter(model, np.zeros(spec.size, np.float32), other)


def test_an_ffa_vector_does_not_fit_a_plain_lora_model() -> None:
    vec, spec = adapter_to_vector(_model("ffa"))
    with pytest.raises(AdapterMismatch):
        vector_to_adapter(_model("lora"), vec, spec)


def test_non_vectors_are_refused() -> None:
    model, spec = _model("ffa"), _spec("ffa")
    for bad in (np.zeros((1, spec.size), np.float32), np.zeros(spec.size, np.int64)):
        with pytest.raises(AdapterMismatch):
            vector_to_adapter(model, bad, spec)
    with pytest.raises(AdapterMismatch):
        vector_to_adapter(model, [0.0] * spec.size, spec)  # type: ignore[arg-type]


def test_spec_json_round_trips_and_digest_is_stable() -> None:
    spec = _spec("lora")
    assert AdapterSpec.from_json(spec.to_json()) == spec
    assert AdapterSpec.from_json(spec.to_json()).digest == spec.digest
    with pytest.raises(AdapterMismatch):
        AdapterSpec.from_json('{"version": 99}')
    with pytest.raises(AdapterMismatch):
        AdapterSpec(names=("a", "a"), shapes=((1,), (1,)))
