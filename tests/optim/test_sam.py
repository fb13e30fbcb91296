"""SAM / adaptive SAM optimizer: first_step against the NumPy formulas of Foret et al. (eq. 2) and Kwon et al.
(eq. 8), second_step against the base optimizer stepped by hand, the closure form against
pytorch_optimizer.SAM (test-only oracle), and the foreach path against the single-tensor path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optim_helpers import assert_close, assert_equal, clone_params, make_params

from tricklab.optim import SAM, sam_perturbation

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


def _numpy_e(ws: list[np.ndarray], gs: list[np.ndarray], rhos: list[float], ada: list[bool]) -> list[np.ndarray]:
    """e_w = rho g / ||g|| (SAM) or rho |w|^2 g / || |w| g || (ASAM); global norm, + 1e-12."""
    tg = [np.abs(w) * g if a else g for w, g, a in zip(ws, gs, ada)]
    norm = np.sqrt(sum((t**2).sum() for t in tg)) + 1e-12
    return [r * (w**2 if a else 1.0) * g / norm for w, g, r, a in zip(ws, gs, rhos, ada)]


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("foreach", [True, False])
def test_first_step_matches_numpy(adaptive: bool, foreach: bool) -> None:
    """Reference: the NumPy formulas above in float64, two groups with different rho."""
    params = make_params(0)
    g = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g)
    w0 = [p.detach().double().numpy().copy() for p in params]
    g0 = [p.grad.double().numpy().copy() for p in params]
    opt = SAM([{"params": params[:3], "rho": 0.1}, {"params": params[3:]}], torch.optim.SGD, rho=0.05,
              adaptive=adaptive, foreach=foreach, lr=0.1)
    opt.first_step()
    e = _numpy_e(w0, g0, [0.1] * 3 + [0.05] * 3, [adaptive] * 6)
    for p, w, ee in zip(params, w0, e):
        np.testing.assert_allclose(p.detach().double().numpy(), w + ee, rtol=1e-6, atol=1e-7)
    # the perturbation has norm rho for SAM (one group's rho for all here)
    if not adaptive:
        single = sam_perturbation(params, [p.grad for p in params], 0.05)
        assert float(torch.linalg.vector_norm(torch.cat([x.ravel() for x in single]))) == pytest.approx(0.05, rel=1e-5)


@pytest.mark.parametrize("adaptive", [False, True])
def test_second_step_restores_w_exactly_and_steps_the_base(adaptive: bool) -> None:
    """Reference: torch.optim.SGD(momentum) stepped by hand at the original weights with the gradients
    given at the perturbed point."""
    params = make_params(0)
    shadow = clone_params(params)
    opt = SAM(params, torch.optim.SGD, rho=0.05, adaptive=adaptive, lr=0.1, momentum=0.9)
    ref = torch.optim.SGD(shadow, lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(2)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.first_step(zero_grad=True)
        assert opt.pending and all(p.grad is None for p in params)
        second = [torch.randn(p.shape, generator=g) for p in params]
        for p, q, s in zip(params, shadow, second):
            p.grad, q.grad = s.clone(), s.clone()
        opt.second_step()
        ref.step()
        assert not opt.pending
        assert_equal(params, shadow)


@pytest.mark.parametrize("adaptive", [False, True])
def test_closure_step_matches_pytorch_optimizer_sam(adaptive: bool) -> None:
    """Reference: pytorch_optimizer.SAM(params, torch.optim.SGD, rho, adaptive) used as its docs say
    (closure() for the gradients at w, then step(closure)) against our step(closure), 25 steps of a small
    least-squares problem."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randn(64, 2)
    m1 = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    m2 = __import__("copy").deepcopy(m1)
    ours = SAM(m1.parameters(), torch.optim.SGD, rho=0.1, adaptive=adaptive, lr=0.05, momentum=0.9)
    theirs = pytorch_optimizer.SAM(m2.parameters(), torch.optim.SGD, rho=0.1, adaptive=adaptive, lr=0.05,
                                   momentum=0.9)

    def closure_for(model: torch.nn.Module, opt: torch.optim.Optimizer):
        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss
        return closure

    for _ in range(25):
        ours.step(closure_for(m1, ours))
        c2 = closure_for(m2, theirs)
        c2()
        theirs.step(c2)
    assert_close(list(m1.parameters()), list(m2.parameters()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("adaptive", [False, True])
def test_foreach_equals_single_tensor_path(adaptive: bool) -> None:
    """Reference: the per-tensor path (foreach=False): bit-identical perturbation and steps."""
    a = make_params(0)
    b = clone_params(a)
    oa = SAM(a, torch.optim.SGD, adaptive=adaptive, foreach=True, lr=0.1)
    ob = SAM(b, torch.optim.SGD, adaptive=adaptive, foreach=False, lr=0.1)
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        gr = [torch.randn(p.shape, generator=g) for p in a]
        for opt, ps in ((oa, a), (ob, b)):
            for p, x in zip(ps, gr):
                p.grad = x.clone()
            opt.first_step()
        assert_equal(a, b)
        for opt in (oa, ob):
            opt.second_step()
        assert_equal(a, b)


def test_errors_and_instance_base() -> None:
    params = make_params(0)
    opt = SAM(params, torch.optim.SGD, lr=0.1)
    with pytest.raises(RuntimeError, match="closure"):
        opt.step()
    for p in params:
        p.grad = torch.ones_like(p)
    opt.first_step()
    with pytest.raises(RuntimeError, match="twice"):
        opt.first_step()
    opt.restore()
    assert not opt.pending
    inner = torch.optim.Adam(params, lr=0.1)
    wrapped = SAM(params, inner, rho=0.02)
    assert wrapped.base is inner and wrapped.param_groups[0]["rho"] == 0.02
    with pytest.raises(ValueError):
        SAM(make_params(1), inner)  # other parameters than the instance's
    with pytest.raises(ValueError):
        SAM(params, torch.optim.SGD, rho=-1.0, lr=0.1)
