"""Counterfactuals. References: closed forms on a linear classifier (the smallest L2 change that reaches the
decision boundary is the projection onto it, c / ||v||; the smallest L1 change moves only the feature with the
largest |v_i|, by c / max |v_i|), which no valid counterfactual can beat; NumPy's median for the MAD weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explain_helpers import paper_cnn
from tricklab.errors import UserError
from tricklab.explain import diverse_counterfactuals, wachter_counterfactual
from tricklab.explain.counterfactual import logit_hinge, mad_weights


def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    m = nn.Linear(6, 2)
    x = torch.randn(8, 6)
    pred = m(x).argmax(1)
    tgt = 1 - pred
    w, b = m.weight.detach(), m.bias.detach()
    v = w[tgt] - w[pred]
    c = -((x * v).sum(1) + b[tgt] - b[pred])  # a valid change needs v . delta >= c (> 0 here)
    return m, x, tgt, (v, c)


def test_l2_counterfactual_is_near_the_projection_on_the_boundary() -> None:
    m, x, tgt, (v, c) = _linear()
    r = wachter_counterfactual(m, x, tgt, distance="l2", margin=0.0, steps=100)
    assert bool(r.valid.all()) and torch.equal(r.predicted, tgt)
    best = c / v.norm(dim=1)
    assert bool((r.l2 >= best * (1 - 1e-4)).all())  # nobody beats the projection
    assert bool((r.l2 <= best * 1.1).all()), r.l2 / best


def test_l1_counterfactual_is_sparse_and_near_optimal() -> None:
    m, x, tgt, (v, c) = _linear()
    r = wachter_counterfactual(m, x, tgt, distance="l1", margin=0.0, steps=100)
    assert bool(r.valid.all())
    best = c / v.abs().max(1).values
    assert bool((r.l1 >= best * (1 - 1e-4)).all()) and bool((r.l1 <= best * 1.15).all()), r.l1 / best
    assert float(r.sparsity.max()) <= 2 / 6  # one or two of the six features move; L2 moves all of them
    r2 = wachter_counterfactual(m, x, tgt, distance="l2", margin=0.0, steps=20, rounds=3)
    assert float(r2.sparsity.min()) == 1.0


def test_counterfactuals_flip_a_cnn_and_respect_fixed_features_and_bounds() -> None:
    m = paper_cnn()
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(1)).clamp(-2, 2)
    tgt = m(x).topk(2, dim=1).indices[:, 1]  # the runner-up class
    fixed = torch.zeros(40, dtype=torch.bool)
    fixed[::2] = True  # every other time step may not change
    r = wachter_counterfactual(m, x, tgt, fixed=fixed, lower=-3.0, upper=3.0, steps=100)
    assert float(r.summary()["validity"]) == 1.0
    assert torch.equal(m(r.counterfactuals).argmax(1), tgt)
    assert torch.equal(r.counterfactuals[:, fixed], x[:, fixed])
    assert float(r.counterfactuals.min()) >= -3.0 and float(r.counterfactuals.max()) <= 3.0
    d = diverse_counterfactuals(m, x[:2], tgt[:2], k=3, fixed=fixed, steps=150, check_every=25,
                                generator=torch.Generator().manual_seed(0))
    assert d.counterfactuals.shape == (2, 3, 40) and d.valid.shape == (2, 3)
    assert bool(d.valid.all())
    assert torch.equal(d.counterfactuals[:, :, fixed], x[:2].unsqueeze(1).expand(2, 3, 40)[:, :, fixed])
    # kept apart: every pair differs, and more diversity weight spreads them further
    assert float(d.diversity.min()) > 0
    wide = diverse_counterfactuals(m, x[:2], tgt[:2], k=3, fixed=fixed, diversity=20.0, steps=150, check_every=25,
                                   generator=torch.Generator().manual_seed(0))
    assert float(wide.diversity.mean()) > float(d.diversity.mean())
    s = d.summary()
    assert set(s) == {"validity", "l1", "l2", "sparsity", "diversity"}


def test_hinge_and_mad_weights() -> None:
    z = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]])
    t = torch.tensor([1, 1])
    torch.testing.assert_close(logit_hinge(z, t, 0.1), torch.tensor([1.1, 0.0]))
    data = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    # torch.median takes the lower middle value for an even count; NumPy averages the two: compare on odd N
    odd = data[:49].numpy()
    mad = np.median(np.abs(odd - np.median(odd, 0)), 0)
    np.testing.assert_allclose(mad_weights(data[:49]).numpy(), 1 / mad, rtol=1e-6)


def test_errors() -> None:
    m = paper_cnn()
    x = torch.randn(2, 40)
    with pytest.raises(UserError, match="distance"):
        wachter_counterfactual(m, x, 1, distance="l3")
    with pytest.raises(UserError, match="outside"):
        wachter_counterfactual(m, x, 1, lower=10.0)
    with pytest.raises(UserError, match="0..9"):
        wachter_counterfactual(m, x, 11, steps=1, rounds=1)
    with pytest.raises(UserError, match="does not broadcast"):
        wachter_counterfactual(m, x, 1, fixed=torch.zeros(3, dtype=torch.bool))
