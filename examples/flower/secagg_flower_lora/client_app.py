"""A client: DP-SGD on the LoRA adapter over its own slice of the built-in corpus (the
project's client.training), behind our client mod. From Flower's SecAgg+ example this changes
one line: the mod."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from flwr.app import Context
from flwr.client import ClientApp, NumPyClient

from client import training as tr
from client.data import local_text_corpus
from client.flower import secagg_mod
from secagg_flower_lora.task import adapter_of, build_model

log = logging.getLogger("secagg_flower_lora")


class LoraClient(NumPyClient):
    def __init__(self, partition: int, partitions: int, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.net, tokenizer = build_model(cfg)
        self.spec = tr.adapter_spec(self.net)
        texts = local_text_corpus(partition, partitions)
        self.blocks = tr.tokenize_blocks(
            texts, tokenizer, int(cfg["block-size"]), max_blocks=int(cfg["max-blocks"])
        )
        self.partition = partition

    def fit(self, parameters: list[Any], config: dict[str, Any]) -> Any:
        tr.vector_to_adapter(self.net, np.asarray(parameters[0], dtype=np.float32), self.spec)
        cfg = self.cfg
        res = tr.train_dp(
            self.net,
            self.blocks,
            steps=int(cfg["local-steps"]),
            batch_size=int(cfg["batch-size"]),
            lr=float(cfg["learning-rate"]),
            clip=float(cfg["dp-clip"]),
            noise_multiplier=float(cfg["dp-noise-multiplier"]),
            delta=float(cfg["dp-delta"]),
        )
        print(
            f"client {self.partition}: {res.steps} DP-SGD steps, loss {res.mean_loss:.3f}, "
            f"record-level epsilon {res.epsilon:.2f} at delta {res.delta:g}",
            flush=True,
        )
        return [adapter_of(self.net)], int(self.blocks.shape[0]), {}


def client_fn(context: Context) -> Any:
    partition = int(context.node_config["partition-id"])
    partitions = int(context.node_config["num-partitions"])
    return LoraClient(partition, partitions, dict(context.run_config)).to_client()


app = ClientApp(client_fn=client_fn, mods=[secagg_mod])  # was: mods=[secaggplus_mod]
