"""Integrated gradients (Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks", eq. 1):

    IG_i(x) = (x_i - x'_i) * integral_0^1 dS_c(x' + a (x - x')) / dx_i da

for the explained logit ``S_c`` and a baseline ``x'``. The integral is a quadrature ``sum_k w_k g(a_k)``:

* ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: ``a_k = (k + o) / n``, ``w_k = 1/n`` for
  ``k = 0..n-1`` and offset ``o`` = 0, 1, 1/2 (the paper's eq. 3 is the right sum);
* ``riemann_trapezoid``: ``a_k = k / (n - 1)``, ``w = [1/2, 1, ..., 1, 1/2] / (n - 1)``;
* ``gausslegendre`` (default): the n-point Gauss-Legendre rule mapped from [-1, 1] to [0, 1]
  (``a_k = (1 + t_k) / 2``, ``w_k = v_k / 2`` with the Legendre nodes ``t_k`` and weights ``v_k``), exact for
  polynomials of degree 2n - 1, so it needs far fewer steps on a smooth path.

Completeness (the paper's Proposition 1): ``sum_i IG_i(x) = S_c(x) - S_c(x')``. ``return_residual=True``
also returns the per-example residual ``sum_i IG_i - (S_c(x) - S_c(x'))``, the quadrature error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    broadcast_baseline,
    check_batch_size,
    check_inputs,
    check_model,
    check_positive_int,
    eval_mode,
    forward_scores,
    input_gradients,
    per_example_sum,
    resolve_target,
)

__all__ = ["integrated_gradients", "quadrature", "completeness_residual", "IG_METHODS"]

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``a`` in [0, 1] and weights ``w`` (float64, each ``(steps,)``) of the path-integral rule."""
    n = check_positive_int(steps, "steps", "integrated_gradients")
    if method == "gausslegendre":
        t, v = np.polynomial.legendre.leggauss(n)
        return 0.5 * (t + 1.0), 0.5 * v
    if method == "riemann_trapezoid":
        if n < 2:
            raise UserError("integrated_gradients: riemann_trapezoid needs steps >= 2")
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    offsets = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}
    if method not in offsets:
        raise UserError(f"integrated_gradients: unknown method {method!r}; choose one of {', '.join(IG_METHODS)}")
    return (np.arange(n) + offsets[method]) / n, np.full(n, 1.0 / n)


def completeness_residual(model: nn.Module, inputs: Tensor, baselines: Tensor, target: Tensor,
                          attributions: Tensor, method: str = "completeness_residual",
                          batch_size: int | None = None) -> Tensor:
    """``sum_i A_i - (S_c(x) - S_c(x'))`` per example (``(B,)``): 0 for a method that satisfies completeness."""
    bs = check_batch_size(batch_size, method)
    with eval_mode(model):
        delta = forward_scores(model, inputs, target, method, bs) - forward_scores(model, baselines, target, method, bs)
    return per_example_sum(attributions) - delta


def integrated_gradients(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                         baselines: Tensor | float | None = None, steps: int = 64, method: str = "gausslegendre",
                         return_residual: bool = False,
                         batch_size: int | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Integrated gradients of ``inputs`` (``(B, *shape)``) against ``baselines`` (zeros by default; a number,
    one example, or one per example).

    Returns the attributions shaped like ``inputs``; with ``return_residual`` also the completeness residual
    ``(B,)`` (see the module docstring). All ``B * steps`` path points are evaluated in chunks of ``batch_size``.
    """
    name = "integrated_gradients"
    model, x, bs = check_model(model, name), check_inputs(inputs, name), check_batch_size(batch_size, name)
    alphas, weights = quadrature(method, steps)
    base = broadcast_baseline(baselines, x, name)
    b, shape, n = x.shape[0], x.shape[1:], len(alphas)
    a = torch.as_tensor(alphas, dtype=x.dtype, device=x.device).view(1, n, *([1] * len(shape)))
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device).view(1, n, *([1] * len(shape)))
    diff = x - base
    path = (base.unsqueeze(1) + a * diff.unsqueeze(1)).reshape(b * n, *shape)  # (B*n, *shape), example-major
    with eval_mode(model):
        t = resolve_target(model, x, target, name, bs)
        g, _ = input_gradients(model, path, t.repeat_interleave(n), name, bs)
        attr = diff * (g.reshape(b, n, *shape) * w).sum(1)
        if not return_residual:
            return attr
        residual = completeness_residual(model, x, base, t, attr, name, bs)
    return attr, residual
