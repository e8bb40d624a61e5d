"""Federated DP-LoRA as an aggregator task: the global adapter goes out, the secure sum of the
clients' distributed-DP-encoded updates comes back, the mean is applied.

Torch-free on purpose: the aggregator only handles vectors. Each round gets a fresh public
rotation seed; the task bytes (bound into ``dp_digest``) carry the DP parameters, the adapter
spec and the local training recipe, so every client signs the same job (docs/threats.md SA-06) and
every client's vector has the same dense shape (SA-15). The consortium's ledger records one
user-level DP event per included client and round.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator.tasks import TaskRound, save_npy
from dp._bounds import log_tail_skellam
from dp.accounting import distributed_event
from dp.composed import DistributedDP
from dp.distributed import DistributedDPConfig, decode, round_privacy
from dp.ledger import Budget, PrivacyLedger
from protos.ops import utc_stamp
from secagg import ClientPolicy, RoundConfig
from secagg.oneshot import OneShotConfig

__all__ = [
    "NORM_TAIL",
    "DpLoraTask",
    "FlParams",
    "choose_dp_config",
    "corrupt_survivors",
    "task_document",
    "verification_norm_bound",
]

TASK_KIND = "dp-lora/v1"
NORM_TAIL = 2.0**-40  # P(an honest client's encoded vector exceeds the verification bound)


@dataclass(frozen=True)
class FlParams:
    """The federated job: user-level distributed DP and the local DP-SGD recipe.

    ``max_corrupt`` is how many corrupt survivors the noise must withstand (``None``: what the
    default :class:`secagg.ClientPolicy` tolerates for the round's degree, which every client
    also checks). ``dp_calibration`` "honest-survivors" (default) calibrates each share to the
    ``t - c`` honest survivors; "all-survivors" keeps the older ``1/t`` share and records the
    weaker epsilon that actually holds (docs/threats.md DP-10).
    """

    l2_clip: float = 1.0
    noise_multiplier: float = 0.05
    mechanism: str = "gaussian"
    user_budget: float = 1e4
    delta: float = 1e-5
    max_corrupt: int | None = None
    dp_calibration: str = "honest-survivors"
    train: dict[str, Any] = field(
        default_factory=lambda: {
            "steps": 4,
            "batch_size": 8,
            "lr": 0.5,
            "clip": 1.0,
            "noise_multiplier": 1.0,
            "record_budget": 8.0,
            "block_size": 64,
        }
    )

    @property
    def distributed_dp(self) -> DistributedDP:
        """The user-level DP part of the job, as the simulator and the clients take it."""
        return DistributedDP(
            l2_clip=self.l2_clip,
            noise_multiplier=self.noise_multiplier,
            mechanism=self.mechanism,  # type: ignore[arg-type]
            max_corrupt=self.max_corrupt,
            calibration=self.dp_calibration,  # type: ignore[arg-type]
        )

    @classmethod
    def with_dp(cls, dp: DistributedDP, **rest: Any) -> FlParams:
        """A job whose user-level DP is ``dp`` (the object :func:`secagg.simulate` takes)."""
        return cls(
            l2_clip=dp.l2_clip,
            noise_multiplier=dp.noise_multiplier,
            mechanism=dp.mechanism,
            max_corrupt=dp.max_corrupt,
            dp_calibration=dp.calibration,
            **rest,
        )


def corrupt_survivors(n: int, params: FlParams, degree: int | None = None) -> int:
    """``c`` for the DP calibration: ``params.max_corrupt``, else the default client policy's
    tolerance for ``degree`` neighbours (``n - 1``: plain SecAgg)."""
    if params.max_corrupt is not None:
        return params.max_corrupt
    return ClientPolicy().corrupt_bound(n - 1 if degree is None else degree)


def choose_dp_config(
    dim: int, n: int, t: int, params: FlParams, *, degree: int | None = None
) -> DistributedDPConfig:
    """The smallest ring whose grid is fine against the signal and the noise
    (:meth:`dp.DistributedDP.resolve`, the same choice :func:`secagg.simulate` makes): a grid
    64 times finer than the per-coordinate signal ``l2_clip / sqrt(d)`` or the noise, when
    larger, and at most 32 bits; the noise calibrated for
    ``c = corrupt_survivors(n, params, degree)`` corrupt survivors."""
    return params.distributed_dp.resolve(dim, n, t, n - 1 if degree is None else degree)


def _noise_norm_bound(cfg: DistributedDPConfig, tail: float) -> float:
    """A bound on the L2 norm of one client's noise share that fails with probability at most
    ``tail``.

    Discrete Gaussian: the share has ``d`` independent ``sigma^2``-subgaussian coordinates
    (CKS20), so by Hsu, Kakade and Zhang (2012, Theorem 1) with ``s = ln(1/tail)``:
    ``P(||N||^2 > sigma^2 (d + 2 sqrt(d s) + 2 s)) <= tail``.

    Skellam with variance ``V`` (not subgaussian): with probability ``>= 1 - tail/2`` every
    ``|N_j| <= a`` (union bound over the coordinates with the Chernoff tail); on that event
    ``||N||^2`` is a sum of ``d`` independent variables in ``[0, a^2]`` with mean ``V`` and
    variance ``<= E N^4 = 3 V^2 + V``, and Bernstein's inequality with ``L = ln(2/tail)`` gives
    ``||N||^2 <= d V + a^2 L / 3 + sqrt((a^2 L / 3)^2 + 2 d (3 V^2 + V) L)`` except with
    probability ``tail/2``.
    """
    d = cfg.encoded_dim
    param = cfg.local_noise_parameter
    if param <= 0.0:
        return 0.0
    if cfg.mechanism != "skellam":
        s = math.log(1.0 / tail)
        return math.sqrt(param * (d + 2.0 * math.sqrt(d * s) + 2.0 * s))
    target = math.log(tail / (4.0 * d))  # 2 d P(N_j >= a) <= tail / 2
    a = math.sqrt(param)
    while log_tail_skellam(a, param) > target:
        a *= 1.05
    big_l = math.log(2.0 / tail)
    lin = a * a * big_l / 3.0
    dev = lin + math.sqrt(lin * lin + 2.0 * d * (3.0 * param * param + param) * big_l)
    return math.sqrt(d * param + dev)


def verification_norm_bound(cfg: DistributedDPConfig, tail: float = NORM_TAIL) -> int:
    """The squared L2 bound for contribution verification (docs/protocol.md §7) of a DP-LoRA round.

    A client's encoded vector is its rounded update plus its noise share, ``r + N``. The
    conditional rounding guarantees ``||r|| <= rounded_l2_bound`` (always); the noise share's
    norm is below :func:`_noise_norm_bound` except with probability ``tail``. By the triangle
    inequality an honest client stays within ``(rounded_l2_bound + noise bound)^2`` except with
    probability ``tail`` (plus the ring's own wrap probability, ``cfg.wrap_probability``, for
    the centred lift to be ``r + N``); it then cannot prove, and does not take part. A
    malicious client can send any vector within the bound: up to about ``sqrt(bound)`` in L2,
    instead of the ring's ``2^(b-1) sqrt(d)``.
    """
    if not 0.0 < tail < 1.0:
        raise ValueError("the tail probability must be in (0, 1)")
    total = cfg.rounded_l2_bound + _noise_norm_bound(cfg, tail)
    bound = math.ceil(total * total * (1.0 + 1e-9)) + 1  # float slack, rounded up
    if bound >= 1 << 64:
        raise ValueError("the verification bound does not fit 64 bits for these DP parameters")
    return bound


def task_document(
    round_number: int,
    run_id: str,
    seed: bytes,
    dp_cfg: DistributedDPConfig,
    spec_json: str,
    params: FlParams,
) -> bytes:
    """Canonical bytes of one round's public task."""
    doc = {
        "kind": TASK_KIND,
        "run_id": run_id,
        "round": round_number,
        "round_seed": seed.hex(),
        "dp": dp_cfg.canonical_bytes().decode(),
        "adapter_spec": spec_json,
        "train": params.train,
        "delta": params.delta,
        "user_budget": params.user_budget,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class DpLoraTask:
    """Holds the global adapter between rounds; see the module docstring."""

    def __init__(
        self,
        initial: npt.NDArray[np.floating[Any]],
        spec_json: str,
        *,
        n: int,
        t: int,
        params: FlParams,
        run_id: str,
        ledger_path: Path | None = None,
        ledger_key: Ed25519PrivateKey | None = None,
        verify: bool = False,
        degree: int | None = None,
    ) -> None:
        vec = np.asarray(initial, dtype=np.float32)
        if vec.ndim != 1 or not np.all(np.isfinite(vec)):
            raise ValueError("the initial adapter must be a finite 1-D vector")
        self.global_vec = vec
        self.spec_json = spec_json
        self.n, self.t = n, t
        self.params = params
        self.run_id = run_id
        self.dp_cfg = choose_dp_config(vec.size, n, t, params, degree=degree)
        # docs/protocol.md §7: every update is norm-proven against what an honest encoder produces.
        self.norm_bound = verification_norm_bound(self.dp_cfg) if verify else None
        self._ledger_args = (ledger_path, ledger_key)
        self._ledger: PrivacyLedger | None = None

    @property
    def ledger(self) -> PrivacyLedger | None:
        """Opened on first use, in the thread that publishes (SQLite handles are per thread)."""
        path, key = self._ledger_args
        if self._ledger is None and path is not None and key is not None:
            self._ledger = PrivacyLedger.open_or_create(path, key)
        return self._ledger

    def max_message_bytes(self) -> int:
        return 4 * self.global_vec.size + (1 << 16)

    def begin(self, round_number: int) -> TaskRound:
        seed = os.urandom(32)  # public, fresh per round: the rotation's signs
        task = task_document(
            round_number, self.run_id, seed, self.dp_cfg, self.spec_json, self.params
        )
        return TaskRound(
            task=task,
            model=self.global_vec.astype("<f4").tobytes(),
            d=self.dp_cfg.encoded_dim,
            bits=self.dp_cfg.bits,
            state={"seed": seed},
        )

    def publish(
        self,
        round_number: int,
        config: RoundConfig | OneShotConfig,
        task_round: TaskRound,
        ring_sum: npt.NDArray[np.uint32],
        included: frozenset[int],
        out: Path,
    ) -> dict[str, Any]:
        seed: bytes = task_round.state["seed"]
        dec = decode(ring_sum, self.dp_cfg, seed, len(included))
        mean = dec.mean
        self.global_vec = (self.global_vec.astype(np.float64) + mean).astype(np.float32)
        sum_digest = save_npy(out / f"round-{round_number}.npy", dec.values)
        adapter_digest = save_npy(out / f"round-{round_number}-adapter.npy", self.global_vec)
        charged = []
        ledger = self.ledger
        if ledger is not None:
            event = distributed_event(round_privacy(self.dp_cfg, len(included)))
            for u in sorted(included):
                ledger.charge(
                    event,
                    client_id=str(u),
                    run_id=self.run_id,
                    round_index=round_number,
                    budget=Budget(self.params.user_budget, self.params.delta),
                    timestamp=utc_stamp(),
                )
                charged.append(u)
        return {
            "npy": str(out / f"round-{round_number}.npy"),
            "aggregate_sha256": sum_digest,
            "adapter_npy": str(out / f"round-{round_number}-adapter.npy"),
            "adapter_sha256": adapter_digest,
            "mean_update_l2": float(np.linalg.norm(mean)),
            "noise_stddev": dec.noise_stddev,
            "rounding_error_bound": dec.rounding_error_bound,
            "dp": json.loads(self.dp_cfg.canonical_bytes()),
            "ledger_charged": charged,
        }
