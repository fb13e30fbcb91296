"""Faithfulness of an attribution by measurement: deletion and insertion curves (Petsiuk, Das & Saenko 2018,
"RISE", sec. 4.1) and the areas under them.

Features are ranked by their attribution, most positive first (``order="signed"``; ``"absolute"`` ranks by
magnitude). Then, over ``steps`` equal fractions ``f = 0, 1/steps, ..., 1`` of the features:

* deletion: the top ``ceil(f M)`` features of the input are replaced by the reference (``baseline``, zeros by
  default) and the explained class's softmax probability is recorded; a faithful attribution makes it fall fast,
  so a *lower* area under the deletion curve is better;
* insertion: starting from the reference, the top ``ceil(f M)`` features take the input's values; a faithful
  attribution makes the probability rise fast, so a *higher* area is better.

Areas are trapezoid rules over ``f`` in [0, 1]. Features are single elements or groups (``feature_mask``, as in
:mod:`tricklab.explain.shapley`), a group's attribution being the sum of its elements'. Ties are broken by the
feature index (stable sort), so a constant attribution deletes features in index order. A Grad-CAM map is
upsampled to the input first (:func:`~tricklab.explain.gradcam.upsample_to_input`).

:data:`FAITHFULNESS_METRICS` declares the numbers for the lab (``deletion_auc``: lower is better;
``insertion_auc``: higher is better; ``insertion_minus_deletion``: higher is better).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tricklab.errors import UserError
from tricklab.explain._common import (
    TargetLike,
    broadcast_baseline,
    check_batch_size,
    check_inputs,
    check_model,
    check_positive_int,
    eval_mode,
    forward_scores,
    resolve_target,
)
from tricklab.explain.shapley import feature_groups
from tricklab.evaluate.declared import MetricSpec

__all__ = ["deletion_curve", "insertion_curve", "curve_area", "faithfulness_scores", "MetricSpec",
           "FAITHFULNESS_METRICS", "feature_ranking"]




FAITHFULNESS_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("deletion_auc", "Deletion AUC (probability of the class as top features are removed)", False),
    MetricSpec("insertion_auc", "Insertion AUC (probability of the class as top features are inserted)", True),
    MetricSpec("insertion_minus_deletion", "Insertion AUC - deletion AUC", True),
)


def feature_ranking(attributions: Tensor, mask: Tensor, m: int, order: str) -> Tensor:
    """``(B, M)`` feature ids, most important first (group attribution = sum over its elements)."""
    b = attributions.shape[0]
    per_feature = torch.zeros(b, m, dtype=torch.float64, device=attributions.device)
    per_feature.index_add_(1, mask.reshape(-1), attributions.reshape(b, -1).double())
    if order == "absolute":
        per_feature = per_feature.abs()
    elif order != "signed":
        raise UserError(f"faithfulness: order must be 'signed' or 'absolute', got {order!r}")
    return torch.sort(per_feature, dim=1, descending=True, stable=True).indices


def _curve(model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetLike, baseline: Tensor | float | None,
           steps: int, feature_mask: Tensor | None, order: str, batch_size: int | None, insertion: bool,
           method: str) -> Tensor:
    model, x, bs = check_model(model, method), check_inputs(inputs, method), check_batch_size(batch_size, method)
    n = check_positive_int(steps, "steps", method)
    if not isinstance(attributions, Tensor) or attributions.shape != x.shape:
        got = tuple(attributions.shape) if isinstance(attributions, Tensor) else type(attributions).__name__
        raise UserError(f"{method}: attributions must be shaped like the inputs {tuple(x.shape)}, got {got}; "
                        f"upsample a Grad-CAM map with upsample_to_input first")
    ref = broadcast_baseline(baseline, x, method, "baseline")
    mask, m = feature_groups(x, feature_mask, method)
    rank = feature_ranking(attributions.detach().to(x.device), mask, m, order)  # (B, M)
    b, shape = x.shape[0], x.shape[1:]
    # position of each feature in the ranking: feature j is switched at step k when pos[j] < ceil(k M / n)
    pos = torch.empty_like(rank)
    pos.scatter_(1, rank, torch.arange(m, device=rank.device).expand(b, m))
    counts = torch.tensor([math.ceil(k * m / n) for k in range(n + 1)], device=x.device)  # (n+1,)
    switched = pos.unsqueeze(1) < counts.view(1, -1, 1)  # (B, n+1, M): feature already deleted / inserted
    elem = switched[:, :, mask.reshape(-1)].reshape(b, n + 1, *shape)
    src, dst = (ref, x) if insertion else (x, ref)
    z = torch.where(elem, dst.unsqueeze(1), src.unsqueeze(1)).reshape(b * (n + 1), *shape)
    with eval_mode(model):
        t = resolve_target(model, x, target, method, bs)
        p = forward_scores(model, z, t.repeat_interleave(n + 1), method, bs, probabilities=True)
    return p.reshape(b, n + 1)


def deletion_curve(model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetLike = None, *,
                   baseline: Tensor | float | None = None, steps: int = 20, feature_mask: Tensor | None = None,
                   order: str = "signed", batch_size: int | None = None) -> Tensor:
    """``(B, steps + 1)`` probability of the explained class as the top fractions of features are removed."""
    return _curve(model, inputs, attributions, target, baseline, steps, feature_mask, order, batch_size, False,
                  "deletion_curve")


def insertion_curve(model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetLike = None, *,
                    baseline: Tensor | float | None = None, steps: int = 20, feature_mask: Tensor | None = None,
                    order: str = "signed", batch_size: int | None = None) -> Tensor:
    """``(B, steps + 1)`` probability of the explained class as the top fractions of features are inserted into
    the reference."""
    return _curve(model, inputs, attributions, target, baseline, steps, feature_mask, order, batch_size, True,
                  "insertion_curve")


def curve_area(curve: Tensor) -> Tensor:
    """Trapezoid area under ``(B, K)`` curves sampled at ``K`` equal steps over [0, 1] (``(B,)``)."""
    if curve.dim() != 2 or curve.shape[1] < 2:
        raise UserError(f"curve_area: expected curves (B, K) with K >= 2 points, got {tuple(curve.shape)}")
    k = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2.0 * k)


def faithfulness_scores(model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetLike = None, *,
                        baseline: Tensor | float | None = None, steps: int = 20, feature_mask: Tensor | None = None,
                        order: str = "signed", batch_size: int | None = None) -> dict[str, Tensor]:
    """Per-example ``deletion_auc``, ``insertion_auc`` and their difference (each ``(B,)``), plus the curves."""
    kw = dict(baseline=baseline, steps=steps, feature_mask=feature_mask, order=order, batch_size=batch_size)
    dele = deletion_curve(model, inputs, attributions, target, **kw)  # type: ignore[arg-type]
    ins = insertion_curve(model, inputs, attributions, target, **kw)  # type: ignore[arg-type]
    d, i = curve_area(dele), curve_area(ins)
    return {"deletion_auc": d, "insertion_auc": i, "insertion_minus_deletion": i - d, "deletion_curve": dele,
            "insertion_curve": ins}
