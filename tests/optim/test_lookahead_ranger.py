"""Lookahead, Ranger and its RAdam: references are pytorch_optimizer.Lookahead / pytorch_optimizer.Ranger
(test-only oracles) and torch.optim.RAdam over 60 steps of identical seeded gradients, the paper's slow-weight
rule checked directly, and the single-tensor path for the foreach path."""

from __future__ import annotations

import copy

import pytest
import torch
from optim_helpers import assert_close, assert_equal, clone_params, feed, make_params

import tricklab.optim.lookahead as lookahead_mod
import tricklab.optim.radam as radam_mod
from tricklab.optim import Lookahead, Ranger
from tricklab.optim.radam import RAdam, rectification

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


@pytest.mark.parametrize("k", [1, 3])
def test_lookahead_foreach_equals_per_tensor_sync(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: the per-tensor sync (foreach=False), bit-identical, with the CPU multi-tensor sync cut into
    several runs."""
    monkeypatch.setattr(lookahead_mod, "CHUNK_NUMEL", 30)
    a = make_params(2)
    b = clone_params(a)
    oa = Lookahead(torch.optim.SGD(a, lr=0.05, momentum=0.9), k=k, alpha=0.7)
    ob = Lookahead(torch.optim.SGD(b, lr=0.05, momentum=0.9), k=k, alpha=0.7, foreach=False)
    feed([(oa, a), (ob, b)], steps=12, check=lambda t: assert_equal(a, b))


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
@pytest.mark.parametrize("foreach", [True, False])
def test_ranger_matches_pytorch_optimizer(weight_decay: float, use_gc: bool, foreach: bool) -> None:
    """Reference: pytorch_optimizer.Ranger with degenerated_to_sgd=True. Its default (False) takes the
    first ~5 steps (before the variance is rectifiable) with step size -lr/(1-beta1^t), i.e. *up* the
    gradient; torch.optim.RAdam (our inner optimizer) takes x -= lr * m_hat there, which is what their
    degenerated_to_sgd=True does. After that both are RAdam + GC + Lookahead(k=6, alpha=0.5) with decoupled
    weight decay."""
    ours_p = make_params(0)
    theirs_p = clone_params(ours_p)
    ours = Ranger(ours_p, lr=0.01, weight_decay=weight_decay, use_gc=use_gc, foreach=foreach)
    theirs = pytorch_optimizer.Ranger(theirs_p, lr=0.01, weight_decay=weight_decay, use_gc=use_gc,
                                      degenerated_to_sgd=True, foreach=foreach)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=60)
    assert_close(ours_p, theirs_p, rtol=1e-5, atol=1e-6)


def test_ranger_other_options_match_pytorch_optimizer() -> None:
    """Reference: pytorch_optimizer.Ranger with the same k, alpha, betas and eps (k=1: a sync every step)."""
    ours_p = make_params(3)
    theirs_p = clone_params(ours_p)
    kw = {"lr": 0.01, "k": 1, "alpha": 0.8, "betas": (0.9, 0.99), "eps": 1e-8}
    ours = Ranger(ours_p, **kw)
    theirs = pytorch_optimizer.Ranger(theirs_p, degenerated_to_sgd=True, **kw)
    feed([(ours, ours_p), (theirs, theirs_p)], steps=40)
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


@pytest.mark.parametrize("foreach", [True, False])
def test_ranger_fused_sync_equals_lookahead_over_radam(foreach: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: the unfused composition, our Lookahead(RAdam(decoupled decay, GC)) stepping RAdam then
    syncing every k steps. Ranger syncs each run right after its RAdam update; bit-identical over 30 steps (5
    syncs), with runs of a few tensors and some tensors without a gradient on some steps (RAdam skips them, the
    sync still covers them)."""
    monkeypatch.setattr(radam_mod, "CHUNK_NUMEL", 30)
    monkeypatch.setattr(lookahead_mod, "CHUNK_NUMEL", 30)
    a = make_params(7)
    b = clone_params(a)
    ours = Ranger(a, lr=0.02, weight_decay=0.01, k=6, alpha=0.5, foreach=foreach)
    ref = Lookahead(RAdam(b, lr=0.02, betas=(0.95, 0.999), eps=1e-5, weight_decay=0.01, decoupled_weight_decay=True,
                          foreach=foreach, centralize=True), k=6, alpha=0.5, foreach=foreach)
    g = torch.Generator().manual_seed(4)
    for t in range(30):
        for i, (p, q) in enumerate(zip(a, b)):
            if (t + i) % 4 == 0:
                p.grad = q.grad = None
            else:
                gr = torch.randn(p.shape, generator=g)
                p.grad, q.grad = gr.clone(), gr.clone()
        ours.step()
        ref.step()
        assert_equal(a, b)
    assert ours.base.after_update is None


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
    assert_equal(a, b)  # our RAdam's two paths run the same ops in the same order


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


# ---- Ranger's own RAdam (tricklab.optim.radam) -----------------------------------------------------------


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (0.01, True), (0.01, False)])
@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.95, 0.999), 1e-5)])
def test_radam_matches_torch_radam(foreach: bool, weight_decay: float, decoupled: bool,
                                   betas: tuple[float, float], eps: float) -> None:
    """Reference: torch.optim.RAdam with the same foreach flag and weight-decay mode, 60 steps (the first few
    unrectified: rho_t <= 5), to 1e-7."""
    ours_p = make_params(2)
    theirs_p = clone_params(ours_p)
    kw = dict(lr=0.01, betas=betas, eps=eps, weight_decay=weight_decay, decoupled_weight_decay=decoupled,
              foreach=foreach)
    ours = RAdam(ours_p, **kw)
    theirs = torch.optim.RAdam(theirs_p, **kw)

    def check(t: int) -> None:
        assert_close(ours_p, theirs_p, rtol=1e-7, atol=1e-7)

    feed([(ours, ours_p), (theirs, theirs_p)], steps=60, check=check)


