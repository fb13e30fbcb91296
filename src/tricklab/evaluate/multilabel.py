"""Multi-label metrics: each example carries any subset of ``C`` labels, as a ``(N, C)`` 0/1 indicator row.

The model gives one logit per label; a label is predicted when ``sigmoid(logit) >= threshold``. Definitions
follow scikit-learn (``zero_division=0``):

* micro F1: F1 of the pooled counts, ``2 sum TP / (2 sum TP + sum FP + sum FN)``;
* macro F1: the unweighted mean over labels of ``2 TP_c / (2 TP_c + FP_c + FN_c)`` (0 for a label never
  present and never predicted, as sklearn's ``f1_score(average="macro", zero_division=0)``);
* subset accuracy: the fraction of examples whose whole predicted label set is exactly right;
* Hamming loss: the fraction of wrong (example, label) decisions;
* BCE: mean binary cross-entropy of the logits, ``F.binary_cross_entropy_with_logits``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.errors import UserError

__all__ = ["multilabel_metrics"]


def _check(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(logits, Tensor) or not isinstance(targets, Tensor):
        raise UserError("multi-label metrics take tensors of logits and 0/1 targets")
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise UserError(f"multi-label: logits and targets must both be (N, C), got {tuple(logits.shape)} and "
                        f"{tuple(targets.shape)}")
    if logits.shape[0] == 0:
        raise UserError("multi-label metrics need at least one sample")
    t = targets.detach().to(torch.float64).cpu()
    if not bool(((t == 0) | (t == 1)).all()):
        raise UserError("multi-label targets must be 0/1 indicators")
    return logits.detach().to(torch.float64).cpu(), t


def multilabel_metrics(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> dict[str, Any]:
    """``micro_f1``, ``macro_f1``, ``subset_accuracy``, ``hamming_loss``, ``bce``, ``micro_precision``,
    ``micro_recall`` and ``per_class_f1`` (one F1 per label, a list) as Python values.

    Args:
        logits: ``(N, C)`` one logit per label.
        targets: ``(N, C)`` 0/1 indicators (float or int).
        threshold: probability at or above which a label is predicted.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise UserError(f"multi-label threshold must be in (0, 1), got {threshold!r}")
    z, t = _check(logits, targets)
    pred = (torch.sigmoid(z) >= threshold).to(torch.float64)
    tp = (pred * t).sum(dim=0)
    fp = (pred * (1 - t)).sum(dim=0)
    fn = ((1 - pred) * t).sum(dim=0)
    den = 2 * tp + fp + fn
    per_f1 = torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(den))
    TP, FP, FN = float(tp.sum()), float(fp.sum()), float(fn.sum())
    return {
        "micro_f1": 2 * TP / (2 * TP + FP + FN) if (2 * TP + FP + FN) > 0 else 0.0,
        "macro_f1": float(per_f1.mean()),
        "micro_precision": TP / (TP + FP) if TP + FP > 0 else 0.0,
        "micro_recall": TP / (TP + FN) if TP + FN > 0 else 0.0,
        "subset_accuracy": float((pred == t).all(dim=1).to(torch.float64).mean()),
        "hamming_loss": float((pred != t).to(torch.float64).mean()),
        "bce": float(F.binary_cross_entropy_with_logits(z, t)),
        "per_class_f1": [float(v) for v in per_f1],
    }
