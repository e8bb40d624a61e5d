"""What an edge device runs: training (your model, your data, DP-SGD), the client agent that
takes part in rounds over gRPC, and :func:`finetune`, the whole federated path in memory.

Names load on first use, so ``import client`` pulls in neither torch nor grpc until a name
that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # federated fine-tuning in one call (client.federated)
    "FinetuneResult": "client.federated",
    "finetune": "client.federated",
    # models, data, LoRA, DP-SGD (client.training, client.data, client.models)
    "AdapterSpec": "client.training",
    "TrainResult": "client.training",
    "TrainingError": "client.training",
    "InvalidTrainingConfig": "client.training",
    "ModelUnavailable": "client.training",
    "adapter_to_vector": "client.training",
    "apply_mean_update": "client.training",
    "attach_lora": "client.training",
    "evaluate_loss": "client.training",
    "generate": "client.training",
    "initial_adapter": "client.training",
    "load_base_model": "client.training",
    "load_texts": "client.data",
    "save_adapter": "client.training",
    "tokenize_blocks": "client.training",
    "train_dp": "client.training",
    "vector_to_adapter": "client.training",
    # opacus conventions with this project's accountant (client.privacy)
    "DpAccountant": "client.privacy",
    "PrivacyEngine": "client.privacy",
    # taking part in rounds over gRPC (client.agent, client.fl)
    "AgentError": "client.agent",
    "AgentOptions": "client.agent",
    "ClientAgent": "client.agent",
    "Contributor": "client.agent",
    "DpStatisticsContributor": "client.agent",
    "RoundReport": "client.agent",
    "StatisticsContributor": "client.agent",
    "FlClientOptions": "client.fl",
    "FlContributor": "client.fl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
