"""FGSM, PGD and Gaussian noise (tricklab.robust).

References:
- PGD: a slow loop written here, one example at a time in float64 with NumPy for the step, the projection and
  the clipping (per coordinate for L-inf, the norm formula for L2), its gradient from ``torch.autograd.grad``
  on the single example; the random start redrawn from the same-seeded generator by the documented law.
- FGSM on a linear model: the NumPy closed form of the input gradient of the cross-entropy,
  ``grad_x = W^T (softmax(W x + b) - onehot(y))`` (so the gradient, not only the output, is checked).
- Projection: NumPy clamping / ``delta * min(1, eps / ||delta||)``.
- Noise: ``x + sigma * randn`` drawn from a same-seeded generator.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError, UserError
from tricklab.robust import RobustnessConfig, fgsm, gaussian_noise, noise_accuracy, pgd, project


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.3), nn.Linear(16, 4)).double()


def _batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 6, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def _slow_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
              norm: str, clip: tuple[float, float] | None, start: np.ndarray | None) -> np.ndarray:
    """One example at a time; the step, projection and clipping in NumPy."""
    model.eval()
    out = []
    for i in range(len(x)):
        x0 = x[i].numpy().copy()
        adv = x0.copy() if start is None else x0 + start[i]
        if clip is not None and start is not None:
            adv = np.minimum(np.maximum(adv, clip[0]), clip[1])
        for _ in range(steps):
            xi = torch.tensor(adv[None], requires_grad=True)
            loss = F.cross_entropy(model(xi), y[i:i + 1])
            (g,) = torch.autograd.grad(loss, [xi])
            g = g[0].numpy()
            if norm == "linf":
                cand = adv + alpha * np.sign(g)
                delta = np.array([min(max(d, -eps), eps) for d in cand - x0])
            else:
                cand = adv + alpha * g / max(np.linalg.norm(g), 1e-12)
                d = cand - x0
                delta = d * min(1.0, eps / max(np.linalg.norm(d), 1e-12))
            adv = x0 + delta
            if clip is not None:
                adv = np.array([min(max(v, clip[0]), clip[1]) for v in adv])
        out.append(adv)
    return np.stack(out)


def _start(shape: tuple[int, ...], eps: float, norm: str, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    if norm == "linf":
        return ((torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * eps).numpy()
    direction = torch.randn(shape, generator=g, dtype=torch.float64).numpy()
    u = torch.rand(shape[0], generator=g, dtype=torch.float64).numpy()
    radius = eps * u ** (1.0 / shape[1])
    return direction / np.linalg.norm(direction, axis=1, keepdims=True) * radius[:, None]


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("clip", [None, (0.0, 1.0)])
def test_pgd_equals_the_slow_reference(norm: str, random_start: bool, clip: tuple[float, float] | None) -> None:
    model, (x, y) = _model(), _batch()
    eps, alpha, steps = (0.1, 0.03, 7) if norm == "linf" else (0.4, 0.15, 7)
    got = pgd(model, x, y, eps, alpha, steps, random_start=random_start, norm=norm, clip=clip,
              generator=torch.Generator().manual_seed(3))
    start = _start(tuple(x.shape), eps, norm, 3) if random_start else None
    ref = _slow_pgd(model, x, y, eps, alpha, steps, norm, clip, start)
    np.testing.assert_allclose(got.numpy(), ref, rtol=0, atol=1e-12)
    assert not torch.equal(got, x)  # the attack moved the inputs


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_eps_ball_and_the_valid_range(norm: str) -> None:
    model, (x, y) = _model(), _batch(64, 1)
    eps = 0.05 if norm == "linf" else 0.2
    adv = pgd(model, x, y, eps, alpha=1.0, steps=5, norm=norm, clip=(0.0, 1.0),
              generator=torch.Generator().manual_seed(0))  # a huge step: the projection must hold it
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-12
    assert float(size.max()) >= eps - 1e-9  # the huge step reaches the boundary
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    # inputs at the edge of the range: clipping keeps them there whatever the gradient says
    edge = torch.zeros_like(x)
    adv = pgd(model, edge, y, eps, alpha=eps, steps=3, norm=norm, clip=(0.0, 1.0), random_start=False)
    assert float(adv.min()) >= 0.0 and float((adv - edge).flatten(1).abs().amax()) <= eps + 1e-12


def test_projection_matches_numpy() -> None:
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(20, 3, 5, generator=g, dtype=torch.float64)
    np.testing.assert_array_equal(project(delta, 0.3, "linf").numpy(), np.clip(delta.numpy(), -0.3, 0.3))
    flat = delta.numpy().reshape(20, -1)
    n = np.linalg.norm(flat, axis=1, keepdims=True)
    ref = (flat * np.minimum(1.0, 2.0 / n)).reshape(delta.shape)
    np.testing.assert_allclose(project(delta, 2.0, "l2").numpy(), ref, rtol=1e-14)
    inside = delta / delta.flatten(1).norm(dim=1).reshape(-1, 1, 1) * 0.5
    assert torch.allclose(project(inside, 1.0, "l2"), inside)  # points inside the ball do not move
    with pytest.raises(UserError, match="norm"):
        project(delta, 1.0, "l1")


def test_fgsm_on_a_linear_model_equals_the_closed_form() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(5, 3).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    W, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    z = x.numpy() @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = (p - np.eye(3)[y.numpy()]) @ W  # d CE / d x, per example
    eps = 0.25
    np.testing.assert_allclose(fgsm(lin, x, y, eps).numpy(), x.numpy() + eps * np.sign(grad), rtol=0, atol=1e-15)
    clipped = fgsm(lin, x, y, eps, clip=(-0.5, 0.5)).numpy()
    np.testing.assert_allclose(clipped, np.clip(x.numpy() + eps * np.sign(grad), -0.5, 0.5), atol=1e-15)
    # one PGD step from x with alpha = eps is FGSM
    np.testing.assert_allclose(pgd(lin, x, y, eps, eps, 1, random_start=False).numpy(),
                               x.numpy() + eps * np.sign(grad), atol=1e-15)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_the_model_is_left_as_it_was(attack: str) -> None:
    model, (x, y) = _model(), _batch()
    model.train()
    model[3].eval()  # a model partly in eval mode keeps exactly its per-module modes
    model[4].weight.grad = torch.full_like(model[4].weight, 0.5)  # an existing gradient must not change
    modes = [m.training for m in model.modules()]
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    if attack == "fgsm":
        fgsm(model, x, y, 0.1)
    else:
        pgd(model, x, y, 0.1, 0.03, 4, generator=torch.Generator().manual_seed(0))
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # BatchNorm statistics untouched
    assert all(p.grad is None for n, p in model.named_parameters() if n != "4.weight")
    assert torch.equal(model[4].weight.grad, torch.full_like(model[4].weight, 0.5))


def test_the_attack_raises_the_loss_and_replays_with_a_seed() -> None:
    model, (x, y) = _model(), _batch(64, 2)
    model.eval()
    with torch.no_grad():
        clean = float(F.cross_entropy(model(x), y))
    a = pgd(model, x, y, 0.1, 0.03, 10, generator=torch.Generator().manual_seed(5))
    b = pgd(model, x, y, 0.1, 0.03, 10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with torch.no_grad():
        assert float(F.cross_entropy(model(a), y)) > clean
        assert float(F.cross_entropy(model(fgsm(model, x, y, 0.1)), y)) > clean
    with pytest.raises(UserError, match="floating"):
        pgd(model, y, y, 0.1, 0.03, 2)
    with pytest.raises(UserError, match="steps"):
        pgd(model, x, y, 0.1, 0.03, 0)


def test_gaussian_noise_and_noise_accuracy() -> None:
    x = torch.zeros(4, 3)
    got = gaussian_noise(x, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(got, 0.5 * torch.randn(4, 3, generator=torch.Generator().manual_seed(1)))
    assert float(gaussian_noise(x, 5.0, clip=(-1, 1)).abs().max()) <= 1.0
    model, (xb, yb) = _model(), _batch(50)
    model.eval()
    clean = float((model(xb).argmax(1) == yb).double().mean())
    acc = noise_accuracy(model, xb, yb, [0.0, 0.2], generator=torch.Generator().manual_seed(0), batch_size=7)
    assert acc[0.0] == pytest.approx(clean) and set(acc) == {0.0, 0.2}


def test_robustness_config_checks_and_evaluates() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(6, 4).double()
    x, y = _batch(40, 3)
    cfg = RobustnessConfig(eps=0.05, noise_sigmas=[0.1], batch_size=16, pgd_steps=3)
    out = cfg.evaluate(lin, x, y)
    assert list(out) == [name for name, _ in cfg.metrics()] == ["fgsm_accuracy", "pgd_accuracy",
                                                                 "noise_accuracy_0.1"]
    assert cfg.alpha == pytest.approx(2.5 * 0.05 / 3)
    # a huge ball: every prediction of a linear model can be flipped
    assert RobustnessConfig(eps=100.0, noise_sigmas=[]).evaluate(lin, x, y)["pgd_accuracy"] == 0.0
    for bad, match in [({"eps": 0}, "eps"), ({"norm": "l1"}, "norm"), ({"attacks": ["cw"]}, "attacks"),
                       ({"norm": "l2"}, "FGSM"), ({"clip": [1, 0]}, "clip"), ({"pgd_steps": 0}, "pgd_steps"),
                       ({"attacks": [], "noise_sigmas": []}, "nothing")]:
        with pytest.raises(ConfigError, match=match):
            RobustnessConfig(**bad)
