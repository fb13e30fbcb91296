"""Gradient attributions: vanilla gradients (saliency), gradient x input, SmoothGrad.

* Vanilla gradient (Simonyan, Vedaldi & Zisserman 2014, "Deep Inside Convolutional Networks"):
  ``A(x) = d S_c(x) / d x`` with ``S_c`` the logit of the explained class ``c``; its absolute value is the
  paper's saliency map (``absolute=True``).
* Gradient x input (Shrikumar et al. 2016, "Not Just a Black Box"): ``A(x) = x * d S_c / d x``, the first-order
  Taylor term of ``S_c`` around the zero input.
* SmoothGrad (Smilkov et al. 2017, eq. 3): ``A(x) = 1/n sum_{k=1..n} d S_c(x + eps_k) / d x`` with
  ``eps_k ~ N(0, sigma^2 I)`` and ``sigma = noise_level * (max(x) - min(x))`` per example (the paper's
  "noise level" of 10-20%); ``squared=True`` averages the squared gradients (SmoothGrad-squared).

All three return a tensor shaped like ``inputs``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    check_batch_size,
    check_inputs,
    check_model,
    check_positive_int,
    eval_mode,
    input_gradients,
    resolve_target,
)

__all__ = ["vanilla_gradient", "gradient_x_input", "smoothgrad"]


def vanilla_gradient(model: nn.Module, inputs: Tensor, target: TargetLike = None, *, absolute: bool = False,
                     batch_size: int | None = None) -> Tensor:
    """``d logit_target / d inputs`` per example (``(B, *shape)``); ``absolute=True`` gives its magnitude."""
    method = "vanilla_gradient"
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        g, _ = input_gradients(model, x, t, method, bs)
    return g.abs() if absolute else g


def gradient_x_input(model: nn.Module, inputs: Tensor, target: TargetLike = None, *,
                     batch_size: int | None = None) -> Tensor:
    """``inputs * d logit_target / d inputs`` per example (``(B, *shape)``)."""
    method = "gradient_x_input"
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        g, _ = input_gradients(model, x, t, method, bs)
    return x * g


def smoothgrad(model: nn.Module, inputs: Tensor, target: TargetLike = None, *, samples: int = 50,
               noise_level: float = 0.15, squared: bool = False, generator: torch.Generator | None = None,
               batch_size: int | None = None) -> Tensor:
    """SmoothGrad: the mean gradient over ``samples`` noisy copies of each input (Smilkov et al. 2017).

    ``sigma = noise_level * (max - min)`` of each example. The noise is drawn from ``generator`` (a
    ``torch.Generator`` on the inputs' device; the global RNG when None) as one ``(B, samples, *shape)`` draw.
    ``noise_level = 0`` gives the vanilla gradient.
    """
    method = "smoothgrad"
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    n = check_positive_int(samples, "samples", method)
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or not noise_level >= 0:
        raise UserError(f"{method}: noise_level must be a number >= 0 (a fraction of each input's range), "
                        f"got {noise_level!r}")
    b, shape = x.shape[0], x.shape[1:]
    flat = x.reshape(b, -1)
    sigma = (float(noise_level) * (flat.max(1).values - flat.min(1).values)).view(b, 1, *([1] * len(shape)))
    noise = torch.randn((b, n, *shape), generator=generator, dtype=x.dtype, device=x.device) * sigma
    noisy = (x.unsqueeze(1) + noise).reshape(b * n, *shape)  # example-major: rows i*n .. i*n+n-1 are example i
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        g, _ = input_gradients(model, noisy, t.repeat_interleave(n), method, bs)
    g = g.reshape(b, n, *shape)
    return (g * g).mean(1) if squared else g.mean(1)
