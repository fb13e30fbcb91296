"""Robustness to random input noise: additive Gaussian noise ``x + sigma * n``, ``n ~ N(0, I)``.

The noise is drawn on the CPU from ``generator`` (or the global RNG) and moved to the inputs' device, so a
seeded evaluation gives the same noise on any device. ``sigma`` is in input units (MNIST-1D inputs have
unit variance, so sigma 0.5 is half the signal's standard deviation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.robust.attacks import set_eval_mode

__all__ = ["gaussian_noise", "noise_accuracy"]


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None,
                   clip: Sequence[float] | None = None) -> Tensor:
    """``x + sigma * n`` with ``n ~ N(0, I)`` of ``x``'s shape, clamped to ``clip = [low, high]`` when given."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma >= 0:
        raise UserError(f"noise sigma must be a non-negative number, got {sigma!r}")
    if not x.is_floating_point():
        raise UserError(f"noise is added to floating inputs, got {x.dtype}")
    noisy = x + sigma * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    return noisy if clip is None else noisy.clamp(float(clip[0]), float(clip[1]))


@torch.no_grad()
def noise_accuracy(model: nn.Module, x: Tensor, y: Tensor, sigmas: Sequence[float], *,
                   generator: torch.Generator | None = None, clip: Sequence[float] | None = None,
                   batch_size: int = 1000) -> dict[float, float]:
    """Top-1 accuracy of ``model`` (in eval mode, restored afterwards) on ``x`` with Gaussian noise of each
    ``sigma``: ``{sigma: accuracy}``. The noise of each sigma is a fresh draw, batch after batch."""
    out: dict[float, float] = {}
    with set_eval_mode(model):
        for sigma in sigmas:
            correct = 0
            for i in range(0, len(x), batch_size):
                xb, yb = x[i:i + batch_size], y[i:i + batch_size]
                pred = model(gaussian_noise(xb, float(sigma), generator, clip)).argmax(-1)
                correct += int((pred == yb.to(pred.device)).sum())
            out[float(sigma)] = correct / len(x)
    return out
