"""The consortium's side: the aggregator service around :class:`secagg.SecAggServer`, and the
jobs it runs (plain or distributed-DP statistics, federated DP-LoRA).

Names load on first use, so ``import aggregator`` pulls in grpc only when a name needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AggregatorService": "aggregator.service",
    "RoundRunner": "aggregator.service",
    "ServeOptions": "aggregator.service",
    "serve": "aggregator.service",
    "DpStatisticsTask": "aggregator.tasks",
    "RoundTask": "aggregator.tasks",
    "StatisticsTask": "aggregator.tasks",
    "TaskRound": "aggregator.tasks",
    "DpLoraTask": "aggregator.fl",
    "FlParams": "aggregator.fl",
    "choose_dp_config": "aggregator.fl",
    "verification_norm_bound": "aggregator.fl",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aggregator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
