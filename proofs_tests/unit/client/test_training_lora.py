"""DP-LoRA training on the tiny model: clipping covers every trainable tensor, frozen weights stay
frozen, empty Poisson batches are noised and accounted, calibration never overshoots, the saved
adapter reloads, and federated rounds learn (threats.md DP-05..DP-09, SA-15)."""

from __future__ import annotations

import copy
import itertools
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from client.training import (
    AdapterMismatch,
    InvalidTrainingConfig,
    StepInfo,
    adapter_spec,
    adapter_to_vector,
    apply_mean_update,
    attach_lora,
    calibrate_noise,
    evaluate_loss,
    held_out_corpus,
    load_base_model,
    local_text_corpus,
    save_adapter,
    tokenize_blocks,
    train_dp,
    vector_to_adapter,
)
from client.training import _lm_loss as lm_loss
from dp import accounting

BLOCK = 32


@lru_cache(maxsize=4)
def _blocks(slice_index: int, n_slices: int, max_blocks: int) -> torch.Tensor:
    _, tok = load_base_model("tiny")
    return tokenize_blocks(
        local_text_corpus(slice_index, n_slices), tok, BLOCK, max_blocks=max_blocks
    )


@lru_cache(maxsize=1)
def _held_out() -> torch.Tensor:
    _, tok = load_base_model("tiny")
    return tokenize_blocks(held_out_corpus(), tok, BLOCK, max_blocks=48)


def _client(mode: str = "ffa", public_seed: int = 0) -> nn.Module:
    model, _ = load_base_model("tiny")
    return attach_lora(model, mode, public_seed=public_seed)  # type: ignore[arg-type]


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- LoRA set-up ------------------------------------------------------------------------------


def test_independent_clients_get_identical_specs_and_frozen_a() -> None:
    a, b = _client(), _client()
    va, sa = adapter_to_vector(a)
    vb, sb = adapter_to_vector(b)
    assert sa == sb and sa.digest == sb.digest
    assert np.array_equal(va, vb) and not va.any()  # B starts at zero
    frozen_a = {n: p for n, p in a.named_parameters() if ".lora_A." in n}
    frozen_b = {n: p for n, p in b.named_parameters() if ".lora_A." in n}
    assert frozen_a.keys() == frozen_b.keys() and frozen_a
    for n, p in frozen_a.items():
        assert not p.requires_grad
        assert torch.equal(p, frozen_b[n]) and p.abs().max() > 0
    # FFA: only B is aggregated; the tiny model has 2 layers of c_attn (192 x 8).
    assert sa.names == tuple(sorted(n for n in sa.names if ".lora_B." in n))
    assert sa.size == 2 * 192 * 8
    assert dict(sa.lora) == {"alpha": "16.0", "mode": "ffa", "r": "8", "targets": "c_attn"}


def test_another_public_seed_gives_another_spec_and_is_refused() -> None:
    a, other = _client(), _client(public_seed=1)
    vec, spec = adapter_to_vector(a)
    assert spec.frozen_digest != adapter_spec(other).frozen_digest
    with pytest.raises(AdapterMismatch, match="frozen_digest"):
        vector_to_adapter(other, vec, spec)


def test_plain_lora_trains_a_and_b_and_starts_at_the_base_model() -> None:
    base, _ = load_base_model("tiny")
    blocks = _blocks(0, 4, 64)[:4]
    with torch.no_grad():
        reference = base(input_ids=blocks).logits
    model = attach_lora(base, "lora")
    spec = adapter_spec(model)
    assert {n.split(".lora_")[1][0] for n in spec.names} == {"A", "B"}
    assert spec.size == 2 * (8 * 64 + 192 * 8)
    with torch.no_grad():
        assert torch.equal(model(input_ids=blocks).logits, reference)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".lora_" not in n)


def test_bad_lora_settings_are_refused() -> None:
    with pytest.raises(InvalidTrainingConfig):
        attach_lora(load_base_model("tiny")[0], "full")  # type: ignore[arg-type]
    with pytest.raises(InvalidTrainingConfig):
        attach_lora(load_base_model("tiny")[0], r=0)


