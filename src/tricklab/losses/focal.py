"""Focal loss (Lin, Goyal, Girshick, He & Dollár, "Focal Loss for Dense Object Detection", ICCV 2017).

Cross-entropy is dominated by the many easy, well-classified examples; the focal loss multiplies it by
``(1 - p_t)^gamma`` so that their contribution shrinks and training focuses on the hard ones (eq. 5):

    FL(p_t) = -alpha_t (1 - p_t)^gamma log p_t

``gamma = 0`` and no ``alpha`` gives plain cross-entropy. Two forms:

* :func:`focal_loss` - multi-class, ``p = softmax(logits)``; ``alpha`` a scalar weight or a per-class tensor
  ``alpha_c``; soft (probability) targets ``t`` give ``-sum_c t_c alpha_c (1 - p_c)^gamma log p_c``.
* :func:`sigmoid_focal_loss` - the paper's binary (per-logit sigmoid) form with ``alpha_t = alpha`` for
  positives and ``1 - alpha`` for negatives (the paper's best setting is ``alpha = 0.25, gamma = 2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.losses._common import (
    LossExample,
    check_class_indices,
    check_float,
    check_reduction,
    reduce,
    target_probs,
)

AlphaLike = float | Sequence[float] | torch.Tensor | None


def _check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
        raise ValueError(f"focal gamma must be a number >= 0 (0 gives cross-entropy), got {gamma!r}")
    return float(gamma)


def _alpha_tensor(alpha: AlphaLike, num_classes: int, like: torch.Tensor) -> torch.Tensor | float | None:
    """None, a float, or a (C,) tensor of per-class weights on ``like``'s device and dtype."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        if alpha < 0:
            raise ValueError(f"focal alpha must be >= 0, got {alpha!r}")
        return float(alpha)
    a = torch.as_tensor(alpha, dtype=like.dtype, device=like.device)
    if a.ndim != 1 or a.shape[0] != num_classes:
        raise ValueError(f"per-class focal alpha must have shape ({num_classes},), got {tuple(a.shape)}")
    if bool((a < 0).any()):
        raise ValueError("per-class focal alpha must be >= 0 everywhere")
    return a


def _modulating(log_p: torch.Tensor, gamma: float) -> torch.Tensor:
    """(1 - p)^gamma from log p; ``-expm1(log p)`` keeps 1 - p accurate when p is close to 1."""
    if gamma == 0.0:
        return torch.ones_like(log_p)  # avoids 0 ** 0 gradients (0 * inf) at p == 1
    base = -torch.expm1(log_p)
    if gamma < 1.0:
        # d/dp (1-p)^gamma is infinite at p == 1 for gamma < 1; a tiny floor keeps the gradient finite
        base = base.clamp_min(torch.finfo(base.dtype).tiny)
    return base.pow(gamma)


def focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: AlphaLike = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Multi-class (softmax) focal loss.

    Args:
        input: logits (N, C) or (N, C, d1, ...), classes on dim 1.
        target: class indices (N,) / (N, d1, ...), or probabilities with ``input``'s shape (soft targets).
        gamma: focusing parameter >= 0; 0 gives cross-entropy.
        alpha: None, a scalar weight, or per-class weights (C,) (``alpha_t = alpha[target]``).
        reduction: "mean" (over the N * d1 * ... elements, unweighted), "sum" or "none" (N, d1, ...).
    """
    check_float("input", input, min_ndim=2)
    check_reduction(reduction)
    gamma = _check_gamma(gamma)
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    c = input.shape[1]
    a = _alpha_tensor(alpha, c, input)
    log_p = F.log_softmax(input, dim=1)  # (N, C, ...)
    if target.is_floating_point():
        t = target_probs(target, input)
        # soft targets: -sum_c t_c alpha_c (1 - p_c)^gamma log p_c (equals the hard form for one-hot t)
        term = t * _modulating(log_p, gamma) * log_p
        if isinstance(a, torch.Tensor):
            term = term * a.view(1, c, *([1] * (input.ndim - 2)))
        elif a is not None:
            term = term * a
        loss = -term.sum(1)
    else:
        check_class_indices(target, input)
        log_pt = log_p.gather(1, target.long().unsqueeze(1)).squeeze(1)  # log p_t, (N, d1, ...)
        loss = -_modulating(log_pt, gamma) * log_pt  # eq. 5, (N, d1, ...)
        if isinstance(a, torch.Tensor):
            loss = loss * a[target.long()]
        elif a is not None:
            loss = loss * a
    return reduce(loss, reduction)


def sigmoid_focal_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary (sigmoid) focal loss, one independent binary problem per logit (the paper's form).

    ``p_t = p t + (1 - p)(1 - t)`` with ``p = sigmoid(input)``, ``alpha_t = alpha t + (1 - alpha)(1 - t)``:
    ``FL = alpha_t (1 - p_t)^gamma BCE(input, t)``. ``gamma = 0, alpha = None`` is
    ``F.binary_cross_entropy_with_logits``.

    Args:
        input: logits, any shape.
        target: targets in [0, 1] with ``input``'s shape (float).
        gamma: focusing parameter >= 0.
        alpha: weight of the positive class in [0, 1] (0.25 in the paper), or None for no weighting.
        reduction: "mean", "sum" or "none" (``input``'s shape).
    """
    check_float("input", input, min_ndim=0)
    check_reduction(reduction)
    gamma = _check_gamma(gamma)
    if not isinstance(target, torch.Tensor) or not target.is_floating_point():
        raise TypeError("sigmoid_focal_loss targets must be a floating-point tensor of 0/1 (or soft) labels")
    if target.shape != input.shape:
        raise ValueError(f"target shape {tuple(target.shape)} must equal input shape {tuple(input.shape)}")
    if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"binary focal alpha must be in [0, 1] (or None), got {alpha!r}")
    target = target.to(input.dtype)
    ce = F.binary_cross_entropy_with_logits(input, target, reduction="none")  # -log p_t
    p = torch.sigmoid(input)
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce if gamma == 0.0 else ce * (1 - p_t).clamp_min(0).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * target + (1 - alpha) * (1 - target))
    return reduce(loss, reduction)


class FocalLoss(nn.Module):
    """Multi-class softmax focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017)."""

    alpha_weights: torch.Tensor | None

    def __init__(self, gamma: float = 2.0, alpha: AlphaLike = None, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        self.reduction = check_reduction(reduction)
        self.alpha_scalar: float | None = None
        if alpha is None or (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)):
            if alpha is not None and alpha < 0:
                raise ValueError(f"focal alpha must be >= 0, got {alpha!r}")
            self.alpha_scalar = None if alpha is None else float(alpha)
            self.register_buffer("alpha_weights", None)
        else:
            a = torch.as_tensor(alpha, dtype=torch.get_default_dtype())
            if a.ndim != 1 or bool((a < 0).any()):
                raise ValueError(f"per-class focal alpha must be a 1-D tensor of weights >= 0, got {alpha!r}")
            self.register_buffer("alpha_weights", a)  # moves with .to(device)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha_weights if self.alpha_weights is not None else self.alpha_scalar
        return focal_loss(input, target, self.gamma, alpha, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(6, 4, generator=generator)
        target = torch.randint(0, 4, (6,), generator=generator)
        return LossExample((logits, target), {"gamma": 2.0, "alpha": [0.5, 1.0, 1.0, 2.0]}, (0,), (6,))


class BinaryFocalLoss(nn.Module):
    """Binary sigmoid focal loss alpha_t (1 - p_t)^gamma BCE, per logit (Lin et al. 2017)."""

    def __init__(self, gamma: float = 2.0, alpha: float | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.gamma = _check_gamma(gamma)
        if alpha is not None and not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"binary focal alpha must be in [0, 1] (or None), got {alpha!r}")
        self.alpha = None if alpha is None else float(alpha)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sigmoid_focal_loss(input, target, self.gamma, self.alpha, self.reduction)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={self.alpha}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(5, 3, generator=generator)
        target = (torch.rand(5, 3, generator=generator) > 0.5).float()
        return LossExample((logits, target), {"gamma": 2.0, "alpha": 0.25}, (0,), (5, 3))
