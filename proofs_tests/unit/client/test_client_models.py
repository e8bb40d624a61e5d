"""Offline base models: the tiny GPT-2 is bit-identical everywhere; SmolLM2 loads from its wheel.

The SmolLM2 smoke test de-quantises a 98 MB GGUF (~20 s) and runs only with
``SECAGG_SLOW_MODELS=1``.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from client.models import (
    TINY_PUBLIC_SEED,
    ByteTokenizer,
    load_base_model,
    public_uniform,
)
from client.training import (
    ModelUnavailable,
    adapter_to_vector,
    attach_lora,
    evaluate_loss,
    generate,
    tokenize_blocks,
    train_dp,
)

SLOW = os.environ.get("SECAGG_SLOW_MODELS") == "1"


def _state(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}


def test_tiny_model_is_bit_identical_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a, tok = load_base_model("tiny")
    assert torch.equal(before, torch.get_rng_state())
    b, _ = load_base_model("tiny")
    assert _state(a) == _state(b)
    c, _ = load_base_model("tiny", seed=TINY_PUBLIC_SEED + 1)
    assert _state(a) != _state(c)
    assert isinstance(tok, ByteTokenizer)
    assert all(not p.requires_grad for p in a.parameters())
    assert a.training


# SHA-256 over (name, float32 bytes) of the tiny model's sorted state dict. It pins the public
# initial weights: a change here means clients on different versions would disagree.
TINY_STATE_SHA256 = "f841884d565077017acd3b1ed73cc5d00336a5fe0a45a3869fd840d56906c947"


def test_tiny_model_weights_match_the_pinned_digest() -> None:
    model, _ = load_base_model("tiny")
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.numpy().tobytes())
    assert h.hexdigest() == TINY_STATE_SHA256
    assert sum(p.numel() for p in model.parameters()) == 180_480


def test_public_uniform_matches_an_independent_computation() -> None:
    parts = ("kat", 0)
    seed = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    stream = hashlib.shake_256(b"secagg-public-uniform\x00" + seed).digest(4 * 6)
    expected = [
        (int.from_bytes(stream[4 * i : 4 * i + 4], "big") >> 8) / 2**23 - 1.0 for i in range(6)
    ]
    got = public_uniform((2, 3), 1.0, *parts)
    assert got.dtype == torch.float32 and got.shape == (2, 3)
    assert got.reshape(-1).tolist() == expected  # 24-bit values: exact in float32
    assert got.reshape(-1)[:2].tolist() == [0.4526020288467407, 0.6101086139678955]
    scaled = public_uniform((1000,), 0.25, "b")
    assert float(scaled.abs().max()) <= 0.25


def test_tiny_model_starts_near_uniform_loss() -> None:
    model, tok = load_base_model("tiny")
    blocks = tokenize_blocks(["hello world " * 40], tok, 32)
    loss = evaluate_loss(model, blocks)
    assert abs(loss - math.log(1000)) < 0.2
    out = generate(model, tok, "hello", max_new_tokens=5)
    assert out == generate(model, tok, "hello", max_new_tokens=5)


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ModelUnavailable):
        load_base_model("gpt2")


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="set SECAGG_SLOW_MODELS=1 to load SmolLM2 (~20 s)")
def test_smollm2_loads_offline_caches_and_trains(tmp_path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    model, tok = load_base_model("smollm2", tmp_path)
    first = time.perf_counter() - t0
    assert (tmp_path / "smollm2-135m-instruct-f32" / "model.safetensors").is_file()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert "Paris" in generate(model, tok, "The capital of France is", max_new_tokens=4)

    t0 = time.perf_counter()
    again, tok2 = load_base_model("smollm2", tmp_path)
    second = time.perf_counter() - t0
    ids = torch.tensor([tok.encode("Differential privacy", add_special_tokens=False)])
    assert tok2.encode("Differential privacy", add_special_tokens=False) == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
    assert second < first

    peft_model = attach_lora(again, "ffa")
    vec, spec = adapter_to_vector(peft_model)
    assert vec.shape == (spec.size,) and not vec.any()  # B starts at zero
    text = "Secure aggregation only reveals the sum of the clients' updates. " * 8
    blocks = tokenize_blocks([text], tok2, 32, max_blocks=4)
    result = train_dp(
        peft_model, blocks, steps=1, batch_size=2, lr=0.05, noise_multiplier=1.0, seed=0
    )
    assert np.isfinite(result.delta_vector).all() and np.abs(result.delta_vector).max() > 0
    print(f"smollm2: first load {first:.1f} s, cached {second:.1f} s, step {result.seconds:.2f} s")