# --- per-sample clipping (DP-08, DP-09) ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["ffa", "lora"])
def test_every_trainable_tensor_is_clipped_per_sample(mode: str) -> None:
    model = _client(mode)
    if mode == "lora":  # make B non-zero so A gets real gradients too
        _, spec = adapter_to_vector(model)
        vector_to_adapter(model, np.random.default_rng(0).normal(0, 0.05, spec.size), spec)
    reference = copy.deepcopy(model)
    blocks = _blocks(0, 4, 64)
    spec = adapter_spec(model)
    infos: list[StepInfo] = []
    clip, lr, batch = 0.05, 1.0, 8
    result = train_dp(
        model,
        blocks,
        steps=1,
        batch_size=batch,
        lr=lr,
        clip=clip,
        noise_multiplier=0.0,
        seed=11,
        step_callback=infos.append,
    )
    (info,) = infos
    assert info.grad_samples is not None and info.batch_size > 1
    # Every trainable tensor, and only those, has a per-sample gradient for every record.
    assert tuple(info.grad_samples) == spec.names
    for name, shape in zip(spec.names, spec.shapes, strict=True):
        assert info.grad_samples[name].shape == (info.batch_size, *shape)
    flat = torch.cat(
        [g.reshape(info.batch_size, -1) for g in info.grad_samples.values()], dim=1
    ).double()
    norms = flat.norm(dim=1)
    assert np.allclose(norms.numpy(), info.per_sample_norms)
    assert (norms > clip).all(), "the test needs every example to be clipped"
    clipped = flat * (clip / (norms + 1e-6)).clamp(max=1.0)[:, None]
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-6)).all()
    # The update is exactly -lr * (sum of clipped per-sample gradients) / expected batch size.
    expected = -lr * clipped.sum(dim=0).numpy() / batch
    assert np.allclose(result.delta_vector, expected, atol=1e-7)
    # Per-sample gradients equal brute-force batch-of-one gradients.
    params = [p for n, p in sorted(reference.named_parameters()) if p.requires_grad]
    for row, i in enumerate(info.indices[:3]):
        grads = torch.autograd.grad(lm_loss(reference, blocks[i : i + 1]), params)
        brute = torch.cat([g.reshape(-1) for g in grads]).double()
        assert torch.allclose(brute, flat[row], atol=1e-6, rtol=1e-4)


def test_an_outlier_moves_the_sum_by_at_most_the_clip() -> None:
    """One record with a huge gradient contributes at most C to the pre-noise sum (DP-08)."""
    model = _client()
    blocks = _blocks(1, 4, 16).clone()
    blocks[0] = 999  # an out-of-distribution record: very large loss and gradient
    infos: list[StepInfo] = []
    train_dp(
        model,
        blocks,
        steps=3,
        batch_size=8,
        lr=0.1,
        clip=0.1,
        noise_multiplier=0.0,
        seed=2,
        step_callback=infos.append,
    )
    for info in infos:
        assert info.grad_samples is not None
        if 0 in info.indices:
            row = info.indices.index(0)
            assert info.per_sample_norms[row] == info.per_sample_norms.max() > 0.1


# --- frozen weights stay frozen; B moves (DP-09, pitfall 9) -------------------------------------


def test_base_and_frozen_a_are_bit_identical_after_noisy_training() -> None:
    model = _client("ffa")
    before = _snapshot(model)
    result = train_dp(
        model,
        _blocks(2, 4, 64),
        steps=3,
        batch_size=8,
        lr=0.5,
        clip=0.1,
        noise_multiplier=1.0,
        seed=3,
    )
    after = _snapshot(model)
    moved = []
    for name, p in after.items():
        if ".lora_B." in name:
            moved.append(float((p - before[name]).abs().max()))
        else:
            assert torch.equal(p, before[name]), f"{name} changed"
    assert min(moved) > 0
    assert np.abs(result.delta_vector).max() > 0 and np.isfinite(result.delta_vector).all()
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


# --- Poisson sampling, empty batches, accounting (DP-05, DP-06) ---------------------------------


def test_empty_poisson_batches_are_noised_and_accounted() -> None:
    model = _client()
    blocks = _blocks(3, 4, 4)
    assert blocks.shape[0] == 4
    sizes: list[int] = []
    vectors: list[np.ndarray] = []

    def watch(info: StepInfo) -> None:
        sizes.append(info.batch_size)
        vectors.append(adapter_to_vector(model)[0])

    start, _ = adapter_to_vector(model)
    sigma, steps = 2.0, 12
    result = train_dp(
        model,
        blocks,
        steps=steps,
        batch_size=1,
        lr=0.1,
        clip=1.0,
        noise_multiplier=sigma,
        seed=5,
        step_callback=watch,
    )
    assert result.sample_rate == 1 / 4  # q = expected batch / |D|, from the dataset (DP-06)
    assert len(sizes) == steps == result.steps
    assert 0 < result.empty_batches == sizes.count(0) < steps
    assert len(set(sizes)) > 1  # Poisson batch sizes vary
    # An empty step still adds noise: the adapter moves.
    previous = [start, *vectors[:-1]]
    for size, before, after in zip(sizes, previous, vectors, strict=True):
        if size == 0:
            assert not np.array_equal(before, after)
    assert result.epsilon == accounting.epsilon(0.25, sigma, steps, 1e-5, "rdp")
    assert math.isfinite(result.epsilon) and result.epsilon > 0

    again = train_dp(
        _client(),
        blocks,
        steps=steps,
        batch_size=1,
        lr=0.1,
        clip=1.0,
        noise_multiplier=sigma,
        seed=5,
        empty_batch="random",
    )
    assert again.empty_batches == result.empty_batches and again.steps == steps
    baseline = train_dp(_client(), blocks, steps=steps, batch_size=1, lr=0.1, private=False, seed=5)
    assert baseline.epsilon == math.inf and baseline.empty_batches == result.empty_batches


