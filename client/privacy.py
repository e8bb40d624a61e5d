"""DP-SGD with opacus' conventions and this project's accountant.

An existing opacus training loop keeps its shape: replace ``opacus.PrivacyEngine`` with
:class:`PrivacyEngine` and call ``make_private`` or ``make_private_with_epsilon`` on your own
module, optimizer and data loader, as with opacus::

    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=loader,
        target_epsilon=8.0, target_delta=1e-5, epochs=1, max_grad_norm=1.0)
    for (x,) in loader: ...                     # your loop, unchanged
    engine.get_epsilon(1e-5); engine.accountant.events()   # DpSgdEvent rows for the ledger

What differs from opacus, and why:

* the accountant is :class:`DpAccountant`, backed by :mod:`dp.accounting` (the numbers the
  privacy ledger and ``secagg-audit`` use), and ``make_private_with_epsilon`` calibrates with
  :func:`dp.accounting.noise_multiplier_for`, whose sigma never overshoots the target
  (opacus #346; docs/threats.md DP-07);
* sampling is Poisson at exactly ``q = batch_size / len(dataset)`` (opacus uses
  ``1 / len(loader)``, which differs when the batch size does not divide the data set), the
  noise is divided by that public ``batch_size`` (DP-06), and both the sampler and the noise
  generator are seeded from the OS CSPRNG unless the caller passes generators (tests);
* only what the accounting covers is accepted: flat clipping, Poisson sampling, no ghost
  clipping (with an HF model's own loss it silently skips clipping).

:func:`client.training.train_dp` runs its loop through this same engine.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterator, Sized
from typing import Any

import torch
from opacus import PrivacyEngine as _OpacusEngine
from opacus.accountants.accountant import IAccountant
from torch import nn
from torch.utils.data import DataLoader, Dataset

from client._training_errors import InvalidTrainingConfig
from dp.accounting import DpSgdEvent, account, noise_multiplier_for

__all__ = ["ACCOUNTANT_NAMES", "DpAccountant", "PoissonLoader", "PrivacyEngine"]

#: Accountants of :mod:`dp.accounting` the engine can use.
ACCOUNTANT_NAMES = ("rdp", "prv", "pld")


class DpAccountant(IAccountant):  # type: ignore[misc]
    """opacus' accountant interface over :mod:`dp.accounting` (``rdp``, ``prv`` or ``pld``).

    ``history`` holds ``(noise_multiplier, sample_rate, steps)`` as opacus' own accountants do,
    so ``state_dict``/``load_state_dict`` and checkpoints work unchanged.
    """

    def __init__(self, accountant: str = "rdp") -> None:
        if accountant not in ACCOUNTANT_NAMES:
            raise InvalidTrainingConfig(f"accountant must be one of {ACCOUNTANT_NAMES}")
        super().__init__()
        self.name = accountant

    def step(self, *, noise_multiplier: float, sample_rate: float) -> None:
        if self.history and self.history[-1][:2] == (noise_multiplier, sample_rate):
            nm, q, steps = self.history[-1]
            self.history[-1] = (nm, q, steps + 1)
        else:
            self.history.append((noise_multiplier, sample_rate, 1))

    def events(self) -> list[DpSgdEvent]:
        """What was spent, as ledger events."""
        return [DpSgdEvent(float(q), float(nm), int(s)) for nm, q, s in self.history]

    def get_epsilon(self, delta: float, *args: Any, **kwargs: Any) -> float:
        events = self.events()
        if not events:
            return 0.0
        return float(account(events, delta, (self.name,)).epsilon)

    def __len__(self) -> int:
        return sum(int(s) for _, _, s in self.history)

    @classmethod
    def mechanism(cls) -> str:
        return "secagg-dp"


def _csprng_generator(device: torch.device | str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


class PoissonLoader:
    """Batches in which every record is present independently with probability ``q``.

    ``len()`` is ``ceil(1 / q)`` steps (one expected pass, as opacus' sampler); empty batches
    are yielded as zero-length tensors (an accounted, pure-noise step). Works for any map-style
    dataset whose items are tensors or tuples of tensors.
    """

    def __init__(
        self, dataset: Dataset[Any], sample_rate: float, generator: torch.Generator
    ) -> None:
        if not isinstance(dataset, Sized) or len(dataset) < 1:
            raise InvalidTrainingConfig("the data set must be non-empty and sized")
        if not 0.0 < sample_rate <= 1.0:
            raise InvalidTrainingConfig(f"sample rate {sample_rate} is outside (0, 1]")
        self.dataset = dataset
        self.sample_rate = sample_rate
        self.generator = generator
        self.size = len(dataset)

    def __len__(self) -> int:
        return math.ceil(1.0 / self.sample_rate - 1e-9)

    def indices(self, steps: int) -> Iterator[torch.Tensor]:
        """The sampled indices of ``steps`` consecutive batches."""
        for _ in range(steps):
            mask = torch.rand(self.size, generator=self.generator) < self.sample_rate
            yield mask.nonzero(as_tuple=True)[0]

    def _collate(self, idx: torch.Tensor) -> Any:
        tensors = getattr(self.dataset, "tensors", None)
        if isinstance(tensors, tuple):
            return [t[idx] for t in tensors]
        first = self.dataset[0]
        items = [self.dataset[int(i)] for i in idx]
        if isinstance(first, torch.Tensor):
            return torch.stack(items) if items else first.new_zeros((0, *first.shape))
        return [
            torch.stack([it[k] for it in items]) if items else f.new_zeros((0, *f.shape))
            for k, f in enumerate(first)
        ]

    def __iter__(self) -> Iterator[Any]:
        for idx in self.indices(len(self)):
            yield self._collate(idx)


class PrivacyEngine(_OpacusEngine):  # type: ignore[misc]
    """``opacus.PrivacyEngine`` with :class:`DpAccountant` (see the module docstring)."""

    def __init__(self, *, accountant: str = "rdp", secure_mode: bool = False) -> None:
        with warnings.catch_warnings():  # "Secure RNG turned off": our generators are seeded
            warnings.filterwarnings(
                "ignore", message=".*Secure RNG turned off.*"
            )  # from the CSPRNG
            super().__init__(accountant="rdp", secure_mode=secure_mode)
        self.accountant = DpAccountant(accountant)

    def make_private(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        noise_multiplier: float,
        max_grad_norm: float,
        batch_first: bool = True,
        loss_reduction: str = "mean",
        poisson_sampling: bool = True,
        clipping: str = "flat",
        noise_generator: torch.Generator | None = None,
        grad_sample_mode: str = "hooks",
        wrap_model: bool = True,
        sampler_generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> tuple[Any, Any, PoissonLoader]:
        """opacus' ``make_private``: ``(module or hooks, DPOptimizer, PoissonLoader)``.

        The expected batch is ``data_loader.batch_size``; ``sampler_generator`` and
        ``noise_generator`` default to generators seeded from the OS CSPRNG.
        """
        if not poisson_sampling:
            raise InvalidTrainingConfig("the accounting assumes Poisson sampling")
        if clipping != "flat":
            raise InvalidTrainingConfig("only flat (joint) clipping is accounted here")
        if "ghost" in grad_sample_mode:
            raise InvalidTrainingConfig("ghost clipping is refused (it can skip clipping)")
        if not isinstance(max_grad_norm, int | float) or not max_grad_norm > 0:
            raise InvalidTrainingConfig("max_grad_norm must be a positive number")
        batch = data_loader.batch_size
        dataset = data_loader.dataset
        if not isinstance(batch, int) or batch < 1 or not isinstance(dataset, Sized):
            raise InvalidTrainingConfig("the data loader needs a batch_size and a sized dataset")
        if batch > len(dataset):
            raise InvalidTrainingConfig(f"batch_size {batch} exceeds the {len(dataset)} records")
        sample_rate = batch / len(dataset)
        prepared = self._prepare_model(
            module,
            batch_first=batch_first,
            max_grad_norm=max_grad_norm,
            loss_reduction=loss_reduction,
            grad_sample_mode=grad_sample_mode,
            wrap_model=wrap_model,
        )
        prepared.forbid_grad_accumulation()
        params = [p for p in module.parameters() if p.requires_grad]
        device = params[0].device if params else torch.device("cpu")
        loader = PoissonLoader(
            dataset,
            sample_rate,
            sampler_generator if sampler_generator is not None else _csprng_generator(),
        )
        dp_optimizer = self._prepare_optimizer(
            optimizer=optimizer,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            expected_batch_size=batch,
            loss_reduction=loss_reduction,
            noise_generator=(
                noise_generator if noise_generator is not None else _csprng_generator(device)
            ),
            distributed=False,
            clipping=clipping,
            grad_sample_mode=grad_sample_mode,
            **kwargs,
        )
        dp_optimizer.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate))
        return prepared, dp_optimizer, loader

    def make_private_with_epsilon(
        self,
        *,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        data_loader: DataLoader[Any],
        target_epsilon: float,
        target_delta: float,
        max_grad_norm: float,
        epochs: float | None = None,
        steps: int | None = None,
        **kwargs: Any,
    ) -> tuple[Any, Any, PoissonLoader]:
        """As opacus', with a sigma from :func:`dp.accounting.noise_multiplier_for` for
        ``steps`` (or ``ceil(epochs / q)``) steps: the epsilon spent never exceeds the target."""
        batch = data_loader.batch_size
        dataset = data_loader.dataset
        if not isinstance(batch, int) or batch < 1 or not isinstance(dataset, Sized):
            raise InvalidTrainingConfig("the data loader needs a batch_size and a sized dataset")
        q = min(1.0, batch / len(dataset))
        if (epochs is None) == (steps is None):
            raise InvalidTrainingConfig("give exactly one of epochs and steps")
        n_steps = steps if steps is not None else math.ceil(float(epochs) / q - 1e-9)  # type: ignore[arg-type]
        sigma = noise_multiplier_for(target_epsilon, q, n_steps, target_delta, self.accountant.name)
        return self.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=data_loader,
            noise_multiplier=float(sigma),
            max_grad_norm=max_grad_norm,
            **kwargs,
        )
