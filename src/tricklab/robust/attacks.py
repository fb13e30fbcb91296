"""Adversarial attacks on any classifier (or any model with a differentiable loss): FGSM and PGD.

Both are functional: they take a model, a batch and the attack's settings, and return the perturbed batch
(detached). While attacking they

* run the model in evaluation mode by default (``eval_mode=True``: no dropout draw, BatchNorm uses and keeps
  its running statistics), and put every submodule back in the mode it was in afterwards;
* differentiate the loss with respect to the *input* only (``torch.autograd.grad``), so nothing is
  accumulated into the parameters' ``.grad``;
* draw the random start from ``generator`` when one is given (on the CPU, then moved), so an attack can be
  replayed without touching the global random state.

Shapes: ``x`` is ``(B, ...)``; norms are taken per example over every non-batch dimension.

FGSM (Goodfellow et al. 2015, eq. 3): ``x' = clip(x + eps * sign(grad_x L(f(x), y)))``.

PGD (Madry et al. 2018, eq. 2 and section 2.1): from ``x_0 = x`` (or a uniform draw in the eps-ball when
``random_start``), ``steps`` times ``x_{t+1} = clip(Proj_{B(x, eps)}(x_t + alpha * s_t))`` with
``s_t = sign(g_t)`` for the L-inf ball and ``s_t = g_t / ||g_t||_2`` for the L2 ball, ``g_t = grad_x L``.
``clip`` clamps to the valid input range ``[low, high]`` (e.g. ``(0, 1)`` for images); because ``x`` itself
lies in that range, clamping after the projection keeps the point inside the ball.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import UserError

__all__ = ["NORMS", "fgsm", "pgd", "project", "set_eval_mode", "uniform_ball"]

NORMS = ("linf", "l2")

LossFn = Callable[[Tensor, Tensor], Tensor]


def _sum_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    # summed, not averaged: each example's input gradient then does not depend on the batch size
    return F.cross_entropy(outputs, targets, reduction="sum")


@contextlib.contextmanager
def set_eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run the block with ``model`` in eval mode (when ``enabled``); afterwards every submodule gets back its
    own ``training`` flag (a model that was partly in eval mode stays so)."""
    modes = [(m, m.training) for m in model.modules()]
    if enabled:
        model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _check(eps: float, norm: str, clip: Sequence[float] | None, x: Tensor | None = None
           ) -> tuple[float, float] | None:
    if x is not None and not x.is_floating_point():
        raise UserError(f"attacks perturb floating inputs, got {x.dtype} (token ids cannot be perturbed)")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise UserError(f"attack eps must be a non-negative number, got {eps!r}")
    if norm not in NORMS:
        raise UserError(f"attack norm must be one of {NORMS}, got {norm!r}")
    if clip is None:
        return None
    if len(clip) != 2 or not float(clip[0]) < float(clip[1]):
        raise UserError(f"attack clip must be [low, high] with low < high, got {clip!r}")
    return float(clip[0]), float(clip[1])


def _flat_norm(t: Tensor) -> Tensor:
    """Per-example L2 norm, shaped (B, 1, ..., 1) to broadcast against ``t``."""
    n = t.flatten(1).norm(dim=1)
    return n.reshape(-1, *([1] * (t.dim() - 1)))


def project(delta: Tensor, eps: float, norm: str = "linf") -> Tensor:
    """The perturbation ``delta`` projected onto the ``eps``-ball of ``norm`` (per example): clamped to
    ``[-eps, eps]`` for L-inf, scaled by ``min(1, eps / ||delta||_2)`` for L2."""
    _check(eps, norm, None)
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)


def uniform_ball(shape: torch.Size | Sequence[int], eps: float, norm: str, generator: torch.Generator | None,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """A draw uniform in the ``eps``-ball of ``norm`` per example (on the CPU): uniform in ``[-eps, eps]``
    per coordinate for L-inf; for L2 a Gaussian direction with radius ``eps * u^(1/d)``, ``u ~ U(0, 1)``,
    ``d`` the number of coordinates (the radius law of a uniform point in a d-ball)."""
    shape = torch.Size(shape)
    if norm == "linf":
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * eps
    direction = torch.randn(shape, generator=generator, dtype=dtype)
    d = shape[1:].numel()
    radius = torch.rand(shape[0], generator=generator, dtype=dtype) ** (1.0 / d) * eps
    return direction / _flat_norm(direction).clamp_min(1e-12) * radius.reshape(-1, *([1] * (len(shape) - 1)))


def _clamp(x: Tensor, clip: tuple[float, float] | None) -> Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


def _input_grad(model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), y)
        (grad,) = torch.autograd.grad(loss, [x])
    return grad.detach()


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, *, loss_fn: LossFn | None = None,
         clip: Sequence[float] | None = None, eval_mode: bool = True) -> Tensor:
    """Fast gradient sign method: ``clip(x + eps * sign(grad_x L(model(x), y)))`` (L-inf, one step).

    Args:
        model: any module mapping ``x`` to outputs ``loss_fn`` accepts (logits for the default cross-entropy).
        x, y: the batch and its targets.
        eps: the L-inf radius, in input units.
        loss_fn: ``(outputs, targets) -> scalar`` to increase; default the summed cross-entropy.
        clip: ``[low, high]`` valid input range, or None.
        eval_mode: attack the model in eval mode (restored afterwards).
    """
    box = _check(eps, "linf", clip, x)
    with set_eval_mode(model, eval_mode):
        grad = _input_grad(model, x, y, loss_fn or _sum_cross_entropy)
    return _clamp(x.detach() + eps * grad.sign(), box)


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, *,
        random_start: bool = True, norm: str = "linf", clip: Sequence[float] | None = None,
        loss_fn: LossFn | None = None, generator: torch.Generator | None = None, eval_mode: bool = True) -> Tensor:
    """Projected gradient descent on the loss (ascent), Madry et al. 2018 (see the module docstring).

    Args:
        eps: radius of the ball (L-inf or L2, per example), in input units.
        alpha: step size (L-inf: per coordinate; L2: length of each step).
        steps: number of gradient steps (>= 1).
        random_start: start from a uniform draw in the ball instead of ``x``.
        norm: ``"linf"`` or ``"l2"``.
        clip: ``[low, high]`` valid input range, or None.
        loss_fn: ``(outputs, targets) -> scalar`` to increase; default the summed cross-entropy.
        generator: the random start's generator (CPU); None draws from the global RNG.
        eval_mode: attack the model in eval mode (restored afterwards).
    """
    box = _check(eps, norm, clip, x)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserError(f"pgd steps must be a positive int, got {steps!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise UserError(f"pgd alpha must be a positive number, got {alpha!r}")
    loss_fn = loss_fn or _sum_cross_entropy
    x = x.detach()
    adv = x
    if random_start:
        start = uniform_ball(x.shape, eps, norm, generator, dtype=x.dtype)
        adv = _clamp(x + start.to(x.device), box)
    with set_eval_mode(model, eval_mode):
        for _ in range(steps):
            g = _input_grad(model, adv, y, loss_fn)
            step = g.sign() if norm == "linf" else g / _flat_norm(g).clamp_min(1e-12)
            adv = _clamp(x + project(adv + alpha * step - x, eps, norm), box)
    return adv.detach()
