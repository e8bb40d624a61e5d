"""Federated fine-tuning of your own model on your members' own files, in one call, in memory.

:func:`finetune` is the whole data path of a deployment, with the transport left out: every
member trains LoRA with DP-SGD on its own local dataset (record-level DP, this project's
accountant), clips and noises its update with user-level distributed DP and masks it with
secure aggregation (:func:`secagg.simulate` with ``dp=``: the aggregator only ever decodes
the noisy sum); the mean update is applied to the global adapter, round after round. Members
share one base model object here (only the adapter changes); a deployment gives each its own
process (``secagg-client train --model PATH --data PATH``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from client._training_errors import InvalidTrainingConfig
from dp.accounting import DpSgdEvent, account, distributed_event
from dp.composed import DistributedDP
from dp.distributed import DistributedDPConfig, round_privacy
from secagg import ClientPolicy, RoundConfig, Stage, simulate

__all__ = ["FinetuneResult", "finetune"]

_LORA_DEFAULTS: Mapping[str, Any] = {
    "mode": "ffa",
    "r": 8,
    "alpha": 16,
    "targets": None,
    "public_seed": 0,
}


@dataclass
class FinetuneResult:
    """The fine-tuned model (base + global adapter), what each round did, what it cost.

    ``record_epsilon``: the largest member's record-level epsilon over all rounds (DP-SGD,
    at ``delta``); ``user_epsilon``: the user-level epsilon of the distributed-DP sums over all
    rounds (worst case: ``t`` survivors, ``c`` of them adding no noise).
    """

    model: Any
    tokenizer: Any
    spec: Any
    adapter: npt.NDArray[np.float32]
    history: list[dict[str, Any]] = field(default_factory=list)
    record_epsilon: float = 0.0
    user_epsilon: float = 0.0
    delta: float = 1e-5
    dp_config: DistributedDPConfig | None = None

    def save(self, out_dir: str | Path) -> Path:
        """A standard peft adapter folder (``PeftModel.from_pretrained(base, out_dir)``)."""
        from client.training import save_adapter

        return save_adapter(self.model, Path(out_dir))


def finetune(
    model: str | Path,
    datasets: Sequence[str | Path],
    *,
    dp: DistributedDP | None = None,
    rounds: int = 1,
    threshold: int | None = None,
    lora: Mapping[str, Any] | None = None,
    block_size: int = 64,
    max_blocks: int | None = None,
    steps: int = 8,
    batch_size: int = 8,
    lr: float = 0.5,
    clip: float = 1.0,
    target_epsilon: float | None = 8.0,
    noise_multiplier: float | None = None,
    delta: float = 1e-5,
    tokenizer: str | Path | None = None,
    text_field: str = "text",
    drops: Mapping[int, Sequence[int]] | None = None,
    seed: int | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` (``tiny``, ``smollm2`` or a model folder) on ``datasets`` (one local
    dataset per member: JSON Lines, plain text or a ``datasets`` folder) for ``rounds`` rounds.

    ``dp``: user-level distributed DP inside secure aggregation (default
    ``DistributedDP(l2_clip=1.0, noise_multiplier=0.5)``). ``target_epsilon`` (or
    ``noise_multiplier``) is each member's record-level DP-SGD budget *per round* over
    ``steps`` steps of expected batch ``batch_size``. ``threshold``: the SecAgg ``t`` (default:
    the smallest the default client policy accepts). ``lora`` overrides ``mode``, ``r``,
    ``alpha``, ``targets`` (module names; required for architectures without defaults) and
    ``public_seed``. ``drops[r]`` lists members that drop out before uploading in round ``r``.
    ``seed`` makes the run reproducible (tests only).
    """
    from client import training as tr
    from client.data import load_texts

    n = len(datasets)
    if n < 3:
        raise InvalidTrainingConfig("a federation needs at least 3 members (datasets)")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidTrainingConfig(f"rounds must be an int >= 1, got {rounds!r}")
    user_dp = dp if dp is not None else DistributedDP(l2_clip=1.0, noise_multiplier=0.5)
    t = threshold if threshold is not None else ClientPolicy().min_threshold(n - 1)
    if (target_epsilon is None) == (noise_multiplier is None):
        raise InvalidTrainingConfig("give exactly one of target_epsilon and noise_multiplier")
    setup = {**_LORA_DEFAULTS, **(lora or {})}
    base, tok = tr.load_base_model(model, tokenizer=tokenizer)
    net = tr.attach_lora(
        base,
        mode=setup["mode"],
        r=int(setup["r"]),
        alpha=int(setup["alpha"]),
        targets=setup["targets"],
        public_seed=int(setup["public_seed"]),
    )
    global_vec, spec = tr.adapter_to_vector(net, np.float64)
    members = [
        tr.tokenize_blocks(
            load_texts(p, text_field=text_field), tok, block_size, max_blocks=max_blocks
        )
        for p in datasets
    ]
    for p, blocks in zip(datasets, members, strict=True):
        if blocks.shape[0] < batch_size:
            raise InvalidTrainingConfig(
                f"{p} gives {blocks.shape[0]} blocks of {block_size} tokens, fewer than the "
                f"batch size {batch_size}"
            )
    result = FinetuneResult(net, tok, spec, global_vec.astype(np.float32), delta=delta)
    record_events: dict[int, list[DpSgdEvent]] = {u: [] for u in range(1, n + 1)}
    user_events = []
    for r in range(rounds):
        updates: list[npt.NDArray[np.float64]] = []
        losses = []
        for u, blocks in enumerate(members, 1):
            tr.vector_to_adapter(net, global_vec, spec)
            res = tr.train_dp(
                net,
                blocks,
                steps=steps,
                batch_size=batch_size,
                lr=lr,
                clip=clip,
                noise_multiplier=noise_multiplier,
                target_epsilon=target_epsilon,
                delta=delta,
                seed=None if seed is None else seed * 1_000_003 + r * 1009 + u,
            )
            record_events[u].append(DpSgdEvent(res.sample_rate, res.noise_multiplier, res.steps))
            updates.append(res.delta_vector.astype(np.float64))
            losses.append(res.mean_loss)
        config = RoundConfig(n=n, t=t, d=spec.size, round=r)
        dropped = list((drops or {}).get(r, ()))
        sim = simulate(
            config,
            updates,
            drops={Stage.MASKED_INPUT: dropped} if dropped else None,
            dp=user_dp,
            seed=None if seed is None else seed * 7919 + r,
        )
        assert sim.dp is not None
        included = sorted(sim.included)
        mean = sim.aggregate / len(included)
        global_vec = global_vec + mean
        tr.vector_to_adapter(net, global_vec, spec)
        dp_cfg = user_dp.resolve(spec.size, n, t, n - 1)
        result.dp_config = dp_cfg
        user_events.append(distributed_event(round_privacy(dp_cfg)))
        result.history.append(
            {
                "round": r,
                "included": included,
                "train_loss": float(np.nanmean(losses)),
                "mean_update_l2": float(np.linalg.norm(mean)),
                "noise_stddev": sim.dp.noise_stddev,
                "ring_bits": sim.config.ring_bits,
                "encoded_dim": sim.config.d,
            }
        )
    result.adapter = global_vec.astype(np.float32)
    result.record_epsilon = max(account(ev, delta).epsilon for ev in record_events.values())
    eps_user = account(user_events, delta).epsilon
    result.user_epsilon = float(eps_user) if math.isfinite(eps_user) else math.inf
    return result
