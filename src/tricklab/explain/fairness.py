"""Fairness audit of a classifier's predictions against a sensitive (group) attribute.

For each group ``g`` of the attribute ``A`` (binary task, ``positive`` the favourable label):

* accuracy ``P(Yhat = Y | A = g)``; selection rate ``P(Yhat = positive | A = g)``;
* true-positive rate ``TPR_g = P(Yhat = pos | Y = pos, A = g)`` and false-positive rate
  ``FPR_g = P(Yhat = pos | Y != pos, A = g)``.

Disparities (Hardt, Price & Srebro 2016; the definitions fairlearn uses, ``method="between_groups"``):

* demographic-parity difference ``max_g SR_g - min_g SR_g`` (0 when every group is selected at one rate);
* equalized-odds difference ``max(max_g TPR_g - min_g TPR_g, max_g FPR_g - min_g FPR_g)``;
* and the ratios ``min / max`` of the same rates (1 is parity).

A rate with an empty denominator (a group without positives, say) is NaN, and a difference over it is NaN: the
audit says it cannot tell rather than invent a number. :data:`FAIRNESS_METRICS` declares the numbers for the lab.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tricklab.errors import UserError
from tricklab.explain.faithfulness import MetricSpec

__all__ = ["group_rates", "demographic_parity_difference", "equalized_odds_difference", "fairness_report",
           "FAIRNESS_METRICS"]

FAIRNESS_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "Test accuracy", True),
    MetricSpec("demographic_parity_difference", "Demographic-parity difference (selection-rate gap)", False),
    MetricSpec("equalized_odds_difference", "Equalized-odds difference (max of TPR and FPR gaps)", False),
    MetricSpec("worst_group_accuracy", "Worst-group accuracy", True),
)


def _as_long(t: Any, name: str) -> Tensor:
    t = torch.as_tensor(t).detach().cpu()
    if t.dim() != 1:
        raise UserError(f"fairness: {name} must be one value per example (1-D), got shape {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        if not torch.equal(t, t.round()):
            raise UserError(f"fairness: {name} must hold integer labels or group ids, got fractional values")
    return t.long()


def _check(y_true: Any, y_pred: Any, groups: Any) -> tuple[Tensor, Tensor, Tensor]:
    yt, yp, g = _as_long(y_true, "y_true"), _as_long(y_pred, "y_pred"), _as_long(groups, "groups")
    if not (yt.shape == yp.shape == g.shape):
        raise UserError(f"fairness: y_true, y_pred and groups need one entry per example, got {tuple(yt.shape)}, "
                        f"{tuple(yp.shape)} and {tuple(g.shape)}")
    if yt.numel() == 0:
        raise UserError("fairness: no examples")
    return yt, yp, g


def _rate(num: Tensor, den: Tensor) -> float:
    n, d = int(num.sum()), int(den.sum())
    return n / d if d else float("nan")


def group_rates(y_true: Any, y_pred: Any, groups: Any, positive: int = 1) -> dict[int, dict[str, float]]:
    """Per group id: ``count``, ``accuracy``, ``selection_rate``, ``tpr``, ``fpr`` (rates as floats, NaN when a
    denominator is empty)."""
    yt, yp, g = _check(y_true, y_pred, groups)
    out: dict[int, dict[str, float]] = {}
    for gid in sorted(set(g.tolist())):
        m = g == gid
        t, p = yt[m], yp[m]
        pos, sel = t == positive, p == positive
        out[int(gid)] = {
            "count": float(m.sum()),
            "accuracy": _rate(t == p, torch.ones_like(t, dtype=torch.bool)),
            "selection_rate": _rate(sel, torch.ones_like(sel)),
            "tpr": _rate(sel & pos, pos),
            "fpr": _rate(sel & ~pos, ~pos),
        }
    return out


def _gap(values: list[float]) -> float:
    if any(math.isnan(v) for v in values):
        return float("nan")
    return max(values) - min(values)


def _ratio(values: list[float]) -> float:
    if any(math.isnan(v) for v in values) or max(values) == 0:
        return float("nan")
    return min(values) / max(values)


def _max(a: float, b: float) -> float:
    return float("nan") if math.isnan(a) or math.isnan(b) else max(a, b)


def demographic_parity_difference(y_pred: Any, groups: Any, positive: int = 1) -> float:
    """``max_g P(Yhat = pos | g) - min_g P(Yhat = pos | g)``."""
    rates = group_rates(y_pred, y_pred, groups, positive)
    return _gap([r["selection_rate"] for r in rates.values()])


def equalized_odds_difference(y_true: Any, y_pred: Any, groups: Any, positive: int = 1) -> float:
    """``max(TPR gap, FPR gap)`` over the groups."""
    rates = group_rates(y_true, y_pred, groups, positive)
    return _max(_gap([r["tpr"] for r in rates.values()]), _gap([r["fpr"] for r in rates.values()]))


def fairness_report(y_true: Any, y_pred: Any, groups: Any, positive: int = 1) -> dict[str, Any]:
    """Overall accuracy and selection rate, the per-group table and every disparity, as a JSON-able dict."""
    yt, yp, g = _check(y_true, y_pred, groups)
    by_group = group_rates(yt, yp, g, positive)
    sel = [r["selection_rate"] for r in by_group.values()]
    tpr = [r["tpr"] for r in by_group.values()]
    fpr = [r["fpr"] for r in by_group.values()]
    acc = [r["accuracy"] for r in by_group.values()]
    tpr_gap, fpr_gap = _gap(tpr), _gap(fpr)
    return {
        "accuracy": float((yt == yp).double().mean()),
        "selection_rate": float((yp == positive).double().mean()),
        "by_group": {str(k): v for k, v in by_group.items()},
        "demographic_parity_difference": _gap(sel),
        "demographic_parity_ratio": _ratio(sel),
        "tpr_difference": tpr_gap,
        "fpr_difference": fpr_gap,
        "equalized_odds_difference": _max(tpr_gap, fpr_gap),
        "equalized_odds_ratio": -_max(-_ratio(tpr), -_ratio(fpr)),
        "worst_group_accuracy": min(acc),
        "positive": positive,
    }
