"""One error hierarchy for the training side of :mod:`client` (models, data, LoRA, DP-SGD)."""

from __future__ import annotations

__all__ = [
    "AdapterMismatch",
    "InvalidTrainingConfig",
    "ModelUnavailable",
    "PerSampleGradientMissing",
    "TrainingError",
]


class TrainingError(Exception):
    """Base of every error raised by the client's training code."""


class InvalidTrainingConfig(TrainingError, ValueError):
    """A training, LoRA or privacy parameter is out of its domain."""


class ModelUnavailable(TrainingError):
    """A base model cannot be loaded offline (wheel missing, unknown name)."""


class AdapterMismatch(TrainingError, ValueError):
    """A vector or spec does not fit the model's adapter (docs/threats.md SA-15): wrong length,
    names, shapes, dtype, or a non-finite value."""


class PerSampleGradientMissing(TrainingError):
    """A trainable parameter got no per-sample gradient, so clipping would miss it (DP-09)."""
