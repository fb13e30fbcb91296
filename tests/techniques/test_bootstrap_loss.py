"""Bootstrap-loss technique. References: the NumPy closed forms of Reed et al. (2015),
-sum_c [beta y_c + (1 - beta) p_c] log p_c (soft) and with onehot(argmax p) (hard); the fixed-target gradient
(softmax(z) - q) / N (hard); torch's F.cross_entropy for beta = 1 over a whole run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques.bootstrap_loss import BootstrapLoss
from tricklab.train import Trainer, plan


def _np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_loss_matches_numpy(mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(6, 4, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = torch.randint(0, 4, (6,), generator=g)
    state = SimpleNamespace(outputs=z, targets=y, loss=None)
    t = BootstrapLoss(mode=mode)
    t.on_loss(state)
    beta = {"soft": 0.95, "hard": 0.8}[mode]  # the paper's values are the defaults
    assert t.beta == beta
    p = _np_softmax(z.detach().numpy())
    pred = p if mode == "soft" else np.eye(4)[p.argmax(1)]
    q = beta * np.eye(4)[y.numpy()] + (1 - beta) * pred
    assert float(state.loss.detach()) == pytest.approx(float(-(q * np.log(p)).sum(1).mean()), rel=1e-12)
    if mode == "hard":
        (grad,) = torch.autograd.grad(state.loss, z)
        np.testing.assert_allclose(grad.numpy(), (p - q) / 6, rtol=1e-10, atol=1e-14)


def test_beta_one_trains_exactly_like_cross_entropy() -> None:
    """Reference: the trainer's default loss F.cross_entropy."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    finals = []
    for techniques in ([BootstrapLoss(beta=1.0, mode="soft")], []):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 8, seed=0),
                techniques=techniques, max_steps=4).fit()
        finals.append(list(model.parameters()))
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_soft_targets_from_a_mixer_are_accepted() -> None:
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.softmax(torch.randn(5, 3, generator=g, dtype=torch.float64), 1)
    state = SimpleNamespace(outputs=z, targets=t, loss=None)
    BootstrapLoss(beta=0.9).on_loss(state)
    p = _np_softmax(z.numpy())
    q = 0.9 * t.numpy() + 0.1 * p
    assert float(state.loss) == pytest.approx(float(-(q * np.log(p)).sum(1).mean()), rel=1e-12)


def test_declarations_and_invalid_arguments() -> None:
    assert BootstrapLoss.name == "bootstrap_loss" and "loss_fn" in BootstrapLoss.writes
    assert plan([BootstrapLoss()]).order["loss"] == (0,)
    assert BootstrapLoss().state_dict() == {}
    with pytest.raises(ValueError, match="mode"):
        BootstrapLoss(mode="medium")
    with pytest.raises(ValueError, match="beta"):
        BootstrapLoss(beta=1.5)
