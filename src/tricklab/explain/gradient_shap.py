"""GradientSHAP / expected gradients (Lundberg & Lee 2017; Erion et al. 2021, "Improving performance of deep
learning models with axiomatic attribution priors and expected gradients", eq. 4):

    phi_i(x) = E_{x' ~ D, a ~ U(0, 1)} [ (x_i - x'_i) * dS_c(x' + a (x - x')) / dx_i ]

integrated gradients averaged over a background distribution ``D`` of baselines, estimated by Monte Carlo with
``samples`` draws per example: a baseline index ``j ~ U{0..N-1}``, a point ``a ~ U(0, 1)`` on the path and,
optionally (``stdev > 0``, as in SmoothGrad), Gaussian noise added to the input, ``x~ = x + N(0, stdev^2)``,
which then replaces ``x`` in both factors. The estimate's expectation satisfies
``sum_i phi_i = S_c(x) - E_{x'}[S_c(x')]`` (completeness of integrated gradients, averaged over ``D``).

The draws come from ``generator`` (or the global RNG), in this order: baseline indices ``(B, samples)``, noise
``(B, samples, *shape)`` (only when ``stdev > 0``), path points ``(B, samples)``. To reproduce another
implementation's samples exactly, pass them as :class:`GradientShapDraws`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    baseline_distribution,
    check_batch_size,
    check_inputs,
    check_model,
    check_positive_int,
    eval_mode,
    input_gradients,
    resolve_target,
)

__all__ = ["gradient_shap", "GradientShapDraws", "draw_gradient_shap"]


@dataclass(frozen=True)
class GradientShapDraws:
    """Explicit random draws for :func:`gradient_shap`: ``baseline_index`` ``(B, S)`` int64 into the baselines,
    ``alphas`` ``(B, S)`` path points in [0, 1], ``noise`` ``(B, S, *shape)`` or None."""

    baseline_index: Tensor
    alphas: Tensor
    noise: Tensor | None = None


def draw_gradient_shap(inputs: Tensor, num_baselines: int, samples: int, stdev: float = 0.0,
                       generator: torch.Generator | None = None) -> GradientShapDraws:
    """The draws :func:`gradient_shap` makes (see the module docstring for their order)."""
    b, shape = inputs.shape[0], inputs.shape[1:]
    idx = torch.randint(0, num_baselines, (b, samples), generator=generator, device=inputs.device)
    noise = None
    if stdev > 0:
        noise = torch.randn((b, samples, *shape), generator=generator, dtype=inputs.dtype, device=inputs.device)
        noise = noise * stdev
    alphas = torch.rand((b, samples), generator=generator, dtype=inputs.dtype, device=inputs.device)
    return GradientShapDraws(idx, alphas, noise)


def gradient_shap(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                  baselines: Tensor | float | None = None, samples: int = 50, stdev: float = 0.0,
                  generator: torch.Generator | None = None, draws: GradientShapDraws | None = None,
                  batch_size: int | None = None) -> Tensor:
    """GradientSHAP attributions shaped like ``inputs`` (``(B, *shape)``) against the background ``baselines``
    (``(N, *shape)``; zeros when None). ``draws`` overrides the random draws (and ``samples``)."""
    method = "gradient_shap"
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    refs = baseline_distribution(baselines, x, method)
    if isinstance(stdev, bool) or not isinstance(stdev, (int, float)) or not stdev >= 0:
        raise UserError(f"{method}: stdev must be a number >= 0 (the input noise), got {stdev!r}")
    b, shape = x.shape[0], x.shape[1:]
    if draws is None:
        draws = draw_gradient_shap(x, refs.shape[0], check_positive_int(samples, "samples", method), float(stdev),
                                   generator)
    s = draws.alphas.shape[1] if draws.alphas.dim() == 2 else -1
    if draws.alphas.shape != (b, s) or draws.baseline_index.shape != (b, s) or (
            draws.noise is not None and draws.noise.shape != (b, s, *shape)):
        raise UserError(f"{method}: draws must hold baseline_index and alphas of shape (B, S) = ({b}, S) and noise "
                        f"(B, S, {', '.join(map(str, shape))}) or None")
    xs = x.unsqueeze(1).expand(b, s, *shape)
    if draws.noise is not None:
        xs = xs + draws.noise.to(x)
    xs = xs.reshape(b * s, *shape)
    base = refs[draws.baseline_index.reshape(-1).to(refs.device)]  # (B*S, *shape)
    a = draws.alphas.reshape(b * s, *([1] * len(shape))).to(x)
    points = base + a * (xs - base)
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        g, _ = input_gradients(model, points, t.repeat_interleave(s), method, bs)
    return ((xs - base) * g).reshape(b, s, *shape).mean(1)
