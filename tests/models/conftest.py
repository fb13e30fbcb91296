"""Training loops shared by the model tests, as fixtures that return plain functions.

Each "learns" / "reduces the loss" test trains a small model a few dozen steps; the loop itself (optimizer,
seeded minibatches, zero_grad / backward / step) is the same everywhere, so it lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.models.gpt import lm_loss

TrainLosses = Callable[..., list[float]]


def train_losses(model: nn.Module, loss_fn: Callable[[int], Tensor], steps: int, lr: float = 3e-3) -> list[float]:
    """AdamW(lr) for ``steps`` steps on ``loss_fn(step)``; the loss of every step, in order."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def train_lm(model: nn.Module, ds: Any, steps: int, lr: float, batch_size: int = 16, seed: int = 0) -> list[float]:
    """:func:`train_losses` with :func:`lm_loss` on ``batch_size`` training windows of ``ds`` per step, drawn
    with a generator seeded ``seed`` (x: (B, T) token ids, y: (B, T) targets, -100 where there is no loss)."""
    g = torch.Generator().manual_seed(seed)

    def loss_fn(_: int) -> Tensor:
        idx = torch.randint(0, ds.num_train, (batch_size,), generator=g)
        return lm_loss(model(ds.x_train[idx]), ds.y_train[idx])

    return train_losses(model, loss_fn, steps, lr)


def classifier_accuracy(model: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], steps: int,
                        batch_size: int, gen: torch.Generator, lr: float = 1e-2) -> float:
    """Adam(lr) with F.cross_entropy on ``batch_size`` examples of ``train`` drawn with ``gen`` per step, then the
    eval-mode accuracy on ``test``."""
    (x_train, y_train), (x_test, y_test) = train, test
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(len(x_train), (batch_size,), generator=gen)
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


@pytest.fixture(name="train_losses")
def _train_losses_fixture() -> TrainLosses:
    return train_losses


@pytest.fixture(name="train_lm")
def _train_lm_fixture() -> TrainLosses:
    return train_lm


@pytest.fixture(name="classifier_accuracy")
def _classifier_accuracy_fixture() -> Callable[..., float]:
    return classifier_accuracy
