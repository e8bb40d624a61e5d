"""DP-LoRA on the edge device: LoRA set-up, DP-SGD with opacus, the adapter as one flat vector.

The federated data path needs three things from a client (docs/architecture.md):

* an adapter that every client builds identically (same base weights, same targets and rank,
  same public initialisation of A), so that a mean of updates means something;
* record-level DP-SGD: Poisson sampling at rate ``q = batch_size / len(data)``, per-example
  clipping of *every* trainable parameter jointly, Gaussian noise, and an accountant fed with
  exactly that ``q`` and step count (docs/threats.md DP-05, DP-06, DP-09);
* the update as one dense fixed-length vector, refused on the way back in if its length or
  spec differs (docs/threats.md SA-15).

FFA-LoRA (Sun et al., ICLR 2024) is the default: ``A`` is drawn from a public seed and frozen,
only ``B`` is trained, so ``A (mean B) = mean (A B)`` and the aggregate is exact.

Security: the Gaussian noise added here is float noise from torch's (non-cryptographic)
generator, seeded from the OS CSPRNG unless a test seed is given. It bounds what the *update*
reveals about one local record; it is not robust to floating-point attacks (docs/threats.md DP-02).
The user-level guarantee of the federation comes from :mod:`dp`'s integer noise under SecAgg.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from client._training_errors import (
    AdapterMismatch,
    InvalidTrainingConfig,
    ModelUnavailable,
    PerSampleGradientMissing,
    TrainingError,
)
from client.data import held_out_corpus, load_texts, local_text_corpus, tokenize_blocks
from client.models import (
    ByteTokenizer,
    TokenizerLike,
    load_base_model,
    load_model_folder,
    public_uniform,
)

__all__ = [
    "ACCOUNTANT_NAMES",
    "DEFAULT_TARGETS",
    "AdapterMismatch",
    "AdapterSpec",
    "ByteTokenizer",
    "InvalidTrainingConfig",
    "LoraMode",
    "ModelUnavailable",
    "PerSampleGradientMissing",
    "StepInfo",
    "TrainResult",
    "TrainingError",
    "adapter_spec",
    "adapter_to_vector",
    "apply_mean_update",
    "attach_lora",
    "calibrate_noise",
    "evaluate_loss",
    "generate",
    "held_out_corpus",
    "initial_adapter",
    "load_base_model",
    "load_model_folder",
    "load_texts",
    "local_text_corpus",
    "save_adapter",
    "tokenize_blocks",
    "train_dp",
    "vector_to_adapter",
]

LoraMode = Literal["ffa", "lora"]

#: LoRA target modules per architecture (``config.model_type``), fixed so every client agrees.
DEFAULT_TARGETS: Final[Mapping[str, tuple[str, ...]]] = {
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
}

#: Accountants :func:`train_dp` can calibrate and report with (see :mod:`dp.accounting`).
ACCOUNTANT_NAMES: Final[tuple[str, ...]] = ("rdp", "prv", "pld")

_GRAD_SAMPLE_MODES: Final[tuple[str, ...]] = ("hooks", "functorch")
_SPEC_VERSION: Final[int] = 1
_NOISY_WARNINGS: Final[tuple[str, ...]] = (
    # opacus' hooks sit on modules whose inputs need no grad (frozen base): harmless here.
    ".*Full backward hook is firing when gradients are computed with respect to module outputs.*",
    ".*is_gradient_checkpointing.*",
)


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        for pattern in _NOISY_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


# --------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidTrainingConfig(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_float(name: str, value: object, *, low: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTrainingConfig(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (strict and v == low):
        bound = f"> {low}" if strict else f">= {low}"
        raise InvalidTrainingConfig(f"{name} must be finite and {bound}, got {value!r}")
    return v


def attach_lora(
    model: nn.Module,
    mode: LoraMode = "ffa",
    r: int = 8,
    alpha: int = 16,
    targets: Sequence[str] | None = None,
    public_seed: int = 0,
    *,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model whose initial adapter is the same on every client.

    ``A`` of each target is drawn from ``public_seed`` and the parameter's name (Kaiming-uniform
    bound ``1/sqrt(fan_in)``, as peft), ``B`` is zero, so the model starts equal to the base.
    ``mode="ffa"``: only ``B`` trains (A frozen). ``mode="lora"``: ``A`` and ``B`` train.
    Base weights are frozen either way. The model is moved to ``device`` *before* peft wraps it
    (opacus #820 / peft #3409: otherwise updates can silently go nowhere on GPU).
    """
    from peft import LoraConfig, get_peft_model

    if mode not in ("ffa", "lora"):
        raise InvalidTrainingConfig(f"mode must be 'ffa' or 'lora', got {mode!r}")
    _check_int("r", r, low=1)
    _check_int("alpha", alpha, low=1)
    _check_int("public_seed", public_seed, low=0)
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    if targets is None:
        if model_type not in DEFAULT_TARGETS:
            raise InvalidTrainingConfig(f"no default LoRA targets for model type {model_type!r}")
        targets = DEFAULT_TARGETS[model_type]
    target_list = sorted(set(targets))
    if not target_list:
        raise InvalidTrainingConfig("targets must name at least one module")
    for p in model.parameters():
        p.requires_grad_(False)
    model.to(device)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=target_list,
        bias="none",
        # GPT-2's Conv1D stores weights transposed.
        fan_in_fan_out=model_type == "gpt2",
    )
    with _quiet():
        peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if ".lora_A." in name:
                # peft's kaiming_uniform_(a=sqrt(5)) is Uniform[-1/sqrt(fan_in), 1/sqrt(fan_in)].
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_(public_uniform(p.shape, bound, "lora-A", public_seed, name))
                p.requires_grad_(mode == "lora")
            elif ".lora_B." in name:
                p.zero_()
                p.requires_grad_(True)
            else:
                p.requires_grad_(False)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise InvalidTrainingConfig(f"targets {target_list} matched no module of the model")
    peft_model.train()
    return peft_model


