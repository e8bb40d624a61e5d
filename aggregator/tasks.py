"""What a round computes, as seen by the aggregator: the plug-in point between the secure-sum
service and the job (plain statistics, or federated DP-LoRA in :mod:`aggregator.fl`).

A task gives each round its public description (``task`` bytes, bound into ``dp_digest``), the
global model it starts from (bound into ``model_digest``) and the ring parameters; after the
secure sum it publishes the result. It never sees an individual contribution.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from dp.composed import DistributedDP
from dp.distributed import DistributedDPConfig, decode
from secagg import RoundConfig

__all__ = [
    "DP_STATISTICS_KIND",
    "DpStatisticsTask",
    "RoundTask",
    "StatisticsTask",
    "TaskRound",
    "save_npy",
]

DP_STATISTICS_KIND = "dp-statistics/v1"


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


class DpStatisticsTask:
    """The members' vectors summed under user-level distributed DP.

    Give it the same :class:`dp.DistributedDP` as the members' contributors
    (:class:`client.agent.DpStatisticsContributor`) and :func:`secagg.simulate`: the ring, the
    encoded dimension and the noise follow from ``dim``, ``n``, ``t`` and the degree, and each
    round's task (bound into ``dp_digest``) carries the resolved parameters and a fresh public
    rotation seed, which every member checks against its own before it encodes.
    """

    def __init__(
        self,
        dim: int,
        dp: DistributedDP | DistributedDPConfig,
        *,
        n: int,
        t: int,
        degree: int | None = None,
    ) -> None:
        if isinstance(dp, DistributedDP):
            self.dp_config = dp.resolve(dim, n, t, n - 1 if degree is None else degree)
        elif isinstance(dp, DistributedDPConfig):
            if dp.dim != dim or dp.num_clients != n or dp.min_survivors < t:
                raise ValueError("the DP parameters do not fit this job's dim, n and t")
            self.dp_config = dp
        else:
            raise TypeError(f"dp must be DistributedDP or DistributedDPConfig, not {dp!r}")

    def max_message_bytes(self) -> int:
        return 0

    def begin(self, round_number: int) -> TaskRound:
        seed = os.urandom(32)  # public, fresh per round: the rotation's signs
        doc = {
            "kind": DP_STATISTICS_KIND,
            "round": round_number,
            "round_seed": seed.hex(),
            "dp": self.dp_config.canonical_bytes().decode(),
        }
        return TaskRound(
            task=json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),
            d=self.dp_config.encoded_dim,
            bits=self.dp_config.bits,
            state={"seed": seed},
        )

    def publish(
        self,
        round_number: int,
        config: RoundConfig,
        task_round: TaskRound,
        ring_sum: npt.NDArray[np.uint32],
        included: frozenset[int],
        out: Path,
    ) -> dict[str, Any]:
        dec = decode(ring_sum, self.dp_config, task_round.state["seed"], len(included))
        npy = out / f"round-{round_number}.npy"
        digest = save_npy(npy, dec.values)
        return {
            "npy": str(npy),
            "aggregate_sha256": digest,
            "noise_stddev": dec.noise_stddev,
            "rounding_error_bound": dec.rounding_error_bound,
            "dp": json.loads(self.dp_config.canonical_bytes()),
        }
