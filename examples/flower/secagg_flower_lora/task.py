"""What server and clients share: the base model with its LoRA adapter, identical on every
node (same base weights, same targets and rank, the same public initialisation of A), and the
adapter as the one flat array Flower sends and our secure aggregation sums."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from client import training as tr

__all__ = ["adapter_of", "build_model"]


_CACHE: dict[str, tuple[Any, Any]] = {}


def build_model(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """``(peft model, tokenizer)`` for the run's ``model``, ``lora-rank`` and ``lora-alpha``;
    built once per worker process (each fit overwrites the adapter with the global one)."""
    key = json.dumps([cfg["model"], cfg["lora-rank"], cfg["lora-alpha"]])
    if key not in _CACHE:
        _CACHE[key] = _build(cfg)
    return _CACHE[key]


def _build(cfg: dict[str, Any]) -> tuple[Any, Any]:
    torch.set_num_threads(1)
    base, tokenizer = tr.load_base_model(str(cfg["model"]), None)
    net = tr.attach_lora(
        base, mode="ffa", r=int(cfg["lora-rank"]), alpha=int(cfg["lora-alpha"]), public_seed=0
    )
    return net, tokenizer


def adapter_of(net: Any) -> npt.NDArray[np.float32]:
    """The adapter's trainable values as one float32 vector."""
    vec, _ = tr.adapter_to_vector(net)
    return np.asarray(vec, dtype=np.float32)
