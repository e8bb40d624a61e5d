"""The edge device's side of federated DP-LoRA: a :class:`~client.agent.Contributor` that
turns the round's task and global adapter into a distributed-DP ring vector.

Per round, in this order: check the task (kind, adapter spec identical to ours: SA-15; DP
parameters consistent with the round config), load the global adapter, charge the local
privacy ledger for both the record-level DP-SGD and the user-level distributed-DP event
(check-then-commit: a round that would exceed a budget is refused before any training),
train with DP-SGD on the device's own text, and encode the adapter delta with the
distributed-DP encoder (L2 clip, rotation, scaling, rounding, integer noise share, wrap).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from client.agent import AgentError
from dp.accounting import DpSgdEvent, distributed_event
from dp.distributed import DistributedDPConfig, encode, round_privacy
from dp.ledger import Budget, BudgetExceeded, PrivacyLedger, load_signing_key
from protos.ops import utc_stamp
from secagg import ClientPolicy, RoundConfig
from secagg.oneshot import OneShotConfig, plaintext_bits_for

__all__ = [
    "FlClientOptions",
    "FlContributor",
    "check_oneshot_dp",
    "check_round_dp",
    "local_documents",
]

log = logging.getLogger("secagg.client.fl")
TASK_KIND = "dp-lora/v1"


@dataclass(frozen=True)
class FlClientOptions:
    """A training member's local choices. ``model``: ``tiny``, ``smollm2`` or a local model
    folder (``tokenizer``: another folder for its tokenizer). ``data``: a local dataset
    (:func:`client.data.load_texts`: plain text, JSON Lines with ``text_field``, or a
    ``datasets`` folder); without it the member trains on slice ``slice_index`` of
    ``n_slices`` of the built-in docstring corpus (with it, the slice of its own documents)."""

    client_id: int
    model: str
    ledger: Path
    ledger_key: Path
    slice_index: int | None = None
    n_slices: int | None = None
    data: Path | None = None
    tokenizer: Path | None = None
    text_field: str = "text"
    cache_dir: Path | None = None
    max_blocks: int | None = None
    dump_dir: Path | None = None  # testing only: keep this client's own updates, locally
    # Corrupt survivors this client assumes may add no noise (docs/threats.md DP-10); None: what
    # the default ClientPolicy tolerates for the round's degree. A round whose DP parameters
    # assume fewer is refused.
    max_corrupt: int | None = None


def local_documents(options: FlClientOptions) -> list[str]:
    """The member's training documents (see :class:`FlClientOptions`)."""
    from client import data

    sliced = options.slice_index is not None or options.n_slices is not None
    if sliced and (options.slice_index is None or options.n_slices is None):
        raise AgentError("give both the slice and the number of slices, or neither")
    if options.data is None:
        if options.slice_index is None or options.n_slices is None:
            raise AgentError("without local data (--data), give --slice and --n-slices")
        return data.local_text_corpus(options.slice_index, options.n_slices)
    docs = data.load_texts(options.data, text_field=options.text_field)
    if options.slice_index is None or options.n_slices is None:
        return docs
    if not 0 <= options.slice_index < options.n_slices <= len(docs):
        raise AgentError(
            f"slice {options.slice_index} of {options.n_slices} does not fit {len(docs)} documents"
        )
    lo = options.slice_index * len(docs) // options.n_slices
    hi = (options.slice_index + 1) * len(docs) // options.n_slices
    return docs[lo:hi]


