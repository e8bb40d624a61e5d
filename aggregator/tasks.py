"""What a round computes, as seen by the aggregator: the plug-in point between the secure-sum
service and the job (plain statistics, or federated DP-LoRA in :mod:`aggregator.fl`).

A task gives each round its public description (``task`` bytes, bound into ``dp_digest``), the
global model it starts from (bound into ``model_digest``) and the ring parameters; after the
secure sum it publishes the result. It never sees an individual contribution.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from secagg import RoundConfig

__all__ = ["RoundTask", "StatisticsTask", "TaskRound", "save_npy"]


@dataclass(frozen=True)
class TaskRound:
    """One round's public task data. ``d``/``bits`` override the serve options when set."""

    task: bytes = b""
    model: bytes = b""
    d: int | None = None
    bits: int | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def task_digest(self) -> bytes:
        return hashlib.sha256(self.task).digest() if self.task else bytes(32)

    @property
    def model_digest(self) -> bytes:
        return hashlib.sha256(self.model).digest() if self.model else bytes(32)


class RoundTask(Protocol):
    def max_message_bytes(self) -> int:
        """The largest message this task's rounds need (the model blob), or 0."""
        ...

    def begin(self, round_number: int) -> TaskRound:
        """Public data of the next round (fresh per round)."""
        ...

    def publish(
        self,
        round_number: int,
        config: RoundConfig,
        task_round: TaskRound,
        ring_sum: npt.NDArray[np.uint32],
        included: frozenset[int],
        out: Path,
    ) -> dict[str, Any]:
        """Turn the ring sum into the round's result; returns what goes in the summary."""
        ...


def save_npy(path: Path, array: npt.NDArray[Any]) -> str:
    """Write ``array`` atomically (temp file, fsync, rename); returns its SHA-256."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class StatisticsTask:
    """Sum the members' vectors (``secagg-client join --input``): the ring sum decoded."""

    def max_message_bytes(self) -> int:
        return 0

    def begin(self, round_number: int) -> TaskRound:
        return TaskRound()

    def publish(
        self,
        round_number: int,
        config: RoundConfig,
        task_round: TaskRound,
        ring_sum: npt.NDArray[np.uint32],
        included: frozenset[int],
        out: Path,
    ) -> dict[str, Any]:
        aggregate = config.encoding.decode(ring_sum)
        npy = out / f"round-{round_number}.npy"
        digest = save_npy(npy, aggregate)
        return {
            "npy": str(npy),
            "aggregate_sha256": digest,
            "error_bound": config.encoding.error_bound(len(included)),
        }
