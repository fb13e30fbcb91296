"""LAMB: references are (1) pytorch_optimizer.Lamb (test-only oracle) over 60 steps of identical seeded
gradients, (2) the paper's Algorithm 2 written in NumPy, (3) our per-tensor path for the foreach path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optim_helpers import assert_close, assert_equal, clone_params, feed, make_params

from tricklab.optim import LAMB

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("their_foreach", [False, True])
def test_matches_pytorch_optimizer_lamb(weight_decay: float, their_foreach: bool) -> None:
    """Reference: pytorch_optimizer.Lamb with weight_decouple=False (L2 inside r, the paper's form) and
    adam_debias=True (no 1/(1-beta1^t) step factor) equals our LAMB(bias_correction=False): both clamp ||x||
    at 10 and use trust 1 for zero norms. (Their trust ratio adds eps to ||r||; the difference is ~eps/||r||.)"""
    ours_p = make_params(0)
    theirs_p = clone_params(ours_p)
    ours = LAMB(ours_p, lr=0.02, weight_decay=weight_decay, bias_correction=False)
    theirs = pytorch_optimizer.Lamb(theirs_p, lr=0.02, weight_decay=weight_decay, weight_decouple=False,
                                    adam_debias=True, foreach=their_foreach)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=60)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)
    assert max(float((a - b).detach().abs().max()) for a, b in zip(ours_p, make_params(0))) > 0.1  # it moved


@pytest.mark.parametrize("our_foreach", [True, False])
def test_no_clamp_matches_pytorch_optimizer_lamb_without_clamp(our_foreach: bool) -> None:
    """Reference: pytorch_optimizer.Lamb with its clamp of ||x|| (a class attribute, 10) set to infinity on the
    instance, against our max_weight_norm=None; one tensor has norm > 10 so the clamp would matter."""
    ours_p = make_params(0)
    with torch.no_grad():
        ours_p[0].mul_(5.0)
    theirs_p = clone_params(ours_p)
    ours = LAMB(ours_p, lr=0.02, weight_decay=0.01, bias_correction=False, max_weight_norm=None,
                foreach=our_foreach)
    theirs = pytorch_optimizer.Lamb(theirs_p, lr=0.02, weight_decay=0.01, weight_decouple=False, adam_debias=True)
    theirs.clamp = float("inf")
    feed([(ours, ours_p), (theirs, theirs_p)], steps=40)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)


def _numpy_lamb(x: list[np.ndarray], grads: list[list[np.ndarray]], lr: float, b1: float, b2: float, eps: float,
                wd: float, clamp: float) -> list[np.ndarray]:
    """You et al. 2020, Algorithm 2, in float64: m, v, bias correction, r = m_hat/(sqrt(v_hat)+eps) + wd x,
    x -= lr * min(||x||, clamp)/||r|| * r."""
    x = [a.astype(np.float64) for a in x]
    m = [np.zeros_like(a) for a in x]
    v = [np.zeros_like(a) for a in x]
    for t, gs in enumerate(grads, start=1):
        for i, g in enumerate(gs):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            r = (m[i] / (1 - b1**t)) / (np.sqrt(v[i] / (1 - b2**t)) + eps) + wd * x[i]
            wn, rn = np.linalg.norm(x[i]), np.linalg.norm(r)
            trust = min(wn, clamp) / rn if wn > 0 and rn > 0 else 1.0
            x[i] = x[i] - lr * trust * r
    return x


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("foreach", [True, False])
def test_matches_numpy_paper_equations(weight_decay: float, foreach: bool) -> None:
    """Reference: the paper's update equations (bias-corrected Adam direction, L2 in r, clamped trust ratio)
    in NumPy float64, 5 steps; one tensor has norm > 10 so the clamp phi(z) = min(z, 10) is exercised, one is
    all zeros so the trust ratio 1 rule is."""
    params = make_params(3)
    with torch.no_grad():
        params[0].mul_(5.0)  # ||x|| ~ 32 > 10
        params[1].zero_()
    x0 = [p.detach().numpy().copy() for p in params]
    g = torch.Generator().manual_seed(7)
    grads = [[torch.randn(p.shape, generator=g) for p in params] for _ in range(5)]
    opt = LAMB(params, lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=weight_decay, foreach=foreach)
    for gs in grads:
        for p, gr in zip(params, gs):
            p.grad = gr.clone()
        opt.step()
    want = _numpy_lamb(x0, [[gr.double().numpy() for gr in gs] for gs in grads], 0.01, 0.9, 0.99, 1e-6,
                       weight_decay, 10.0)
    for p, w in zip(params, want):
        np.testing.assert_allclose(p.detach().double().numpy(), w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1}, {"bias_correction": False, "weight_decay": 0.01},
                                {"max_weight_norm": None}])
def test_foreach_equals_single_tensor_path(kw: dict) -> None:
    """Reference: the per-tensor loop (foreach=False) is the simple slow path; the multi-tensor path must
    give bit-identical parameters after 20 steps."""
    a = make_params(0)
    b = clone_params(a)
    feed([(LAMB(a, lr=0.01, foreach=True, **kw), a), (LAMB(b, lr=0.01, foreach=False, **kw), b)], steps=20)
    assert_equal(a, b)


def test_zero_gradient_leaves_weights_and_skips_params_without_grad() -> None:
    """Reference: closed form: g = 0 gives m = v = 0, r = 0, trust 1, no move (wd = 0)."""
    p = torch.nn.Parameter(torch.ones(3, 3))
    q = torch.nn.Parameter(torch.ones(2))
    opt = LAMB([p, q], lr=0.1)
    p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(p, torch.ones(3, 3)) and torch.equal(q, torch.ones(2)) and q not in opt.state


@pytest.mark.parametrize("kw", [{"lr": -1.0}, {"betas": (1.0, 0.9)}, {"eps": -1.0}, {"max_weight_norm": 0.0}])
def test_invalid_args(kw: dict) -> None:
    with pytest.raises(ValueError):
        LAMB([torch.nn.Parameter(torch.ones(2))], **kw)