# --------------------------------------------------------------------------------------------
# The adapter as one vector
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """The fixed layout of the aggregated vector: trainable tensors by name, and the LoRA setup.

    ``lora`` holds ``(key, value)`` pairs (mode, rank, alpha, targets); ``frozen_digest`` is a
    SHA-256 over the frozen LoRA tensors (FFA's ``A``), so two clients whose public A differs
    have different specs. :attr:`digest` commits to all of it (docs/threats.md SA-15).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtype: str = "float32"
    lora: tuple[tuple[str, str], ...] = ()
    frozen_digest: str = ""

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise AdapterMismatch("names and shapes differ in length")
        if len(set(self.names)) != len(self.names):
            raise AdapterMismatch("duplicate tensor names")
        if any(d < 1 for shape in self.shapes for d in shape):
            raise AdapterMismatch("every tensor dimension must be >= 1")

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def size(self) -> int:
        """Length of the flat vector."""
        return sum(self.sizes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": _SPEC_VERSION,
            "names": list(self.names),
            "shapes": [list(s) for s in self.shapes],
            "dtype": self.dtype,
            "lora": [list(kv) for kv in self.lora],
            "frozen_digest": self.frozen_digest,
        }

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, no spaces): the bytes :attr:`digest` hashes."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AdapterSpec:
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("version") != _SPEC_VERSION:
            raise AdapterMismatch("not an adapter spec of a known version")
        try:
            return cls(
                names=tuple(str(n) for n in d["names"]),
                shapes=tuple(tuple(int(x) for x in s) for s in d["shapes"]),
                dtype=str(d["dtype"]),
                lora=tuple((str(k), str(v)) for k, v in d["lora"]),
                frozen_digest=str(d["frozen_digest"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise AdapterMismatch(f"malformed adapter spec: {exc}") from exc

    @property
    def digest(self) -> str:
        """Hex SHA-256 of :meth:`to_json`; equal digests mean interchangeable vectors."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Trainable parameters in the vector's (sorted-name) order."""
    return sorted((n, p) for n, p in model.named_parameters() if p.requires_grad)


