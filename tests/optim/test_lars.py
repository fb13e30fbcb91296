"""LARS: references are (1) pytorch_optimizer.LARS (test-only oracle) over 60 steps of identical seeded
gradients, (2) the paper's Algorithm 1 written in NumPy, (3) our per-tensor path for the foreach path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optim_helpers import assert_close, assert_equal, clone_params, feed, make_params

import tricklab.optim.lars as lars_mod
from tricklab.optim import LARS

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


OPTIONS = [{"weight_decay": 0.01}, {"weight_decay": 0.0, "nesterov": True},
           {"weight_decay": 0.05, "momentum": 0.5, "dampening": 0.1}, {"momentum": 0.0},
           {"momentum": 0.0, "weight_decay": 0.01}, {"nesterov": True, "weight_decay": 0.01, "dampening": 0.2},
           {"weight_decay": 0.01, "trust_coefficient": 0.005}]


@pytest.mark.parametrize("kw", OPTIONS)
@pytest.mark.parametrize("our_foreach", [True, False])
@pytest.mark.parametrize("their_foreach", [False, True])
def test_matches_pytorch_optimizer_lars(kw: dict, our_foreach: bool, their_foreach: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: pytorch_optimizer.LARS (ndim < 2 tensors: plain momentum SGD, no decay, no trust ratio;
    momentum buffer starting at 0), same lr, trust coefficient and gradients, for every option both have
    (momentum 0 and > 0, Nesterov, dampening, weight decay, trust coefficient); our multi-tensor path cut into
    several runs."""
    monkeypatch.setattr(lars_mod, "CHUNK_NUMEL", 30)
    monkeypatch.setattr(lars_mod, "CACHE_NUMEL", 0)
    kw = {"trust_coefficient": 0.02, **kw}
    ours_p = make_params(0)
    theirs_p = clone_params(ours_p)
    ours = LARS(ours_p, lr=0.5, foreach=our_foreach, **kw)
    theirs = pytorch_optimizer.LARS(theirs_p, lr=0.5, foreach=their_foreach, **kw)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=60)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)


def test_param_groups_match_pytorch_optimizer_lars() -> None:
    """Reference: pytorch_optimizer.LARS over the same two groups (create_optimizer's split: decay on matrices,
    none on biases; a second lr), Nesterov momentum."""
    ours_p = make_params(4)
    theirs_p = clone_params(ours_p)

    def groups(ps: list) -> list[dict]:
        return [{"params": [p for p in ps if p.ndim >= 2], "weight_decay": 0.01},
                {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0, "lr": 0.1}]

    ours = LARS(groups(ours_p), lr=0.5, nesterov=True, trust_coefficient=0.02)
    theirs = pytorch_optimizer.LARS(groups(theirs_p), lr=0.5, nesterov=True, trust_coefficient=0.02)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=40)
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
                                {"momentum": 0.0, "weight_decay": 0.1}, {"momentum": 0.0},
                                {"nesterov": True, "exclude_bias_and_norm": False, "dampening": 0.3}])
@pytest.mark.parametrize("chunk", [1 << 18, 30])
def test_foreach_equals_single_tensor_path(kw: dict, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: the per-tensor loop (foreach=False); bit-identical after 20 steps, with the group in one run
    and cut into several."""
    monkeypatch.setattr(lars_mod, "CHUNK_NUMEL", chunk)
    monkeypatch.setattr(lars_mod, "CACHE_NUMEL", 0)
    a = make_params(0)
    b = clone_params(a)
    feed([(LARS(a, lr=0.1, foreach=True, **kw), a), (LARS(b, lr=0.1, foreach=False, **kw), b)], steps=20)
    assert_equal(a, b)


@pytest.mark.parametrize("kw", [{"weight_decay": 0.01, "nesterov": True}, {"momentum": 0.0, "weight_decay": 0.01}])
@pytest.mark.parametrize("foreach", [True, False])
def test_step_allocates_no_parameter_sized_tensors(kw: dict, foreach: bool) -> None:
    """Reference: the profiler's memory events. After the first step (momentum buffers, scratch), a step
    allocates only norms and trust ratios (nothing near a tensor's size): the allocation per step is what made
    the multi-tensor path 1.4x pytorch_optimizer's step."""
    from torch.profiler import ProfilerActivity, profile

    ps = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(4)] + [torch.nn.Parameter(torch.randn(64))]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = LARS(ps, lr=0.1, foreach=foreach, **kw)
    opt.step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    sizes = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    assert max(sizes, default=0) <= 64 * 4


@pytest.mark.parametrize("foreach", [True, False])
def test_mixed_dtypes_in_one_group_equal_separate_optimizers(foreach: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: one LARS per dtype (the update is per tensor, so a mixed group is the two groups side by
    side), with the group cut into several runs."""
    monkeypatch.setattr(lars_mod, "CHUNK_NUMEL", 30)
    monkeypatch.setattr(lars_mod, "CACHE_NUMEL", 0)
    a = make_params(0)
    for i in (0, 2, 5):
        a[i] = torch.nn.Parameter(a[i].detach().double())
    b = clone_params(a)
    kw = {"lr": 0.1, "weight_decay": 0.01, "nesterov": True, "foreach": foreach}
    mixed = LARS(a, **kw)
    sep = [LARS([p for p in b if p.dtype == dt], **kw) for dt in (torch.float32, torch.float64)]
    g = torch.Generator().manual_seed(9)
    for _ in range(10):
        for p, q in zip(a, b):
            gr = torch.randn(p.shape, generator=g, dtype=p.dtype)
            p.grad, q.grad = gr.clone(), gr.clone()
        mixed.step()
        for o in sep:
            o.step()
    assert_equal(a, b)
    assert [p.dtype for p in a] == [p.dtype for p in b]


def test_new_parameters_in_a_group() -> None:
    """Reference: a fresh LARS over the new parameters. Replacing a group's parameters (other shapes) after
    some steps works like a new optimizer over them (nothing per tensor is kept but the momentum buffers)."""
    a = make_params(0)
    opt = LARS(a, lr=0.1, weight_decay=0.01, nesterov=True)
    feed([(opt, a)], steps=2)
    b = make_params(1, shapes=[(5, 7), (2, 3, 4), (9,)])
    c = clone_params(b)
    opt.param_groups[0]["params"] = b
    feed([(opt, b), (LARS(c, lr=0.1, weight_decay=0.01, nesterov=True), c)], steps=3)
    assert_equal(b, c)
    assert all(set(st) == {"momentum_buffer"} for st in opt.state.values())


@pytest.mark.parametrize("kw", OPTIONS)
@pytest.mark.parametrize("foreach", [True, False])
def test_does_not_change_grad_in_place(kw: dict, foreach: bool) -> None:
    ps = make_params(1)
    for p in ps:
        p.grad = torch.full_like(p, 2.0)
    LARS(ps, lr=0.1, foreach=foreach, **kw).step()
    assert all(torch.equal(p.grad, torch.full_like(p, 2.0)) for p in ps)


@pytest.mark.parametrize("kw", [{"lr": -1.0}, {"momentum": 1.0}, {"trust_coefficient": 0.0},
                                {"nesterov": True, "momentum": 0.0}])
def test_invalid_args(kw: dict) -> None:
    with pytest.raises(ValueError):
        LARS([torch.nn.Parameter(torch.ones(2))], **kw)
