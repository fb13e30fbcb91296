"""Binary classification metrics: the positive class is class 1 of a two-logit model.

Beside everything :func:`tricklab.evaluate.classification_metrics` reports (accuracy, macro F1 over both
classes, NLL, ECE, Brier, per-class F1), a binary problem is judged on the positive class: its precision,
recall and F1, and the area under the ROC curve of the positive-class score.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tricklab.errors import UserError
from tricklab.evaluate.metrics import _prf_from_confusion, classification_metrics

__all__ = ["binary_metrics", "roc_auc"]


def roc_auc(scores: Tensor, targets: Tensor) -> float | None:
    """Area under the ROC curve of ``scores`` (higher = more positive) for 0/1 ``targets``.

    Computed as the Mann-Whitney statistic ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with
    ``R_pos`` the sum of the positives' ranks (ties get their average rank), which equals the trapezoidal
    area of scikit-learn's ``roc_auc_score``. None when only one class is present (the curve is undefined).
    """
    s = scores.detach().to(torch.float64).cpu().reshape(-1)
    y = targets.detach().cpu().reshape(-1)
    if s.shape != y.shape:
        raise UserError(f"roc_auc: {s.numel()} scores for {y.numel()} targets")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos + n_neg != y.numel():
        raise UserError("roc_auc: targets must be 0 or 1")
    if n_pos == 0 or n_neg == 0:
        return None
    order = torch.argsort(s, stable=True)
    sorted_s = s[order]
    ranks = torch.empty_like(s)
    # average rank of each run of tied scores (ranks start at 1)
    _, counts = torch.unique_consecutive(sorted_s, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2
    ranks[order] = torch.repeat_interleave(avg, counts)
    r_pos = float(ranks[y == 1].sum())
    return (r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def binary_metrics(logits: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, Any]:
    """:func:`classification_metrics` of ``(N, 2)`` logits plus the positive class's ``precision``,
    ``recall``, ``f1`` and ``auroc`` (None when the targets hold one class only).

    The positive-class score is ``logit_1 - logit_0``, the log-odds of class 1 (monotone in its probability).
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise UserError(f"binary metrics need (N, 2) logits (one per class), got {shape}")
    out = classification_metrics(logits, targets, 2, n_bins)
    prf = _prf_from_confusion(torch.tensor(out["confusion_matrix"]))
    out.update(precision=prf["precision"][1], recall=prf["recall"][1], f1=prf["f1"][1],
               auroc=roc_auc(logits[:, 1].double() - logits[:, 0].double(), targets))
    return out