def test_radam_rectification_threshold() -> None:
    """Reference: the paper's rho_t with torch's threshold (rho_t > 5): beta2 = 0.999 rectifies from step 6
    (rho_5 = 4.99, rho_6 = 5.99), and r_t rises towards 1."""
    rho_inf = 2 / (1 - 0.999) - 1
    rho = [rho_inf - 2 * t * 0.999**t / (1 - 0.999**t) for t in range(1, 8)]
    assert [r > 5 for r in rho] == [False] * 5 + [True] * 2
    assert [rectification(t, 0.999) for t in range(1, 6)] == [0.0] * 5
    r = [rectification(t, 0.999) for t in (6, 100, 10_000, 1_000_000)]
    assert 0 < r[0] < r[1] < r[2] < r[3] <= 1.0 and r[3] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("foreach", [True, False])
def test_radam_mixed_step_counts_match_torch(foreach: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: torch.optim.RAdam, with some gradients None on some steps (per-tensor step counts differ,
    so one group has rectified and unrectified tensors at once) and small runs in the foreach path."""
    monkeypatch.setattr(radam_mod, "CHUNK_NUMEL", 30)
    a = make_params(5)
    b = clone_params(a)
    ours = RAdam(a, lr=0.02, weight_decay=0.01, decoupled_weight_decay=True, foreach=foreach)
    theirs = torch.optim.RAdam(b, lr=0.02, weight_decay=0.01, decoupled_weight_decay=True, foreach=foreach)
    g = torch.Generator().manual_seed(7)
    for t in range(40):
        for i, (p, q) in enumerate(zip(a, b)):
            if (t + i) % 3 == 0 and t < 20:  # skip some tensors in early steps
                p.grad = q.grad = None
            else:
                gr = torch.randn(p.shape, generator=g)
                p.grad, q.grad = gr.clone(), gr.clone()
        ours.step()
        theirs.step()
        assert_close(a, b, rtol=1e-7, atol=1e-7)
    assert len({ours.state[p]["step"] for p in a}) > 1


@pytest.mark.parametrize("use_gc", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_ranger_foreach_equals_single_tensor_exactly(use_gc: bool, weight_decay: float,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference: the per-tensor path, bit-identical over 60 steps (10 Lookahead syncs), with the foreach
    path cut into several runs."""
    monkeypatch.setattr(radam_mod, "CHUNK_NUMEL", 40)
    a = make_params(6)
    b = clone_params(a)
    oa = Ranger(a, lr=0.01, weight_decay=weight_decay, use_gc=use_gc, foreach=True)
    ob = Ranger(b, lr=0.01, weight_decay=weight_decay, use_gc=use_gc, foreach=False)
    feed([(oa, a), (ob, b)], steps=60, check=lambda t: assert_equal(a, b))


def test_ranger_state_dict_round_trip_exact() -> None:
    """Reference: an uninterrupted run. A fresh Ranger over copied parameters, loaded from the state_dict
    after 9 steps (mid Lookahead period), continues bit-identically for 20 steps."""
    a = make_params(8)
    ours = Ranger(a, lr=0.01, weight_decay=0.01)
    feed([(ours, a)], steps=9)
    saved = copy.deepcopy(ours.state_dict())
    b = clone_params(a)
    resumed = Ranger(b, lr=0.01, weight_decay=0.01)
    resumed.load_state_dict(saved)
    feed([(ours, a), (resumed, b)], steps=20, seed=2, check=lambda t: assert_equal(a, b))
    for p, q in zip(a, b):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            x, y = ours.base.state[p][key], resumed.base.state[q][key]
            assert (torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y)
        assert torch.equal(ours.state[p]["slow"], resumed.state[q]["slow"])


def test_radam_loads_torch_radam_state() -> None:
    """Reference: torch.optim.RAdam continuing its own run; our RAdam loads its state_dict (tensor steps)
    and follows it."""
    a = make_params(9)
    theirs = torch.optim.RAdam(a, lr=0.01)
    feed([(theirs, a)], steps=8)
    b = clone_params(a)
    ours = RAdam(b, lr=0.01)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    feed([(theirs, a), (ours, b)], steps=20, seed=3)
    assert_close(a, b, rtol=1e-7, atol=1e-7)
    assert ours.state[b[0]]["step"] == 28


def test_ranger_step_allocates_no_parameter_sized_tensors() -> None:
    """Reference: the profiler's memory events. After the first step (state and scratch buffers), a step,
    a Lookahead sync step included, allocates only GC row means and scalars (nothing near a tensor's size)."""
    from torch.profiler import ProfilerActivity, profile

    ps = [torch.nn.Parameter(torch.randn(64, 64)) for _ in range(4)] + [torch.nn.Parameter(torch.randn(64))]
    for p in ps:
        p.grad = torch.randn_like(p)
    opt = Ranger(ps, lr=0.01, weight_decay=0.01, k=2)
    opt.step()
    bufs = [v.data_ptr() for _, _, views in opt.base._runs[0][2] for v in views]
    for _ in range(2):  # one plain step and one sync step
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            opt.step()
        sizes = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
        assert max(sizes, default=0) <= 64 * 4  # a 64-row mean
    assert [v.data_ptr() for _, _, views in opt.base._runs[0][2] for v in views] == bufs
