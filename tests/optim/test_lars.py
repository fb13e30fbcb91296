"""LARS: references are (1) pytorch_optimizer.LARS (test-only oracle) over 60 steps of identical seeded
gradients, (2) the paper's Algorithm 1 written in NumPy, (3) our per-tensor path for the foreach path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optim_helpers import assert_close, assert_equal, clone_params, feed, make_params

from tricklab.optim import LARS

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


@pytest.mark.parametrize("kw", [{"weight_decay": 0.01}, {"weight_decay": 0.0, "nesterov": True},
                                {"weight_decay": 0.05, "momentum": 0.5, "dampening": 0.1}])
@pytest.mark.parametrize("their_foreach", [False, True])
def test_matches_pytorch_optimizer_lars(kw: dict, their_foreach: bool) -> None:
    """Reference: pytorch_optimizer.LARS (ndim < 2 tensors: plain momentum SGD, no decay, no trust ratio;
    momentum buffer starting at 0), same lr, trust coefficient and gradients."""
    ours_p = make_params(0)
    theirs_p = clone_params(ours_p)
    ours = LARS(ours_p, lr=0.5, trust_coefficient=0.02, **kw)
    theirs = pytorch_optimizer.LARS(theirs_p, lr=0.5, trust_coefficient=0.02, foreach=their_foreach, **kw)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=60)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)


def _numpy_lars(x: list[np.ndarray], grads: list[list[np.ndarray]], lr: float, eta: float, wd: float,
                mom: float, exclude: bool) -> list[np.ndarray]:
    """You et al. 2017, Algorithm 1 in float64: local_lr = eta ||w|| / (||g|| + wd ||w||),
    v = m v + local_lr (g + wd w), w -= lr v; excluded (ndim < 2) tensors: v = m v + g."""
    x = [a.astype(np.float64) for a in x]
    v = [np.zeros_like(a) for a in x]
    for gs in grads:
        for i, g in enumerate(gs):
            if exclude and x[i].ndim < 2:
                u = g
            else:
                wn, gn = np.linalg.norm(x[i]), np.linalg.norm(g)
                den = gn + wd * wn
                local = eta * wn / den if wn > 0 and den > 0 else 1.0
                u = local * (g + wd * x[i])
            v[i] = mom * v[i] + u
            x[i] = x[i] - lr * v[i]
    return x


@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("foreach", [True, False])
def test_matches_numpy_paper_equations(exclude: bool, foreach: bool) -> None:
    """Reference: the paper's LARS update in NumPy float64, 5 steps; one all-zero tensor checks the
    local_lr = 1 rule; ``exclude_bias_and_norm`` on and off."""
    params = make_params(2)
    with torch.no_grad():
        params[2].zero_()
    x0 = [p.detach().numpy().copy() for p in params]
    g = torch.Generator().manual_seed(5)
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(5)]
    opt = LARS(params, lr=0.3, momentum=0.9, weight_decay=0.01, trust_coefficient=0.01,
               exclude_bias_and_norm=exclude, foreach=foreach)
    for gs in grads:
        for p, gr in zip(params, gs):
            p.grad = gr.clone()
        opt.step()
    want = _numpy_lars(x0, [[gr.double().numpy() for gr in gs] for gs in grads], 0.3, 0.01, 0.01, 0.9, exclude)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.detach().double().numpy(), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1, "nesterov": True}, {"exclude_bias_and_norm": False},
                                {"momentum": 0.0, "weight_decay": 0.1}])
def test_foreach_equals_single_tensor_path(kw: dict) -> None:
    """Reference: the per-tensor loop (foreach=False); bit-identical after 20 steps."""
    a = make_params(0)
    b = clone_params(a)
    feed([(LARS(a, lr=0.1, foreach=True, **kw), a), (LARS(b, lr=0.1, foreach=False, **kw), b)], steps=20)
    assert_equal(a, b)


def test_does_not_change_grad_in_place() -> None:
    p = torch.nn.Parameter(torch.ones(3, 3))
    p.grad = torch.full((3, 3), 2.0)
    LARS([p], lr=0.1, weight_decay=0.1).step()
    assert torch.equal(p.grad, torch.full((3, 3), 2.0))


@pytest.mark.parametrize("kw", [{"lr": -1.0}, {"momentum": 1.0}, {"trust_coefficient": 0.0},
                                {"nesterov": True, "momentum": 0.0}])
def test_invalid_args(kw: dict) -> None:
    with pytest.raises(ValueError):
        LARS([torch.nn.Parameter(torch.ones(2))], **kw)
