"""Lookahead and Ranger: references are pytorch_optimizer.Lookahead / pytorch_optimizer.Ranger (test-only
oracles) over 60 steps of identical seeded gradients, the paper's slow-weight rule checked directly, and the
single-tensor path for the foreach path."""

from __future__ import annotations

import pytest
import torch
from optim_helpers import assert_close, assert_equal, clone_params, feed, make_params

from tricklab.optim import Lookahead, Ranger

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


@pytest.mark.parametrize("inner", ["adam", "sgd"])
@pytest.mark.parametrize("k,alpha", [(5, 0.5), (3, 0.8)])
def test_lookahead_matches_pytorch_optimizer(inner: str, k: int, alpha: float) -> None:
    """Reference: pytorch_optimizer.Lookahead(torch.optim.<inner>(...), k, alpha) with the default
    pullback_momentum='none' (inner state kept across the reset, as in the paper)."""
    def make(params: list) -> torch.optim.Optimizer:
        if inner == "adam":
            return torch.optim.Adam(params, lr=0.05)
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)

    ours_p = make_params(0)
    theirs_p = clone_params(ours_p)
    ours = Lookahead(make(ours_p), k=k, alpha=alpha)
    theirs = pytorch_optimizer.Lookahead(make(theirs_p), k=k, alpha=alpha)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=61)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)


def test_lookahead_slow_weight_rule() -> None:
    """Reference: Zhang et al. 2019, Algorithm 1: after k inner steps theta_k, phi_1 = phi_0 + alpha
    (theta_k - phi_0) and the fast weights equal phi_1; between syncs the inner optimizer runs alone."""
    params = make_params(1)
    shadow = clone_params(params)
    inner_ref = torch.optim.SGD(shadow, lr=0.1)
    phi0 = [p.detach().clone() for p in params]
    la = Lookahead(params, base="sgd", lr=0.1, k=3, alpha=0.25)
    g = torch.Generator().manual_seed(0)
    for t in range(3):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for p, q, gr in zip(params, shadow, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        la.step()
        inner_ref.step()
        if t < 2:
            assert_equal(params, shadow)  # no sync before step k
    for p, q, s in zip(params, shadow, phi0):
        want = s + 0.25 * (q.detach() - s)
        torch.testing.assert_close(p.detach(), want, rtol=1e-6, atol=1e-7)
        assert torch.equal(la.state[p]["slow"], p.detach())


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("use_gc", [True, False])
def test_ranger_matches_pytorch_optimizer(weight_decay: float, use_gc: bool) -> None:
    """Reference: pytorch_optimizer.Ranger with degenerated_to_sgd=True. Its default (False) takes the
    first ~5 steps (before the variance is rectifiable) with step size -lr/(1-beta1^t), i.e. *up* the
    gradient; torch.optim.RAdam (our inner optimizer) takes x -= lr * m_hat there, which is what their
    degenerated_to_sgd=True does. After that both are RAdam + GC + Lookahead(k=6, alpha=0.5) with decoupled
    weight decay."""
    ours_p = make_params(0)
    theirs_p = clone_params(ours_p)
    ours = Ranger(ours_p, lr=0.01, weight_decay=weight_decay, use_gc=use_gc)
    theirs = pytorch_optimizer.Ranger(theirs_p, lr=0.01, weight_decay=weight_decay, use_gc=use_gc,
                                      degenerated_to_sgd=True)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=60)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)


def test_ranger_is_radam_plus_gc_plus_lookahead() -> None:
    """Reference: composing the pieces by hand: centralize (NumPy-checked elsewhere), torch.optim.RAdam with
    decoupled weight decay, then the Lookahead rule every k steps."""
    a = make_params(4)
    b = clone_params(a)
    ours = Ranger(a, lr=0.01, weight_decay=0.01, k=4, alpha=0.5)
    radam = torch.optim.RAdam(b, lr=0.01, betas=(0.95, 0.999), eps=1e-5, weight_decay=0.01,
                              decoupled_weight_decay=True)
    slow = [p.detach().clone() for p in b]

    def hand_step(t: int) -> None:
        if (t + 1) % 4 == 0:
            with torch.no_grad():
                for s, p in zip(slow, b):
                    s.add_(p - s, alpha=0.5)
                    p.copy_(s)

    g = torch.Generator().manual_seed(3)
    for t in range(12):
        grads = [torch.randn(p.shape, generator=g) for p in a]
        for p, q, gr in zip(a, b, grads):
            p.grad = gr.clone()
            q.grad = gr - gr.mean(dim=tuple(range(1, gr.ndim)), keepdim=True) if gr.ndim > 1 else gr.clone()
        ours.step()
        radam.step()
        hand_step(t)
    assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", ["lookahead", "ranger"])
def test_foreach_equals_single_tensor_path(cls: str) -> None:
    """Reference: the per-tensor path (foreach=False), bit-identical after 20 steps."""
    a = make_params(0)
    b = clone_params(a)
    if cls == "lookahead":
        oa = Lookahead(torch.optim.Adam(a, lr=0.01, foreach=True), k=3, foreach=True)
        ob = Lookahead(torch.optim.Adam(b, lr=0.01, foreach=False), k=3, foreach=False)
    else:
        oa = Ranger(a, lr=0.01, weight_decay=0.01, foreach=True)
        ob = Ranger(b, lr=0.01, weight_decay=0.01, foreach=False)
    feed([(oa, a), (ob, b)], steps=20)
    if cls == "lookahead":
        assert_equal(a, b)
    else:  # torch.optim.RAdam's own foreach and per-tensor kernels round differently (last bit)
        assert_close(a, b, rtol=1e-7, atol=1e-7)


def test_lookahead_shares_groups_with_inner_and_schedulers_reach_it() -> None:
    """Reference: torch.optim.lr_scheduler.StepLR on the wrapper changes the lr the inner optimizer uses."""
    p = make_params(0)
    la = Lookahead(p, base=torch.optim.SGD, lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(la, step_size=1, gamma=0.5)
    for q in p:
        q.grad = torch.zeros_like(q)
    la.step()
    sched.step()
    assert la.base.param_groups[0]["lr"] == 0.5 and la.param_groups is la.base.param_groups


def test_lookahead_argument_errors() -> None:
    p = make_params(0)
    with pytest.raises(TypeError):
        Lookahead(p)  # no base
    with pytest.raises(TypeError):
        Lookahead(torch.optim.SGD(p, lr=0.1), base="adam")
    with pytest.raises(ValueError):
        Lookahead(p, base="sgd", lr=0.1, k=0)
    with pytest.raises(ValueError):
        Lookahead(p, base="sgd", lr=0.1, alpha=1.5)
