"""Gradient reversal and DANN.

References: the closed form of the GRL (identity forward, ``-lambda I`` Jacobian; Ganin et al. 2016 eq. 13-14)
checked against autograd through the same graph without the GRL (the gradient must be that one times -lambda);
the lambda schedule written out by hand (sec. 5.2.2); ``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits``
for the DANN loss and ``torch.autograd.grad`` on the closed-form saddle-point gradients (eq. 10-12).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError
from tricklab.paradigms.domain import DomainClassifier, GradientReversal, dann_lambda, dann_loss, grad_reverse


@pytest.mark.parametrize("lambd", [0.0, 0.3, 1.0, 2.5])
def test_identity_forward_and_gradient_times_minus_lambda(lambd: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, dtype=torch.float64)
    y = grad_reverse(x, lambd)
    assert torch.equal(y, x)
    (g_rev,) = torch.autograd.grad(torch.tanh(y @ w).sum(), [x])
    (g_ref,) = torch.autograd.grad(torch.tanh(x @ w).sum(), [x])
    torch.testing.assert_close(g_rev, -lambd * g_ref, rtol=0, atol=0)


def test_layer_uses_its_current_lambda() -> None:
    grl = GradientReversal(0.5)
    x = torch.ones(3, requires_grad=True)
    grl(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))
    grl.lambd = 2.0
    x.grad = None
    grl(x).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -2.0))


def test_lambda_schedule() -> None:
    for p in (0.0, 0.1, 0.5, 1.0):
        assert dann_lambda(p) == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1, rel=1e-15)
    assert dann_lambda(0.0) == 0.0 and dann_lambda(1.0) > 0.9999
    with pytest.raises(ConfigError, match="progress"):
        dann_lambda(1.5)
    with pytest.raises(ConfigError, match="lambda"):
        grad_reverse(torch.ones(1), -1.0)


def test_dann_loss_gives_the_saddle_point_gradients() -> None:
    torch.manual_seed(0)
    feat = nn.Linear(6, 5).double()
    clf = nn.Linear(5, 3).double()
    head = DomainClassifier(5, hidden=4, lambd=0.7).double()
    xs, xt = torch.randn(8, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)
    ys = torch.randint(0, 3, (8,))
    fs, ft = feat(xs), feat(xt)
    loss, parts = dann_loss(clf(fs), ys, fs, ft, head)
    params = [*feat.parameters(), *clf.parameters(), *head.net.parameters()]
    grads = torch.autograd.grad(loss, params)
    # reference: L_y and L_d without the GRL, gradients combined as eq. (10)-(12)
    fs, ft = feat(xs), feat(xt)
    l_y = F.cross_entropy(clf(fs), ys)
    d = head.net(torch.cat([fs, ft])).squeeze(-1)
    l_d = F.binary_cross_entropy_with_logits(d, torch.cat([torch.zeros(8), torch.ones(6)]).double())
    assert parts["task_loss"] == pytest.approx(float(l_y.detach())) and parts["domain_loss"] == pytest.approx(
        float(l_d.detach()))
    nf, nc = len(list(feat.parameters())), len(list(clf.parameters()))
    gy = torch.autograd.grad(l_y, params, allow_unused=True, retain_graph=True)
    gd = torch.autograd.grad(l_d, params, allow_unused=True)
    z = [torch.zeros_like(p) for p in params]
    gy = [a if a is not None else b for a, b in zip(gy, z)]
    gd = [a if a is not None else b for a, b in zip(gd, z)]
    for i, g in enumerate(grads):
        expected = gy[i] - 0.7 * gd[i] if i < nf else gy[i] if i < nf + nc else gd[i]
        torch.testing.assert_close(g, expected)
