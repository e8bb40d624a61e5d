"""Issue 16, item 2: an existing opacus loop runs unchanged on client.privacy.PrivacyEngine,
with this project's accountant, and train_dp goes through the same engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from client.privacy import DpAccountant, PrivacyEngine
from client.training import InvalidTrainingConfig
from dp import accounting


def _data(n: int = 50) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return TensorDataset(x, y)


def _opacus_loop(engine: PrivacyEngine, **make: object) -> tuple[nn.Module, object, object]:
    """The loop of opacus' own tutorials, only the engine class swapped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader(_data(), batch_size=10)
    model, optimizer, loader = engine.make_private_with_epsilon(
        module=model, optimizer=optimizer, data_loader=loader, **make
    )
    criterion = nn.CrossEntropyLoss()
    for x, y in loader:
        optimizer.zero_grad()
        if len(x):
            criterion(model(x), y).backward()
        else:  # an empty Poisson batch: opacus' convention, pure noise
            for p in model.parameters():
                p.grad_sample = torch.zeros((0, *p.shape))
        optimizer.step()
    return model, optimizer, loader


def test_make_private_with_epsilon_in_an_opacus_loop_uses_our_accountant() -> None:
    engine = PrivacyEngine(accountant="rdp")
    _, optimizer, loader = _opacus_loop(
        engine, target_epsilon=3.0, target_delta=1e-5, epochs=1, max_grad_norm=1.0
    )
    assert isinstance(engine.accountant, DpAccountant)
    q = 10 / 50
    assert loader.sample_rate == q and len(loader) == 5
    assert len(engine.accountant) == 5
    sigma = optimizer.noise_multiplier
    assert sigma == accounting.noise_multiplier_for(3.0, q, 5, 1e-5, "rdp")
    eps = engine.get_epsilon(1e-5)
    assert eps <= 3.0
    assert eps == accounting.epsilon(q, sigma, 5, 1e-5, "rdp")
    (event,) = engine.accountant.events()
    assert (event.sample_rate, event.noise_multiplier, event.steps) == (q, sigma, 5)
    state = engine.accountant.state_dict()
    again = DpAccountant("rdp")
    again.load_state_dict(state)
    assert again.get_epsilon(1e-5) == eps


def test_make_private_clips_every_example_and_divides_by_the_public_batch() -> None:
    engine = PrivacyEngine(accountant="prv")
    torch.manual_seed(1)
    model = nn.Linear(6, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loader = DataLoader(_data(), batch_size=10)
    gen = torch.Generator().manual_seed(3)
    model, optimizer, loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=1e-3,
        sampler_generator=gen,
    )
    before = [p.detach().clone() for p in model.parameters()]
    x, y = next(iter(loader))
    nn.CrossEntropyLoss()(model(x * 1e3), y).backward()
    optimizer.step()
    moved = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before)])
    # len(x) clipped gradients of norm <= 1e-3, summed, over the expected batch of 10.
    assert float(moved.norm()) <= len(x) * 1e-3 / 10 * (1 + 1e-5)
    assert math.isinf(engine.get_epsilon(1e-5))  # no noise: no privacy, and it says so


@pytest.mark.parametrize(
    "bad",
    [{"poisson_sampling": False}, {"clipping": "per_layer"}, {"grad_sample_mode": "ghost"}],
)
def test_unaccounted_settings_are_refused(bad: dict[str, object]) -> None:
    model = nn.Linear(6, 2)
    with pytest.raises(InvalidTrainingConfig):
        PrivacyEngine().make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            data_loader=DataLoader(_data(), batch_size=10),
            noise_multiplier=1.0,
            max_grad_norm=1.0,
            **bad,
        )
    with pytest.raises(InvalidTrainingConfig):
        DpAccountant("gdp")


def test_train_dp_runs_through_the_same_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """train_dp's accounting is this engine's: a step its accountant misses fails the run."""
    from client import privacy
    from client.models import ByteTokenizer
    from client.training import TrainingError, attach_lora, tokenize_blocks, train_dp
    from proofs_tests.unit.client.test_bring_your_own import _TinyLM

    blocks = tokenize_blocks(["the cat sat on the mat"] * 20, ByteTokenizer(257), 8)
    made: list[PrivacyEngine] = []
    real = privacy.PrivacyEngine

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)
            made.append(self)

    monkeypatch.setattr(privacy, "PrivacyEngine", Spy)
    res = train_dp(
        attach_lora(_TinyLM(), targets=["mix"], r=2),
        blocks,
        steps=3,
        batch_size=4,
        noise_multiplier=1.0,
        seed=4,
    )
    (engine,) = made
    assert len(engine.accountant) == 3
    assert res.epsilon == engine.get_epsilon(res.delta)

    class Lossy(real):  # type: ignore[misc, valid-type]
        def make_private(self, **kw: object):  # type: ignore[no-untyped-def]
            module, opt, loader = super().make_private(**kw)
            opt.attach_step_hook(lambda o: None)  # an accountant that never counts
            return module, opt, loader

    monkeypatch.setattr(privacy, "PrivacyEngine", Lossy)
    with pytest.raises(TrainingError, match="accounted"):
        train_dp(
            attach_lora(_TinyLM(), targets=["mix"], r=2),
            blocks,
            steps=2,
            batch_size=4,
            noise_multiplier=1.0,
            seed=4,
        )
    assert np.isfinite(res.mean_loss)