def _lora_setup(model: nn.Module, trainable: Sequence[str]) -> tuple[tuple[str, str], ...]:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or len(configs) != 1:
        return ()
    cfg = next(iter(configs.values()))
    targets = getattr(cfg, "target_modules", None)
    target_str = ",".join(sorted(targets)) if isinstance(targets, set | list | tuple) else ""
    mode = "lora" if any(".lora_A." in n for n in trainable) else "ffa"
    return (
        ("alpha", repr(float(getattr(cfg, "lora_alpha", 0)))),
        ("mode", mode),
        ("r", str(getattr(cfg, "r", ""))),
        ("targets", target_str),
    )


def adapter_spec(model: nn.Module) -> AdapterSpec:
    """The :class:`AdapterSpec` of ``model``'s trainable parameters right now."""
    params = _trainable(model)
    if not params:
        raise AdapterMismatch("the model has no trainable parameters")
    dtypes = {p.dtype for _, p in params}
    if len(dtypes) != 1:
        raise AdapterMismatch(f"trainable tensors have mixed dtypes {sorted(map(str, dtypes))}")
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if not p.requires_grad and (".lora_A." in name or ".lora_B." in name):
            h.update(name.encode() + b"\x00")
            h.update(p.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    names = [n for n, _ in params]
    return AdapterSpec(
        names=tuple(names),
        shapes=tuple(tuple(int(d) for d in p.shape) for _, p in params),
        dtype=str(next(iter(dtypes))).removeprefix("torch."),
        lora=_lora_setup(model, names),
        frozen_digest=h.hexdigest(),
    )


def adapter_to_vector(
    model: nn.Module, dtype: type[np.floating[Any]] = np.float32
) -> tuple[npt.NDArray[np.floating[Any]], AdapterSpec]:
    """The trainable (aggregated) parameters as one flat vector, and its spec."""
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InvalidTrainingConfig("dtype must be float32 or float64")
    spec = adapter_spec(model)
    with torch.no_grad():
        parts = [p.detach().to("cpu").reshape(-1).to(torch.float64) for _, p in _trainable(model)]
        flat = torch.cat(parts).numpy().astype(dtype, copy=False)
    return flat, spec


def _check_vector(vec: object, spec: AdapterSpec) -> npt.NDArray[np.float64]:
    if not isinstance(vec, np.ndarray):
        raise AdapterMismatch(f"expected a numpy vector, got {type(vec).__name__}")
    if vec.ndim != 1 or vec.shape[0] != spec.size:
        raise AdapterMismatch(f"vector shape {vec.shape} != ({spec.size},) required by the spec")
    if vec.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise AdapterMismatch(f"vector dtype {vec.dtype} is not float32 or float64")
    out = vec.astype(np.float64)
    if not np.isfinite(out).all():
        raise AdapterMismatch("vector has NaN or infinite entries")
    return out


def _explain(expected: AdapterSpec, got: AdapterSpec) -> str:
    for field_name in ("names", "shapes", "dtype", "lora", "frozen_digest"):
        if getattr(expected, field_name) != getattr(got, field_name):
            return f"adapter spec differs in {field_name}"
    return "adapter spec differs"  # pragma: no cover - equal fields give equal digests


def vector_to_adapter(model: nn.Module, vec: npt.NDArray[Any], spec: AdapterSpec) -> None:
    """Write ``vec`` into ``model``'s trainable parameters, or raise :class:`AdapterMismatch`.

    Refuses a spec that differs from the model's own (names, shapes, dtype, LoRA setup, frozen
    A) and any vector that is not 1-D float of exactly ``spec.size`` finite entries.
    """
    current = adapter_spec(model)
    if spec.digest != current.digest:
        raise AdapterMismatch(_explain(current, spec))
    values = _check_vector(vec, spec)
    offset = 0
    with torch.no_grad():
        for (_, p), size in zip(_trainable(model), spec.sizes, strict=True):
            chunk = torch.from_numpy(values[offset : offset + size]).reshape(p.shape)
            p.copy_(chunk.to(dtype=p.dtype, device=p.device))
            offset += size


def apply_mean_update(
    model: nn.Module, spec: AdapterSpec, mean_delta: npt.NDArray[Any]
) -> npt.NDArray[np.float32]:
    """New global adapter = current adapter + ``mean_delta`` (summed in float64); returns it."""
    current, current_spec = adapter_to_vector(model, np.float64)
    if spec.digest != current_spec.digest:
        raise AdapterMismatch(_explain(current_spec, spec))
    new = current + _check_vector(mean_delta, spec)
    vector_to_adapter(model, new, spec)
    return new.astype(np.float32)


def initial_adapter(
    model: str | Path,
    lora: Mapping[str, Any],
    *,
    cache_dir: Path | None = None,
    tokenizer: Path | None = None,
) -> tuple[npt.NDArray[np.float32], AdapterSpec]:
    """The starting adapter vector and its spec for a federation: ``model`` (a shipped name or
    a model folder) with LoRA set up as ``lora`` (``mode``, ``r``, ``alpha``, ``targets``,
    ``public_seed``: the job's ``train.lora``). Every client builds the same one."""
    base, _ = load_base_model(model, cache_dir, tokenizer=tokenizer)
    targets = lora.get("targets")
    net = attach_lora(
        base,
        mode=lora.get("mode", "ffa"),
        r=int(lora.get("r", 8)),
        alpha=int(lora.get("alpha", 16)),
        targets=None if targets is None else list(targets),
        public_seed=int(lora.get("public_seed", 0)),
    )
    vec, spec = adapter_to_vector(net)
    return vec.astype(np.float32), spec


def save_adapter(model: nn.Module, out_dir: Path) -> Path:
    """Write a standard peft adapter folder (safetensors) plus ``adapter_spec.json``.

    ``PeftModel.from_pretrained(base, out_dir)`` loads it on a freshly loaded base model.
    """
    if not hasattr(model, "peft_config") or not hasattr(model, "save_pretrained"):
        raise InvalidTrainingConfig("save_adapter needs a peft model (see attach_lora)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model: Any = model
    with _quiet():
        peft_model.save_pretrained(out, safe_serialization=True)
    (out / "adapter_spec.json").write_text(adapter_spec(model).to_json() + "\n")
    return out


# --------------------------------------------------------------------------------------------
# DP-SGD
# --------------------------------------------------------------------------------------------


def calibrate_noise(
    target_epsilon: float, sample_rate: float, steps: int, delta: float, accountant: str = "rdp"
) -> float:
    """The noise multiplier for ``(target_epsilon, delta)`` after ``steps`` Poisson steps.

    Delegates to :func:`dp.accounting.noise_multiplier_for`, whose search only returns a
    sigma whose computed epsilon is <= the target (opacus #346 can overshoot; DP-07).
    """
    from dp import accounting

    if accountant not in ACCOUNTANT_NAMES:
        raise InvalidTrainingConfig(f"accountant must be one of {ACCOUNTANT_NAMES}")
    return float(
        accounting.noise_multiplier_for(target_epsilon, sample_rate, steps, delta, accountant)
    )


def _epsilon(sample_rate: float, sigma: float, steps: int, delta: float, accountant: str) -> float:
    from dp import accounting

    return float(accounting.epsilon(sample_rate, sigma, steps, delta, accountant))


@dataclass(frozen=True, slots=True, eq=False)
class StepInfo:
    """What one step did, for a ``step_callback`` (tests, logging).

    ``per_sample_norms`` are the joint L2 norms over all trainable tensors *before* clipping;
    ``grad_samples`` maps each trainable name to its per-sample gradients (a copy), in the
    order of ``indices`` (the sampled blocks). Both are empty (``grad_samples`` is ``None``)
    without DP. Security: local debugging data; it must never leave the device.
    """

    step: int
    batch_size: int
    indices: tuple[int, ...]
    loss: float | None
    per_sample_norms: npt.NDArray[np.float64]
    grad_samples: Mapping[str, torch.Tensor] | None


@dataclass(frozen=True, slots=True, eq=False)
class TrainResult:
    """One local training run: the update to aggregate and what it cost in privacy.

    ``delta_vector`` = trained adapter vector - starting one (float32, layout ``spec``).
    ``epsilon`` is ``inf`` for non-private training (or ``noise_multiplier == 0``).
    ``steps`` counts every sampled batch, empty ones included: each is a noised, accounted step.
    """

    delta_vector: npt.NDArray[np.float32]
    spec: AdapterSpec
    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    empty_batches: int
    mean_loss: float
    clip: float
    batch_size: int
    accountant: str
    private: bool
    seeded: bool
    seconds: float
    step_seconds: tuple[float, ...] = field(default=())


def _logits(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-token logits ``(batch, seq, vocab)``: a transformers model is called with
    ``input_ids=``; any other module (possibly inside peft) with the token batch as its one
    positional argument, returning logits or an object with ``.logits``."""
    config = getattr(model, "config", None)
    out = (
        model(input_ids=batch)
        if config is not None and not isinstance(config, dict)
        else model(batch)
    )
    logits = getattr(out, "logits", out)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 3 or logits.shape[:2] != batch.shape:
        raise InvalidTrainingConfig(
            "the model must return logits of shape (batch, sequence, vocabulary) for a token batch"
        )
    return logits


def _lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean over sequences of each sequence's mean next-token cross-entropy.

    Each sequence's own loss is its mean, so the record (one block) is the privacy unit and
    opacus' ``loss_reduction="mean"`` recovers exact per-sequence gradients.
    """
    logits = _logits(model, batch)
    v = logits.shape[-1]
    per_token = nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, v).float(), batch[:, 1:].reshape(-1), reduction="none"
    )
    return per_token.reshape(batch.shape[0], -1).mean(dim=1).mean()


def _generator(
    seed: int | None, purpose: str, device: torch.device | str = "cpu"
) -> torch.Generator:
    """A generator for ``purpose``: from the test ``seed``, else seeded from the OS CSPRNG."""
    if seed is None:
        start = secrets.randbits(63)
    else:
        digest = hashlib.sha256(f"train-dp\x1f{seed}\x1f{purpose}".encode()).digest()
        start = int.from_bytes(digest[:8], "big") >> 1
    return torch.Generator(device=device).manual_seed(start)


def _poisson_batches(
    n: int, sample_rate: float, steps: int, gen: torch.Generator
) -> Iterator[torch.Tensor]:
    """Indices of each step's batch: every record independently with probability q (DP-05)."""
    for _ in range(steps):
        mask = torch.rand(n, generator=gen) < sample_rate
        yield mask.nonzero(as_tuple=True)[0]


def _resolve_steps(steps: int | None, epochs: float | None, sample_rate: float) -> int:
    if (steps is None) == (epochs is None):
        raise InvalidTrainingConfig("give exactly one of steps and epochs")
    if steps is not None:
        return _check_int("steps", steps, low=0)
    e = _check_float("epochs", epochs, low=0.0)
    return math.ceil(e / sample_rate - 1e-9)


def _check_blocks(blocks: object) -> torch.Tensor:
    if not isinstance(blocks, torch.Tensor) or blocks.dtype != torch.long or blocks.ndim != 2:
        raise InvalidTrainingConfig("blocks must be a 2-D int64 tensor (n_blocks, block_size)")
    if blocks.shape[0] < 1 or blocks.shape[1] < 2:
        raise InvalidTrainingConfig("blocks must hold >= 1 block of >= 2 tokens")
    return blocks


def train_dp(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 16,
    lr: float = 0.05,
    clip: float = 1.0,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    delta: float = 1e-5,
    private: bool = True,
    accountant: str = "rdp",
    optimizer: Literal["sgd", "adam"] = "sgd",
    momentum: float = 0.0,
    seed: int | None = None,
    empty_batch: Literal["noise", "random"] = "noise",
    grad_sample_mode: str = "hooks",
    num_threads: int | None = 1,
    step_callback: Callable[[StepInfo], None] | None = None,
) -> TrainResult:
    """Train ``model``'s adapter on ``blocks`` with DP-SGD and return the update.

    Sampling is Poisson with ``q = batch_size / len(blocks)`` (``batch_size`` is the *expected*
    batch); ``steps``, or ``epochs`` (``steps = ceil(epochs / q)``), is fixed in advance and
    every step is accounted, empty batches included (``empty_batch="noise"``: pure noise, as
    opacus' zero-length batch; ``"random"``: one data-independent random row, as opacus'
    ``rand_on_empty``). Each example's gradient over all trainable tensors jointly is clipped
    to ``clip``; Gaussian noise of std ``noise_multiplier * clip`` is added to the sum, which is
    divided by the public ``batch_size`` (never the sampled size, docs/threats.md DP-06).

    Give ``noise_multiplier`` or ``target_epsilon`` (calibrated with :func:`calibrate_noise`;
    the reported epsilon never exceeds it). ``noise_multiplier=0`` clips without noise and
    ``private=False`` trains without opacus; both report ``epsilon = inf``.
    Per-sample gradients use opacus' hooks without wrapping the model (``wrap_model=False``),
    so ``model`` stays a normal peft model; ``grad_sample_mode`` is ``hooks`` or ``functorch``
    (ghost clipping is refused: with an HF model's own loss it silently skips clipping).
    ``seed`` is for tests only; without it randomness comes from the OS CSPRNG.
    ``num_threads`` sets torch's intra-op threads for the run (1: no OpenMP spin-waiting on
    small shared machines); ``None`` leaves them alone.
    """
    blocks = _check_blocks(blocks)
    n = int(blocks.shape[0])
    batch_size = _check_int("batch_size", batch_size, low=1)
    if batch_size > n:
        raise InvalidTrainingConfig(f"batch_size {batch_size} exceeds the {n} local blocks")
    sample_rate = batch_size / n
    n_steps = _resolve_steps(steps, epochs, sample_rate)
    lr = _check_float("lr", lr, low=0.0, strict=True)
    clip = _check_float("clip", clip, low=0.0, strict=True)
    momentum = _check_float("momentum", momentum, low=0.0)
    delta = _check_float("delta", delta, low=0.0, strict=True)
    if delta >= 1.0:
        raise InvalidTrainingConfig("delta must be < 1")
    if accountant not in ACCOUNTANT_NAMES:
        raise InvalidTrainingConfig(f"accountant must be one of {ACCOUNTANT_NAMES}")
    if optimizer not in ("sgd", "adam"):
        raise InvalidTrainingConfig("optimizer must be 'sgd' or 'adam'")
    if empty_batch not in ("noise", "random"):
        raise InvalidTrainingConfig("empty_batch must be 'noise' or 'random'")
    if grad_sample_mode not in _GRAD_SAMPLE_MODES:
        raise InvalidTrainingConfig(
            f"grad_sample_mode must be one of {_GRAD_SAMPLE_MODES}, got {grad_sample_mode!r}"
        )
    if seed is not None:
        _check_int("seed", seed, low=0)
    if num_threads is not None:
        _check_int("num_threads", num_threads, low=1)

    sigma = 0.0
    if private:
        if (noise_multiplier is None) == (target_epsilon is None):
            raise InvalidTrainingConfig("give exactly one of noise_multiplier and target_epsilon")
        if noise_multiplier is not None:
            sigma = _check_float("noise_multiplier", noise_multiplier, low=0.0)
        else:
            target = _check_float("target_epsilon", target_epsilon, low=0.0, strict=True)
            sigma = calibrate_noise(target, sample_rate, n_steps, delta, accountant)
    elif noise_multiplier not in (None, 0, 0.0) or target_epsilon is not None:
        raise InvalidTrainingConfig("private=False takes no noise_multiplier or target_epsilon")
    # Account before training: an accountant that fails must stop us before any update (DP-07).
    if n_steps == 0:
        eps = 0.0
    elif not private or sigma == 0.0:
        eps = math.inf
    else:
        eps = _epsilon(sample_rate, sigma, n_steps, delta, accountant)

    start, spec = adapter_to_vector(model, np.float64)
    named = _trainable(model)
    params = [p for _, p in named]
    base_opt: torch.optim.Optimizer = (
        torch.optim.SGD(params, lr=lr, momentum=momentum)
        if optimizer == "sgd"
        else torch.optim.Adam(params, lr=lr)
    )
    device = params[0].device
    sampler_gen = _generator(seed, "poisson")
    noise_gen = _generator(seed, "noise", device)  # opacus draws noise on the params' device
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.train()  # opacus refuses eval mode (opacus #629); our base models have no dropout

    losses: list[float] = []
    step_seconds: list[float] = []
    empty = 0
    accounted = 0
    hooks: Any = None
    t0 = time.perf_counter()
    try:
        with _quiet():
            dp_opt: Any = None
            batches: Iterator[torch.Tensor]
            engine: Any = None
            if private:
                # The same path as an opacus user's loop (client.privacy): make_private on the
                # model (hooks, not wrapped: it stays a peft model), optimizer and data.
                from torch.utils.data import DataLoader, TensorDataset

                from client.privacy import PrivacyEngine

                engine = PrivacyEngine(accountant=accountant)
                hooks, dp_opt, loader = engine.make_private(
                    module=model,
                    optimizer=base_opt,
                    data_loader=DataLoader(TensorDataset(blocks), batch_size=batch_size),
                    noise_multiplier=sigma,
                    max_grad_norm=clip,
                    noise_generator=noise_gen,
                    sampler_generator=sampler_gen,
                    grad_sample_mode=grad_sample_mode,
                    wrap_model=False,
                )
                batches = loader.indices(n_steps)
            else:
                batches = _poisson_batches(n, sample_rate, n_steps, sampler_gen)
            current: dict[str, Any] = {}

            def on_noised_step(opt: Any) -> None:
                # Runs inside DPOptimizer.pre_step after clip + noise: where opacus' accountant
                # hook would count the step.
                nonlocal accounted
                accounted += 1
                if step_callback is None:
                    return
                samples = opt.grad_samples
                if len(samples[0]) == 0:
                    norms = np.zeros(0)
                else:
                    per_param = [g.reshape(len(g), -1).norm(2, dim=-1) for g in samples]
                    norms = torch.stack(per_param, dim=1).norm(2, dim=1).double().cpu().numpy()
                grads = {
                    name: g.detach().clone() for (name, _), g in zip(named, samples, strict=True)
                }
                current["info"] = StepInfo(
                    current["step"], current["size"], current["idx"], current["loss"], norms, grads
                )

            if dp_opt is not None:
                # DPOptimizer keeps one step hook: the engine's accountant's, then ours.
                account_step = dp_opt.step_hook

                def both_hooks(opt: Any) -> None:
                    account_step(opt)
                    on_noised_step(opt)

                dp_opt.attach_step_hook(both_hooks)

            for step, idx in enumerate(batches, 1):
                ts = time.perf_counter()
                batch = blocks[idx].to(device)
                size = int(batch.shape[0])
                current.update(step=step, size=size, loss=None, info=None)
                current["idx"] = tuple(int(i) for i in idx)
                empty += size == 0
                if dp_opt is None:
                    if size > 0:  # an empty batch changes nothing without DP
                        loss = _lm_loss(model, batch)
                        current["loss"] = float(loss.detach())
                        # Sum of per-record losses over the public expected batch size, as DP.
                        torch.autograd.backward(loss * (size / batch_size))
                        base_opt.step()
                        base_opt.zero_grad(set_to_none=True)
                else:
                    if size == 0 and empty_batch == "random":
                        shape = (1, int(blocks.shape[1]))
                        batch = torch.randint(
                            0, _vocab_size(model), shape, generator=noise_gen, device=device
                        )
                    if batch.shape[0] > 0:
                        loss = _lm_loss(model, batch)
                        if size > 0:
                            current["loss"] = float(loss.detach())
                        torch.autograd.backward(loss)
                    else:
                        for p in params:  # zero-length per-sample grads: the step is pure noise
                            none_yet = torch.zeros((0, *p.shape), dtype=p.dtype, device=device)
                            setattr(p, "grad_sample", none_yet)  # noqa: B010 (opacus' attribute)
                    _check_grad_samples(named, int(batch.shape[0]))
                    dp_opt.step()
                    dp_opt.zero_grad(set_to_none=True)
                if current["loss"] is not None:
                    losses.append(current["loss"])
                step_seconds.append(time.perf_counter() - ts)
                if step_callback is not None:
                    info = current["info"]
                    if info is None:
                        info = StepInfo(
                            step, size, current["idx"], current["loss"], np.zeros(0), None
                        )
                    step_callback(info)
    finally:
        if hooks is not None:
            hooks.cleanup()
        for p in params:
            for attr in ("summed_grad", "grad_sample"):
                if hasattr(p, attr):
                    delattr(p, attr)
            p.grad = None
        if num_threads is not None:
            torch.set_num_threads(old_threads)
        model.train(was_training)
    seconds = time.perf_counter() - t0

    if private and not accounted == n_steps == len(engine.accountant):
        raise TrainingError(f"{accounted} steps were noised but {n_steps} were accounted")
    end, _ = adapter_to_vector(model, np.float64)
    if not np.isfinite(end).all():
        raise TrainingError("the adapter became non-finite during training (docs/threats.md DP-09)")
    return TrainResult(
        delta_vector=(end - start).astype(np.float32),
        spec=spec,
        epsilon=eps,
        delta=delta,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=n_steps,
        empty_batches=empty,
        mean_loss=float(np.mean(losses)) if losses else math.nan,
        clip=clip,
        batch_size=batch_size,
        accountant=accountant if private else "none",
        private=private,
        seeded=seed is not None,
        seconds=seconds,
        step_seconds=tuple(step_seconds),
    )


def _vocab_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None)
    if not isinstance(size, int) or size < 1:
        raise InvalidTrainingConfig("the model's config has no vocab_size")
    return size


