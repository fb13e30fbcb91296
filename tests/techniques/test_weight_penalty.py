"""Weight penalty. References: the NumPy closed form l1 * sum |w| + l2 / 2 * sum w^2 and its gradient
l1 * sign(w) + l2 * w added to the data gradient (torch's F.cross_entropy on the same batch); torch's
SGD(weight_decay=l2), which adds exactly l2 * w to every gradient, for a whole run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques.bootstrap_loss import BootstrapLoss
from tricklab.techniques.focal_loss import FocalLossTechnique
from tricklab.techniques.label_smoothing import LabelSmoothing
from tricklab.techniques.weight_penalty import WeightPenalty, penalized_parameters, weight_penalty
from tricklab.train import Trainer, plan


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 3, bias=False),
                         nn.BatchNorm1d(3)).double()


def test_functional_core_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    ref = sum(0.3 * np.abs(w.numpy()).sum() + 0.5 * 0.7 * (w.numpy() ** 2).sum() for w in ws)
    assert float(weight_penalty(ws, l1=0.3, l2=0.7)) == pytest.approx(ref, rel=1e-13)
    assert float(weight_penalty([], 1.0, 1.0)) == 0.0


def test_penalized_parameters_exclude_biases_and_norms() -> None:
    m = _model()
    assert [id(p) for p in penalized_parameters(m)] == [id(m[0].weight), id(m[3].weight)]
    assert len(penalized_parameters(m, exclude_bias_and_norm=False)) == len(list(m.parameters()))


@pytest.mark.parametrize("exclude", [True, False])
def test_gradient_is_data_gradient_plus_closed_form(exclude: bool) -> None:
    m = _model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)
    params = list(m.parameters())
    data_grads = torch.autograd.grad(F.cross_entropy(m(x), y), params)
    state = SimpleNamespace(raw_model=m, loss=F.cross_entropy(m(x), y))
    WeightPenalty(l1=0.01, l2=0.1, exclude_bias_and_norm=exclude).on_loss(state)
    grads = torch.autograd.grad(state.loss, params)
    penalized = {id(p) for p in penalized_parameters(m, exclude)}
    for p, gd, gt in zip(params, data_grads, grads):
        extra = 0.01 * torch.sign(p) + 0.1 * p if id(p) in penalized else torch.zeros_like(p)
        torch.testing.assert_close(gt, gd + extra, rtol=1e-12, atol=1e-12)


def test_l2_alone_in_trainer_equals_sgd_weight_decay() -> None:
    """Reference: torch.optim.SGD(weight_decay=l2) adds l2 * w to every gradient; with every parameter
    penalised the two runs end with the same weights."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    finals = []
    for techniques, wd in (([WeightPenalty(l2=0.05, exclude_bias_and_norm=False)], 0.0), ([], 0.05)):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.2, weight_decay=wd),
                InMemoryLoader(x, y, 8, seed=0), techniques=techniques, max_steps=6).fit()
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_l1_in_trainer_one_step_closed_form() -> None:
    """One full-batch SGD step: w1 = w0 - lr * (dCE/dw + l1 * sign(w0)) for the weight, bias unpenalised."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    gw, gb = torch.autograd.grad(F.cross_entropy(model(x), y), [model.weight, model.bias])
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
            techniques=[WeightPenalty(l1=0.05)], max_steps=1).fit()
    torch.testing.assert_close(model.weight.detach(), w0 - 0.1 * (gw + 0.05 * torch.sign(w0)))
    torch.testing.assert_close(model.bias.detach(), b0 - 0.1 * gb)


def test_runs_after_the_loss_replacers_whatever_the_list_order() -> None:
    for replacer in (LabelSmoothing(), FocalLossTechnique(), BootstrapLoss()):
        p = plan([WeightPenalty(l2=0.1), replacer])
        assert [p.names[i] for i in p.order["loss"]] == [replacer.name, "weight_penalty"]


def test_zero_coefficients_leave_the_loss_alone_and_invalid_ones_raise() -> None:
    loss = torch.tensor(1.5)
    state = SimpleNamespace(raw_model=_model(), loss=loss)
    WeightPenalty().on_loss(state)
    assert state.loss is loss
    for kwargs in ({"l1": -0.1}, {"l2": float("nan")}, {"l2": True}):
        with pytest.raises(ValueError, match="weight_penalty"):
            WeightPenalty(**kwargs)
    assert WeightPenalty().state_dict() == {}
