"""Focal loss technique. References: the NumPy closed form -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017)
and its soft-target form -sum_c t_c alpha_c (1 - p_c)^gamma log p_c for values, NumPy central finite
differences for gradients, and torch's F.cross_entropy (gamma = 0) for a whole training run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from loss_helpers import fd_grad, np_log_softmax  # tests/losses (put on sys.path by conftest.py)
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques.focal_loss import FocalLossTechnique
from tricklab.train import Technique, Trainer, plan
from tricklab.train.events import EXCLUSIVE_SLOTS


def np_soft_focal(z: np.ndarray, t: np.ndarray, gamma: float, alpha: np.ndarray) -> float:
    """Mean over samples of -sum_c t_c alpha_c (1 - p_c)^gamma log p_c (one-hot t gives the hard form)."""
    logp = np_log_softmax(z)
    return float(-(t * alpha * (1 - np.exp(logp)) ** gamma * logp).sum(1).mean())


@pytest.mark.parametrize("soft", [False, True])
def test_loss_and_grad_match_numpy(soft: bool) -> None:
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(6, 3, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = torch.randint(0, 3, (6,), generator=g)
    t = torch.softmax(torch.randn(6, 3, generator=g, dtype=torch.float64), 1) if soft else y
    t_np = t.numpy() if soft else np.eye(3)[y.numpy()]
    alpha = [0.5, 1.0, 2.0]
    state = SimpleNamespace(outputs=z, targets=t, loss=None)
    FocalLossTechnique(gamma=2.0, alpha=alpha).on_loss(state)
    (grad,) = torch.autograd.grad(state.loss, z)
    zn = z.detach().numpy()
    assert float(state.loss.detach()) == pytest.approx(np_soft_focal(zn, t_np, 2.0, np.array(alpha)), rel=1e-12)
    np.testing.assert_allclose(grad.numpy(), fd_grad(lambda a: np_soft_focal(a, t_np, 2.0, np.array(alpha)), zn),
                               rtol=1e-6, atol=1e-9)


class LossProbe(Technique):
    name = "loss_probe"
    reads = frozenset({"loss"})

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def on_loss(self, state) -> None:
        zs = state.outputs.detach().double().numpy()
        ref = np_soft_focal(zs, np.eye(3)[state.targets.numpy()], 2.0, np.ones(3))
        self.seen.append((float(state.loss.detach()), ref))


def _run(techniques, steps=4):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    model = nn.Linear(4, 3)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.5), InMemoryLoader(x, y, 8, seed=0),
            techniques=techniques, max_steps=steps).fit()
    return model


def test_in_trainer_the_loss_is_replaced_before_backward() -> None:
    """A pure reader of 'loss' runs after the technique and sees the focal loss (NumPy reference)."""
    probe = LossProbe()
    _run([probe, FocalLossTechnique(gamma=2.0)], steps=3)
    assert len(probe.seen) == 3
    for got, ref in probe.seen:
        assert got == pytest.approx(ref, rel=1e-5)


def test_gamma_zero_trains_exactly_like_cross_entropy() -> None:
    """Reference: the trainer's default loss F.cross_entropy; same seed and data give the same weights."""
    a, b = _run([FocalLossTechnique(gamma=0.0)]), _run([])
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif("loss_fn" not in EXCLUSIVE_SLOTS, reason="needs the exclusive 'loss_fn' slot in train/events.py")
def test_refuses_another_loss_replacer() -> None:
    from tricklab.errors import ConflictError
    from tricklab.techniques.bootstrap_loss import BootstrapLoss

    with pytest.raises(ConflictError, match="focal_loss"):
        plan([FocalLossTechnique(), BootstrapLoss()])


def test_declarations_and_state() -> None:
    t = FocalLossTechnique
    assert t.name == "focal_loss" and "loss_fn" in t.writes and "batch.targets" in t.reads
    assert plan([FocalLossTechnique()]).order["loss"] == (0,)
    t = FocalLossTechnique()
    assert t.state_dict() == {}
    t.load_state_dict({})


@pytest.mark.parametrize("kwargs,exc", [({"gamma": -1.0}, ValueError), ({"alpha": -0.5}, ValueError),
                                        ({"alpha": [1.0, -1.0]}, ValueError), ({"alpha": "x"}, TypeError)])
def test_invalid_arguments(kwargs, exc) -> None:
    with pytest.raises(exc):
        FocalLossTechnique(**kwargs)


def test_wrong_alpha_length_is_reported_at_the_loss() -> None:
    state = SimpleNamespace(outputs=torch.randn(2, 3), targets=torch.tensor([0, 1]), loss=None)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        FocalLossTechnique(alpha=[1.0, 2.0]).on_loss(state)
