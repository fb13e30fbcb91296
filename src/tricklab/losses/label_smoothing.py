"""Label-smoothed cross-entropy (Szegedy, Vanhoucke, Ioffe, Shlens & Wojna, "Rethinking the Inception
Architecture for Computer Vision", CVPR 2016, section 7).

One-hot targets are reached only by infinite logit gaps, so the model grows over-confident. Training against
``q = (1 - eps) onehot(y) + eps / C`` bounds the gap. Torch implements exactly this, for class indices and for
soft (probability) targets ``p`` (smoothed to ``(1 - eps) p + eps / C``), so this module exposes
``F.cross_entropy(..., label_smoothing=eps)`` and ``nn.CrossEntropyLoss`` rather than re-implementing them:

    loss = -sum_c q_c log softmax(z)_c
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.losses._common import LossExample, check_float, check_reduction


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"label smoothing eps must be in [0, 1], got {eps!r}")
    return float(eps)


def label_smoothing_cross_entropy(
    input: torch.Tensor, target: torch.Tensor, eps: float = 0.1, reduction: str = "mean"
) -> torch.Tensor:
    """``F.cross_entropy(input, target, label_smoothing=eps)``: target is class indices (N, ...) or
    probabilities shaped like ``input`` (N, C, ...)."""
    check_float("input", input, min_ndim=1)
    check_reduction(reduction)
    return F.cross_entropy(input, target, label_smoothing=_check_eps(eps), reduction=reduction)


class LabelSmoothingCrossEntropy(nn.CrossEntropyLoss):
    """Cross-entropy against (1 - eps) onehot + eps / C: torch's nn.CrossEntropyLoss(label_smoothing=eps)."""

    def __init__(self, eps: float = 0.1, reduction: str = "mean", weight: torch.Tensor | None = None,
                 ignore_index: int = -100) -> None:
        super().__init__(weight=weight, ignore_index=ignore_index, reduction=check_reduction(reduction),
                         label_smoothing=_check_eps(eps))

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(6, 4, generator=generator)
        target = torch.randint(0, 4, (6,), generator=generator)
        return LossExample((logits, target), {"eps": 0.1}, (0,), (6,))
