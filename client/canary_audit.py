"""One-run canary audit of DP-SGD on the tiny model (Steinke, Nasr, Jagielski, NeurIPS 2023).

``m`` canaries (blocks of random token ids from the part of the tiny vocabulary that the byte
tokenizer never emits, so no real record resembles them) are each put into the client's
training set independently with probability 1/2, beside a few real blocks. One DP-SGD run of
:func:`client.training.train_dp` follows; each canary is scored by how much its loss fell
(base model minus trained model), the ``k_pos`` highest are guessed "in", the ``k_neg`` lowest
"out", and :func:`dp.empirical.audit_guesses` turns the guesses into an epsilon lower bound at
``confidence``. The accountant's epsilon for the *intended* configuration is the upper bound;
a lower bound above it (``flagged``) means the training does not give what it claims.

Deliberately broken runs for testing the audit (the claim stays that of the intended run):

* ``noise_off``: noise multiplier 0, clipping kept;
* ``clip_off``: no clipping (``max_grad_norm`` 1e6) while the noise keeps the absolute standard
  deviation ``noise_multiplier * clip`` of the intended run, as a forgotten clip would;
* ``private=False``: plain SGD, neither clipping nor noise.

The canaries' inclusion and tokens come from a generator seeded by the OS CSPRNG unless a test
``seed`` is given. The sample rate ``batch_size / n`` depends on how many canaries were drawn
in; the claimed epsilon is accounted with the realised rate. ``k_pos``/``k_neg`` are fixed
before the run (no search over them: that would be multiple testing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

import numpy as np
import torch
from torch import nn

from client.training import (
    InvalidTrainingConfig,
    attach_lora,
    load_base_model,
    local_text_corpus,
    tokenize_blocks,
    train_dp,
)
from dp import accounting, empirical

__all__ = [
    "BROKEN_MODES",
    "PRESETS",
    "CanaryAuditResult",
    "canary_losses",
    "main",
    "make_canaries",
    "run_canary_audit",
]

#: What ``--broken`` can switch off.
BROKEN_MODES: Final[tuple[str, ...]] = ("noise", "clip")

#: Hyper-parameters under which a broken run of that kind memorises its canaries visibly on the
#: tiny model (``None``: the honest default, the same as ``noise``). Clip-off needs a clip far
#: below the per-example gradient norms (~0.15 here) and a learning rate that stays stable
#: without clipping; noise-off needs a learning rate large enough for clipped steps.
PRESETS: Final[dict[str | None, dict[str, float]]] = {
    None: {"clip": 0.01, "lr": 75.0},
    "noise": {"clip": 0.01, "lr": 75.0},
    "clip": {"clip": 0.001, "lr": 5.0},
}

_CLIP_OFF: Final[float] = 1e6  # a max_grad_norm no gradient reaches
_CANARY_LOW: Final[int] = 257  # ByteTokenizer emits ids 0..256 only


@dataclass(frozen=True, slots=True)
class CanaryAuditResult:
    """The audit's outcome: ``lower_bound`` (empirical, at ``confidence``) beside
    ``upper_bound`` (the accountant's epsilon claimed for the intended run)."""

    lower_bound: float
    upper_bound: float
    flagged: bool
    confidence: float
    delta: float
    canaries: int
    guesses: int
    correct: int
    included: tuple[bool, ...]
    scores: tuple[float, ...]
    broken: str | None
    noise_multiplier: float
    clip: float
    lr: float
    sample_rate: float
    steps: int
    batch_size: int
    real_blocks: int
    train_seconds: float
    seconds: float

    def to_dict(self, *, details: bool = False) -> dict[str, Any]:
        """JSON-ready fields; ``included`` and ``scores`` only with ``details``."""
        d = asdict(self)
        if not details:
            del d["included"], d["scores"]
        return d


def _derive(seed: int, purpose: str) -> int:
    digest = hashlib.sha256(f"canary-audit\x1f{seed}\x1f{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def _generator(seed: int | None, purpose: str) -> torch.Generator:
    start = secrets.randbits(63) if seed is None else _derive(seed, purpose)
    return torch.Generator().manual_seed(start)


def make_canaries(
    m: int, block_size: int, vocab_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``m`` random canary blocks of ids in ``[257, vocab_size)`` and their inclusion mask
    (each ``True`` independently with probability 1/2)."""
    if vocab_size <= _CANARY_LOW:
        raise InvalidTrainingConfig("canaries need token ids the tokenizer never emits")
    blocks = torch.randint(_CANARY_LOW, vocab_size, (m, block_size), generator=gen)
    included = torch.rand(m, generator=gen) < 0.5
    return blocks, included


@torch.no_grad()
def canary_losses(model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 50) -> np.ndarray:
    """Each block's mean next-token cross-entropy (nats), as a float64 array."""
    out: list[torch.Tensor] = []
    device = next(model.parameters()).device
    for i in range(0, blocks.shape[0], batch_size):
        batch = blocks[i : i + batch_size].to(device)
        logits = model(input_ids=batch).logits
        v = logits.shape[-1]
        per_token = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, v).float(), batch[:, 1:].reshape(-1), reduction="none"
        )
        out.append(per_token.reshape(batch.shape[0], -1).mean(dim=1).double().cpu())
    return torch.cat(out).numpy()


def run_canary_audit(
    *,
    m: int = 100,
    steps: int = 500,
    batch_size: int = 8,
    lr: float = 75.0,
    clip: float = 0.01,
    noise_multiplier: float = 6.0,
    private: bool = True,
    noise_off: bool = False,
    clip_off: bool = False,
    real_blocks: int = 16,
    block_size: int = 32,
    k_pos: int | None = None,
    k_neg: int | None = None,
    delta: float = 1e-5,
    confidence: float = 0.95,
    accountant: str = "rdp",
    mode: Literal["ffa", "lora"] = "lora",
    rank: int = 8,
    seed: int | None = None,
) -> CanaryAuditResult:
    """Train the tiny model once with ``m`` canaries and bound its epsilon from below.

    ``k_pos``/``k_neg`` default to ``3m/10`` each. ``upper_bound`` is the accountant's epsilon
    for ``noise_multiplier`` at the realised sample rate, whatever ``noise_off``, ``clip_off``
    or ``private`` did to the actual training. ``seed`` is for tests only.
    """
    t0 = time.perf_counter()
    if isinstance(m, bool) or not isinstance(m, int) or m < 2:
        raise InvalidTrainingConfig(f"m must be an int >= 2, got {m!r}")
    kp = 3 * m // 10 if k_pos is None else k_pos
    kn = 3 * m // 10 if k_neg is None else k_neg
    if kp < 0 or kn < 0 or kp + kn > m:
        raise InvalidTrainingConfig("need k_pos, k_neg >= 0 and k_pos + k_neg <= m")
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise InvalidTrainingConfig("noise_multiplier (the intended one) must be > 0")

    base, tok = load_base_model("tiny")
    model = attach_lora(base, mode, r=rank)
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0))
    real = tokenize_blocks(local_text_corpus(0, 4), tok, block_size, max_blocks=real_blocks)
    canaries, included = make_canaries(m, block_size, vocab, _generator(seed, "canaries"))
    blocks = torch.cat([real, canaries[included]])
    before = canary_losses(model, canaries)

    train_clip = _CLIP_OFF if clip_off else clip
    sigma = 0.0 if noise_off else noise_multiplier * clip / train_clip
    train_seed = None if seed is None else _derive(seed, "train")
    if private:
        result = train_dp(
            model,
            blocks,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            clip=train_clip,
            noise_multiplier=sigma,
            delta=delta,
            accountant=accountant,
            seed=train_seed,
        )
    else:
        result = train_dp(
            model, blocks, steps=steps, batch_size=batch_size, lr=lr, private=False, seed=train_seed
        )
    claimed = float(
        accounting.epsilon(result.sample_rate, noise_multiplier, steps, delta, accountant)
    )

    scores = before - canary_losses(model, canaries)
    inc = included.numpy()
    audit = empirical.audit_guesses(
        inc, empirical.guesses_from_scores(scores, kp, kn), delta=delta, confidence=confidence
    )
    broken = (
        None
        if private and not (noise_off or clip_off)
        else _broken_name(private, noise_off, clip_off)
    )
    return CanaryAuditResult(
        lower_bound=audit.epsilon_lower_bound,
        upper_bound=claimed,
        flagged=audit.epsilon_lower_bound > claimed,
        confidence=audit.confidence,
        delta=delta,
        canaries=m,
        guesses=audit.guesses,
        correct=audit.correct,
        included=tuple(bool(x) for x in inc),
        scores=tuple(float(x) for x in scores),
        broken=broken,
        noise_multiplier=float(noise_multiplier),
        clip=float(clip),
        lr=float(lr),
        sample_rate=result.sample_rate,
        steps=steps,
        batch_size=batch_size,
        real_blocks=int(real.shape[0]),
        train_seconds=result.seconds,
        seconds=time.perf_counter() - t0,
    )