def check_oneshot_dp(
    dp_cfg: DistributedDPConfig,
    config: OneShotConfig,
    adapter_size: int,
    max_corrupt: int | None = None,
) -> None:
    """The one-shot analogue of :func:`check_round_dp` (secagg/SPEC.md O9): the ring vector
    must fit the round's grid for its ``n`` clients, and the noise must be calibrated for no
    more contributors than the smallest set the committee releases (``min_cohort``), with at
    least the corrupt contributors this client tolerates (``max_corrupt``; ``None``: the default
    :class:`secagg.ClientPolicy`'s bound for a cohort of ``min_cohort``)."""
    if (
        dp_cfg.dim != adapter_size
        or dp_cfg.encoded_dim != config.d
        or dp_cfg.num_clients != config.n
        or config.encoding.bits != plaintext_bits_for(config.n, dp_cfg.bits)
    ):
        raise AgentError("the DP parameters do not match the one-shot round's configuration")
    if dp_cfg.min_survivors > config.min_cohort:
        raise AgentError(
            f"the round's DP noise is calibrated for {dp_cfg.min_survivors} contributors but the "
            f"committee may release a set of {config.min_cohort}: refusing (docs/threats.md DP-10)"
        )
    corrupt = (
        ClientPolicy().corrupt_bound(config.min_cohort) if max_corrupt is None else max_corrupt
    )
    if dp_cfg.max_corrupt < corrupt:
        raise AgentError(
            f"the round's DP noise assumes {dp_cfg.max_corrupt} corrupt contributors, this "
            f"client tolerates {corrupt}: its guarantee would not hold (docs/threats.md DP-10)"
        )


def check_round_dp(
    dp_cfg: DistributedDPConfig,
    config: RoundConfig,
    adapter_size: int,
    max_corrupt: int | None = None,
) -> None:
    """Refuse DP parameters that do not fit the round, or whose noise assumes fewer corrupt
    survivors than this client tolerates (``max_corrupt``; ``None``: the default
    :class:`secagg.ClientPolicy`'s bound for the round's degree), docs/threats.md DP-10."""
    if (
        dp_cfg.dim != adapter_size
        or dp_cfg.encoded_dim != config.d
        or dp_cfg.bits != config.ring_bits
        or dp_cfg.num_clients != config.n
        or dp_cfg.min_survivors != config.t
    ):
        raise AgentError("the DP parameters do not match the round's configuration")
    corrupt = ClientPolicy().corrupt_bound(config.degree) if max_corrupt is None else max_corrupt
    if dp_cfg.max_corrupt < corrupt:
        raise AgentError(
            f"the round's DP noise assumes {dp_cfg.max_corrupt} corrupt survivors, this client "
            f"tolerates {corrupt}: its guarantee would not hold (docs/threats.md DP-10)"
        )