def test_seeded_runs_repeat_and_unseeded_runs_differ() -> None:
    kwargs = dict(steps=2, batch_size=4, lr=0.1, clip=0.1, noise_multiplier=1.0)
    blocks = _blocks(0, 4, 16)
    a = train_dp(_client(), blocks, seed=9, **kwargs)  # type: ignore[arg-type]
    b = train_dp(_client(), blocks, seed=9, **kwargs)  # type: ignore[arg-type]
    c = train_dp(_client(), blocks, **kwargs)  # type: ignore[arg-type]
    assert np.array_equal(a.delta_vector, b.delta_vector) and a.seeded
    assert not np.array_equal(a.delta_vector, c.delta_vector) and not c.seeded


# --- calibration (DP-07) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "q", "steps"), [(0.5, 0.05, 20), (2.0, 0.25, 12), (8.0, 0.01, 500), (1.0, 1.0, 3)]
)
def test_calibrated_noise_never_exceeds_the_target(target: float, q: float, steps: int) -> None:
    sigma = calibrate_noise(target, q, steps, 1e-5, "rdp")
    assert accounting.epsilon(q, sigma, steps, 1e-5, "rdp") <= target
    assert accounting.epsilon(q, sigma * 0.97, steps, 1e-5, "rdp") > target  # and it is tight


@pytest.mark.parametrize("acc", ["rdp", "prv"])
def test_train_dp_with_a_target_epsilon_stays_within_it(acc: str) -> None:
    result = train_dp(
        _client(),
        _blocks(0, 4, 32),
        steps=4,
        batch_size=8,
        lr=0.1,
        clip=0.1,
        target_epsilon=3.0,
        accountant=acc,
        seed=1,
    )
    assert 0 < result.epsilon <= 3.0 and result.accountant == acc
    assert result.noise_multiplier > 0
    assert result.epsilon == accounting.epsilon(0.25, result.noise_multiplier, 4, 1e-5, acc)


def test_a_failing_accountant_stops_training_before_any_update(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> float:
        raise accounting.AccountingError("injected")

    monkeypatch.setattr(accounting, "epsilon", broken)
    model = _client()
    before = _snapshot(model)
    with pytest.raises(accounting.AccountingError, match="injected"):
        train_dp(model, _blocks(0, 4, 16), steps=2, batch_size=4, noise_multiplier=1.0, seed=0)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(steps=1),  # neither sigma nor target
        dict(steps=1, noise_multiplier=1.0, target_epsilon=1.0),
        dict(steps=1, epochs=1.0, noise_multiplier=1.0),
        dict(steps=1, noise_multiplier=1.0, batch_size=10_000),
        dict(steps=1, noise_multiplier=1.0, grad_sample_mode="ghost"),
        dict(steps=1, noise_multiplier=1.0, accountant="gdp"),
        dict(steps=1, noise_multiplier=-1.0),
        dict(steps=1, private=False, noise_multiplier=1.0),
    ],
)
def test_bad_training_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidTrainingConfig):
        train_dp(_client(), _blocks(0, 4, 16), **kwargs)  # type: ignore[arg-type]


def test_epochs_fix_the_step_count() -> None:
    result = train_dp(
        _client(),
        _blocks(0, 4, 16),
        epochs=1.0,
        batch_size=4,
        lr=0.1,
        clip=1.0,
        noise_multiplier=1.0,
        seed=0,
    )
    assert result.steps == 4 == len(result.step_seconds)


# --- saving, and federated rounds -------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_saved_adapter_loads_with_peft_and_gives_the_same_logits(tmp_path: Path) -> None:
    from peft import PeftModel

    model = _client("lora")
    train_dp(
        model,
        _blocks(0, 4, 32),
        steps=3,
        batch_size=8,
        lr=1.0,
        clip=1.0,
        noise_multiplier=0.5,
        seed=4,
    )
    out = save_adapter(model, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file()
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_spec.json").read_text().strip() == adapter_spec(model).to_json()
    base, _ = load_base_model("tiny")
    loaded = PeftModel.from_pretrained(base, out)
    probe = _held_out()[:4]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=probe).logits, model(input_ids=probe).logits)


def test_three_federated_rounds_lower_the_held_out_loss() -> None:
    n_clients, rounds = 3, 3
    global_model = _client()
    clients = [_client() for _ in range(n_clients)]
    data = [_blocks(i, n_clients, 96) for i in range(n_clients)]
    held = _held_out()
    losses = [evaluate_loss(global_model, held)]
    for rnd in range(rounds):
        global_vec, spec = adapter_to_vector(global_model)
        deltas = []
        for c, (model, blocks) in enumerate(zip(clients, data, strict=True)):
            vector_to_adapter(model, global_vec, spec)
            result = train_dp(
                model,
                blocks,
                steps=6,
                batch_size=16,
                lr=2.0,
                clip=0.05,
                noise_multiplier=0.3,
                seed=100 * rnd + c,
            )
            assert result.spec == spec
            deltas.append(result.delta_vector)
        new = apply_mean_update(global_model, spec, np.mean(deltas, axis=0))
        assert np.array_equal(new, adapter_to_vector(global_model)[0])
        losses.append(evaluate_loss(global_model, held))
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
