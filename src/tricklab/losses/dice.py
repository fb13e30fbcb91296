"""Soft Dice loss (Milletari, Navab & Ahmadi, "V-Net: Fully Convolutional Neural Networks for Volumetric
Medical Image Segmentation", 3DV 2016).

In segmentation the foreground is often a few percent of the pixels, and per-pixel cross-entropy is dominated
by the background. The Dice coefficient measures overlap relative to size, so a small structure counts as
much as a large one. V-Net's differentiable form uses squared terms in the denominator; the "plain"
form (``squared=False``) uses the sums themselves (Sørensen-Dice on soft masks). Per sample ``n`` and class
``c``, summing over the spatial positions ``i``:

    D_nc = (2 sum_i p_nci g_nci + eps) / (sum_i p_nci^2 + sum_i g_nci^2 + eps)
    loss_n = 1 - mean_c D_nc

with ``p = softmax(logits)`` over classes and ``g`` the one-hot targets. ``eps`` (default 1) keeps the ratio
defined for a class absent from both prediction and target (then ``D = 1``: nothing to find, nothing found).
"""

from __future__ import annotations

import torch
from torch import nn

from tricklab.losses._common import LossExample, check_float, check_reduction, reduce, target_probs


def soft_dice_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    squared: bool = True,
    eps: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class soft Dice loss over softmax probabilities, averaged over classes per sample.

    Args:
        input: logits (N, C, d1, ...) with C >= 2 (classes on dim 1); (N, C) counts as one position per sample.
        target: class indices (N, d1, ...) or probabilities / one-hot with ``input``'s shape.
        squared: V-Net's squared denominator (True) or the plain-sum form (False).
        eps: smoothing added to numerator and denominator (> 0).
        reduction: over the per-sample losses (N,): "mean", "sum" or "none".
    """
    check_float("input", input, min_ndim=2)
    check_reduction(reduction)
    if input.shape[1] < 2:
        raise ValueError(f"soft_dice_loss needs C >= 2 classes on dim 1 (softmax); got shape {tuple(input.shape)}. "
                         "For one binary mask pass two channels (background, foreground).")
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"dice eps must be > 0, got {eps!r}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    g = target_probs(target, input)
    p = torch.softmax(input, dim=1)
    if input.ndim == 2:  # (N, C): one spatial position, so the spatial sums below are not over an empty tuple
        p, g = p.unsqueeze(-1), g.unsqueeze(-1)
    dims = tuple(range(2, p.ndim))
    inter = (p * g).sum(dims)  # (N, C)
    if squared:
        denom = (p * p).sum(dims) + (g * g).sum(dims)
    else:
        denom = p.sum(dims) + g.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)  # (N, C)
    return reduce(1 - dice.mean(1), reduction)


class SoftDiceLoss(nn.Module):
    """Soft Dice loss 1 - mean_c (2 sum p g + eps) / (sum p^2 + sum g^2 + eps) (V-Net, Milletari et al. 2016)."""

    def __init__(self, squared: bool = True, eps: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"dice eps must be > 0, got {eps!r}")
        self.squared = bool(squared)
        self.eps = float(eps)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(input, target, self.squared, self.eps, self.reduction)

    def extra_repr(self) -> str:
        return f"squared={self.squared}, eps={self.eps}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(2, 3, 4, 5, generator=generator)
        target = torch.randint(0, 3, (2, 4, 5), generator=generator)
        return LossExample((logits, target), {}, (0,), (2,))