class FlContributor:
    """Loads the base model once; trains and encodes one update per round."""

    def __init__(self, options: FlClientOptions) -> None:
        from client import training as tr

        self.tr = tr
        self.options = options
        self.base, self.tokenizer = tr.load_base_model(
            options.model, options.cache_dir, tokenizer=options.tokenizer
        )
        self.model: Any = None
        self.lora_key: str = ""
        self.texts = local_documents(options)
        self.ledger = PrivacyLedger.open_or_create(
            options.ledger, load_signing_key(options.ledger_key)
        )
        self.last: dict[str, Any] = {}

    def _attach(self, lora: dict[str, Any]) -> Any:
        key = json.dumps(lora, sort_keys=True)
        if self.model is None:
            self.model = self.tr.attach_lora(
                self.base,
                mode=lora["mode"],
                r=int(lora["r"]),
                alpha=int(lora["alpha"]),
                targets=lora.get("targets"),
                public_seed=int(lora["public_seed"]),
            )
            self.lora_key = key
        elif key != self.lora_key:
            raise AgentError("the round changes the LoRA setup mid-run: refusing")
        return self.model

    def contribute(self, config: RoundConfig, task: bytes, model: bytes) -> npt.NDArray[np.uint32]:
        """A pairwise (SecAgg+) round: this member's distributed-DP ring vector."""

        def check(dp_cfg: DistributedDPConfig, size: int) -> None:
            check_round_dp(dp_cfg, config, size, self.options.max_corrupt)

        return self._train_and_encode(config.round, task, model, check)[0]

    def contribute_oneshot(
        self, config: OneShotConfig, task: bytes, model: bytes
    ) -> npt.NDArray[np.int64]:
        """A one-shot round: the same ring vector, centred, for
        :meth:`secagg.oneshot.OneShotClient.upload_ints` (secagg/SPEC.md O9)."""

        def check(dp_cfg: DistributedDPConfig, size: int) -> None:
            check_oneshot_dp(dp_cfg, config, size, self.options.max_corrupt)

        ring, dp_cfg = self._train_and_encode(config.round, task, model, check)
        centred = ring.astype(np.int64)
        centred[centred >= dp_cfg.modulus // 2] -= dp_cfg.modulus
        return centred

    def _train_and_encode(
        self,
        round_number: int,
        task: bytes,
        model: bytes,
        check: Callable[[DistributedDPConfig, int], None],
    ) -> tuple[npt.NDArray[np.uint32], DistributedDPConfig]:
        tr = self.tr
        try:
            doc = json.loads(task)
        except ValueError as exc:
            raise AgentError(f"the round's task is not JSON: {exc}") from None
        if not isinstance(doc, dict) or doc.get("kind") != TASK_KIND:
            raise AgentError("this client only takes part in dp-lora/v1 rounds")
        train = doc["train"]
        net = self._attach(train["lora"])
        spec = tr.AdapterSpec.from_json(doc["adapter_spec"])
        mine = tr.adapter_spec(net)
        if mine.digest != spec.digest:
            raise AgentError("the round's adapter layout differs from this client's (SA-15)")
        dp_cfg = DistributedDPConfig.from_canonical(doc["dp"].encode())
        check(dp_cfg, spec.size)
        glob = np.frombuffer(model, dtype="<f4")
        tr.vector_to_adapter(net, glob, spec)

        blocks = tr.tokenize_blocks(
            self.texts, self.tokenizer, int(train["block_size"]), max_blocks=self.options.max_blocks
        )
        q = min(1.0, int(train["batch_size"]) / len(blocks))
        steps = int(train["steps"])
        sigma = float(train["noise_multiplier"])
        delta = float(doc["delta"])
        who = str(self.options.client_id)
        run = str(doc["run_id"])
        record_event = DpSgdEvent(q, sigma, steps)
        # worst case: t survivors, c of them corrupt and adding no noise
        user_event = distributed_event(round_privacy(dp_cfg))
        record_budget = Budget(float(train["record_budget"]), delta)
        user_budget = Budget(float(doc["user_budget"]), delta)
        # Check both before spending either: a refused round spends nothing.
        for ev, b in ((record_event, record_budget), (user_event, user_budget)):
            rep = self.ledger.preview(ev, client_id=who, run_id=run, budget=b)
            if rep.epsilon > b.epsilon:
                raise BudgetExceeded(
                    f"client {who}: round {round_number} would spend epsilon {rep.epsilon:.3g} "
                    f"> budget {b.epsilon:g} ({ev.unit.value}-level); refusing to train",
                    client_id=who,
                    run_id=run,
                    unit=ev.unit,
                    epsilon_would_be=rep.epsilon,
                    budget=b,
                    report=rep,
                )
        now = utc_stamp()  # the ledger never reads a clock: the writer stamps its rows
        self.ledger.charge(
            record_event,
            client_id=who,
            run_id=run,
            round_index=round_number,
            budget=record_budget,
            timestamp=now,
        )
        self.ledger.charge(
            user_event,
            client_id=who,
            run_id=run,
            round_index=round_number,
            budget=user_budget,
            timestamp=now,
        )
        res = tr.train_dp(
            net,
            blocks,
            steps=steps,
            batch_size=int(train["batch_size"]),
            lr=float(train["lr"]),
            clip=float(train["clip"]),
            noise_multiplier=sigma,
            delta=delta,
            accountant="rdp",
        )
        seed = bytes.fromhex(doc["round_seed"])
        ring = encode(res.delta_vector.astype(np.float64), dp_cfg, seed)
        if self.options.dump_dir is not None:
            self.options.dump_dir.mkdir(parents=True, exist_ok=True)
            np.save(self.options.dump_dir / f"update-{round_number}.npy", res.delta_vector)
            np.save(self.options.dump_dir / f"ring-{round_number}.npy", ring)
        self.last = {
            "round": round_number,
            "train_loss": res.mean_loss,
            "update_l2": float(np.linalg.norm(res.delta_vector)),
            "seconds": res.seconds,
            "record_epsilon_round": res.epsilon,
        }
        log.info(
            "client %s: round %d trained %d steps (loss %.3f, |update| %.3g) in %.1f s",
            who,
            round_number,
            steps,
            res.mean_loss,
            self.last["update_l2"],
            res.seconds,
        )
        return ring, dp_cfg
