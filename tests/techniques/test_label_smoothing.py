"""Label smoothing: the technique's loss equals torch's F.cross_entropy(label_smoothing=eps) and the NumPy
closed form -sum_c q_c log softmax(z)_c with q = (1 - eps) onehot + eps / C; values and gradients."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import LabelSmoothing
from tricklab.train import Technique, Trainer


def _numpy_smoothed_ce(z: np.ndarray, y: np.ndarray, eps: float) -> tuple[float, np.ndarray]:
    """Closed form: loss and its gradient wrt the logits, (softmax(z) - q) / N."""
    n, c = z.shape
    q = np.full((n, c), eps / c)
    q[np.arange(n), y] += 1.0 - eps
    zs = z - z.max(1, keepdims=True)
    logp = zs - np.log(np.exp(zs).sum(1, keepdims=True))
    loss = -(q * logp).sum(1).mean()
    return float(loss), (np.exp(logp) - q) / n


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.9])
def test_loss_and_grad_match_torch_and_numpy(eps: float) -> None:
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 3).requires_grad_()
    y = torch.randint(0, 5, (7,), generator=g)
    state = SimpleNamespace(outputs=z, targets=y, loss=None)
    LabelSmoothing(eps).on_loss(state)
    (grad,) = torch.autograd.grad(state.loss, z)
    # reference 1: torch built-in
    z2 = z.detach().clone().requires_grad_()
    ref = F.cross_entropy(z2, y, label_smoothing=eps)
    (ref_grad,) = torch.autograd.grad(ref, z2)
    torch.testing.assert_close(state.loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)
    # reference 2: NumPy closed form
    np_loss, np_grad = _numpy_smoothed_ce(z.detach().numpy(), y.numpy(), eps)
    assert float(state.loss.detach()) == pytest.approx(np_loss, rel=1e-10)
    np.testing.assert_allclose(grad.numpy(), np_grad, rtol=1e-9, atol=1e-12)


def test_soft_targets_are_smoothed_like_torch() -> None:
    """Soft (probability) targets from a mixer: reference F.cross_entropy with label_smoothing, and the
    NumPy closed form q = (1 - eps) p + eps / C."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    p = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), -1)
    state = SimpleNamespace(outputs=z, targets=p, loss=None)
    LabelSmoothing(0.2).on_loss(state)
    torch.testing.assert_close(state.loss, F.cross_entropy(z, p, label_smoothing=0.2))
    q = 0.8 * p.numpy() + 0.2 / 3
    logp = torch.log_softmax(z, -1).detach().numpy()
    assert float(state.loss.detach()) == pytest.approx(-(q * logp).sum(1).mean(), rel=1e-10)


class LossProbe(Technique):
    name = "loss_probe"
    reads = frozenset({"loss"})

    def __init__(self) -> None:
        self.pairs: list[tuple[float, float]] = []

    def on_loss(self, state) -> None:
        ref = F.cross_entropy(state.outputs, state.targets, label_smoothing=0.25)
        self.pairs.append((float(state.loss.detach()), float(ref.detach())))


def test_in_trainer_the_loss_is_replaced_before_backward() -> None:
    """The probe (a pure reader of 'loss') runs after the technique and sees the smoothed loss."""
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model = nn.Linear(4, 3)
    probe = LossProbe()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[probe, LabelSmoothing(0.25)], max_steps=3).fit()
    assert len(probe.pairs) == 3
    for got, ref in probe.pairs:
        assert got == pytest.approx(ref, rel=1e-6)


def test_trained_model_is_less_confident_than_without_smoothing() -> None:
    """Same data, init and steps: the smoothed run ends with a lower mean max-probability (the point of
    the technique: targets of 1 - eps + eps/C instead of 1)."""
    x = torch.randn(60, 4, generator=torch.Generator().manual_seed(0))
    y = (x[:, 0] > 0).long()
    conf = []
    for techniques in ([], [LabelSmoothing(0.3)]):
        torch.manual_seed(0)
        model = nn.Linear(4, 2)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), InMemoryLoader(x, y, 20, seed=0),
                techniques=techniques, max_steps=25).fit()
        with torch.no_grad():
            conf.append(float(torch.softmax(model(x), -1).max(-1).values.mean()))
    assert conf[1] < conf[0] - 0.02


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_invalid_eps(eps: float) -> None:
    with pytest.raises(ValueError):
        LabelSmoothing(eps)


def test_stateless_round_trip() -> None:
    assert LabelSmoothing().state_dict() == {}
    LabelSmoothing().load_state_dict({})
