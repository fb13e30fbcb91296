"""GCE-loss technique. References: the NumPy closed form (1 - p_y^q) / q; F.cross_entropy for q -> 0 over a whole
Trainer run (the loss the trainer uses without the technique)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques.gce_loss import GCELoss
from tricklab.train import Trainer, plan


def test_loss_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (6,), generator=g)
    state = SimpleNamespace(outputs=z, targets=y, loss=None)
    GCELoss(q=0.7).on_loss(state)
    p = torch.softmax(z, 1).numpy()[np.arange(6), y.numpy()]
    assert float(state.loss) == pytest.approx(float(((1 - p**0.7) / 0.7).mean()), rel=1e-12)


def test_tiny_q_trains_like_cross_entropy() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    finals = []
    for techniques in ([GCELoss(q=1e-6)], []):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 8, seed=0),
                techniques=techniques, max_steps=4).fit()
        finals.append(list(model.parameters()))
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_declarations_and_invalid_arguments() -> None:
    assert GCELoss.name == "gce_loss" and GCELoss.writes == {"loss_fn"}  # a loss replacer owns the exclusive slot
    assert plan([GCELoss()]).order["loss"] == (0,)
    assert GCELoss().state_dict() == {}
    with pytest.raises(ValueError, match="q must be"):
        GCELoss(q=1.5)
    with pytest.raises(ValueError, match="truncation"):
        GCELoss(k=-0.1)
