"""Generalized cross-entropy for noisy labels (Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep
Neural Networks with Noisy Labels", NeurIPS 2018, arXiv:1805.07836).

Mean absolute error is robust to label noise but trains slowly; cross-entropy trains fast but fits wrong labels.
The negative Box-Cox transform interpolates between them (paper eq. 6):

    L_q(f(x), y) = (1 - f_y(x)^q) / q,     q in (0, 1]

with ``lim_{q->0} L_q = -log f_y`` (cross-entropy) and ``L_1 = 1 - f_y`` (MAE up to a factor 2). Its gradient is
the cross-entropy gradient weighted by ``f_y^q`` (eq. 7): examples the model finds unlikely, which are often the
mislabelled ones, count less. The paper uses ``q = 0.7``.

The truncated loss (eq. 9) also caps the loss of examples with ``f_y(x) <= k`` at the constant ``L_q(k)`` (zero
gradient): here per batch, without the paper's alternating pruning of the weights every few epochs.

Targets are class indices, or probabilities (soft targets from a mixer), for which the loss is
``sum_c y_c L_q(f_c)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.losses._common import LossExample, check_float, check_reduction, reduce, target_probs

__all__ = ["GeneralizedCrossEntropy", "generalized_cross_entropy"]


def _check_q(q: float) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
        raise ValueError(f"generalized cross-entropy q must be in (0, 1] (q -> 0 is cross-entropy, 1 is MAE), "
                         f"got {q!r}")
    return float(q)


def _check_k(k: float | None) -> float | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 <= k < 1.0:
        raise ValueError(f"truncation threshold k must be in [0, 1) or None, got {k!r}")
    return float(k)


def generalized_cross_entropy(input: Tensor, target: Tensor, q: float = 0.7, k: float | None = None,
                              reduction: str = "mean") -> Tensor:
    """``(1 - p_y^q) / q`` per example from logits ``input`` (N, C[, d1, ...]) and targets (class indices, or
    probabilities shaped like the logits). With ``k``, examples with ``p_y <= k`` get the constant
    ``(1 - k^q) / q`` (truncated L_q, eq. 9). ``reduction``: "mean", "sum" or "none" (N[, d1, ...])."""
    q, k = _check_q(q), _check_k(k)
    check_float("input", input, min_ndim=2)
    check_reduction(reduction)
    y = target_probs(target, input)  # (N, C, ...)
    # p^q = exp(q log p): stable for tiny p, where p itself would underflow
    lq = (1.0 - torch.exp(q * F.log_softmax(input, dim=1))) / q  # L_q of every class
    if k is not None:
        p = torch.softmax(input, dim=1)
        lq = torch.where(p > k, lq, torch.full_like(lq, (1.0 - k**q) / q))
    return reduce((y * lq).sum(1), reduction)


class GeneralizedCrossEntropy(nn.Module):
    """Generalized cross-entropy L_q = (1 - p_y^q) / q for noisy labels (Zhang & Sabuncu 2018)."""

    def __init__(self, q: float = 0.7, k: float | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.q, self.k = _check_q(q), _check_k(k)
        self.reduction = check_reduction(reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return generalized_cross_entropy(input, target, self.q, self.k, self.reduction)

    def extra_repr(self) -> str:
        return f"q={self.q}, k={self.k}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(6, 4, generator=generator)
        target = torch.randint(0, 4, (6,), generator=generator)
        return LossExample((logits, target), {"q": 0.7}, (0,), (6,))