def _check_grad_samples(named: Sequence[tuple[str, nn.Parameter]], batch: int) -> None:
    """Every trainable tensor has a per-sample gradient for this batch, or we stop (DP-09)."""
    for name, p in named:
        g = getattr(p, "grad_sample", None)
        if isinstance(g, list):
            raise PerSampleGradientMissing(f"{name}: gradients accumulated over several passes")
        if not isinstance(g, torch.Tensor) or g.shape != (batch, *p.shape):
            raise PerSampleGradientMissing(f"{name} has no per-sample gradient for this batch")


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_loss(model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over every predicted token of ``blocks``."""
    blocks = _check_blocks(blocks)
    _check_int("batch_size", batch_size, low=1)
    device = next(model.parameters()).device
    total = 0.0
    count = 0
    with _quiet():
        for i in range(0, blocks.shape[0], batch_size):
            batch = blocks[i : i + batch_size].to(device)
            logits = _logits(model, batch)
            v = logits.shape[-1]
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, v).float(), batch[:, 1:].reshape(-1), reduction="sum"
            )
            total += float(loss)
            count += batch[:, 1:].numel()
    return total / count


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: TokenizerLike, prompt: str, max_new_tokens: int = 20
) -> str:
    """Greedy continuation of ``prompt`` (the new text only); stops at eos."""
    _check_int("max_new_tokens", max_new_tokens, low=0)
    ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    eos = tokenizer.eos_token_id
    if not ids:
        if eos is None:
            raise InvalidTrainingConfig("an empty prompt needs a tokenizer with an eos token")
        ids = [eos]
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    device = next(model.parameters()).device
    out: list[int] = []
    with _quiet():
        for _ in range(max_new_tokens):
            context = ids + out
            if isinstance(limit, int):
                context = context[-limit:]
            logits = _logits(model, torch.tensor([context], device=device))
            nxt = int(logits[0, -1].argmax())
            if eos is not None and nxt == eos:
                break
            out.append(nxt)
    return tokenizer.decode(out, skip_special_tokens=True)