def _broken_name(private: bool, noise_off: bool, clip_off: bool) -> str:
    if not private:
        return "nonprivate"
    return "+".join(n for n, on in (("noise", noise_off), ("clip", clip_off)) if on)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m client.canary_audit [--broken noise|clip] [--seed N] [--json]``."""
    p = argparse.ArgumentParser(prog="python -m client.canary_audit", description=__doc__)
    p.add_argument("--broken", choices=BROKEN_MODES, default=None)
    p.add_argument("--m", type=int, default=100)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="default: the preset's")
    p.add_argument("--clip", type=float, default=None, help="default: the preset's")
    p.add_argument("--noise-multiplier", type=float, default=6.0)
    p.add_argument("--seed", type=int, default=None, help="test seed (default: OS CSPRNG)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--details", action="store_true", help="include inclusions and scores")
    a = p.parse_args(argv)
    preset = PRESETS[a.broken]
    res = run_canary_audit(
        m=a.m,
        steps=a.steps,
        batch_size=a.batch_size,
        lr=preset["lr"] if a.lr is None else a.lr,
        clip=preset["clip"] if a.clip is None else a.clip,
        noise_multiplier=a.noise_multiplier,
        noise_off=a.broken == "noise",
        clip_off=a.broken == "clip",
        seed=a.seed,
    )
    if a.json:
        print(json.dumps(res.to_dict(details=a.details), indent=2, sort_keys=True))
    else:
        verdict = "FLAGGED" if res.flagged else "ok"
        print(
            f"{verdict}: epsilon lower bound {res.lower_bound:.3f} ({res.confidence:.0%}) vs "
            f"claimed {res.upper_bound:.3f}; {res.correct}/{res.guesses} guesses right"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
