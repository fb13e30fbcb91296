"""Out-of-distribution detection metrics: AUROC and FPR at 95% TPR of an OOD score.

A score is a per-example number, higher = more likely out of distribution (every score in
:mod:`tricklab.uncertainty.scores` follows this). Given the scores of an in-distribution test set and of a
shifted set:

* **AUROC** = P(s_out > s_in) + P(s_out = s_in) / 2, the Mann-Whitney form of the area under the ROC curve with
  the OOD examples as positives (0.5 = chance, 1 = perfect separation). Computed from average ranks, so ties are
  split as in ``sklearn.metrics.roc_auc_score``.
* **FPR at 95% TPR** (Liang, Li & Srikant 2018, "ODIN", arXiv:1706.02690; Hendrycks & Gimpel 2017): with the
  in-distribution examples as positives, the detector accepts an example as in-distribution when its score is
  <= a threshold; the threshold is the smallest one that accepts at least 95% of the in-distribution set, and
  the FPR is the fraction of the shifted set it also accepts. Lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from tricklab.errors import UserError

__all__ = ["auroc", "fpr_at_tpr", "ood_metrics"]


def _scores(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x)
    t = x.detach().reshape(-1).to("cpu", torch.float64)
    if t.numel() == 0:
        raise UserError(f"{name} is empty: OOD metrics need at least one score on each side")
    if not torch.isfinite(t).all():
        raise UserError(f"{name} holds NaN or inf scores; check the model's outputs before scoring")
    return t


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of ``x`` with tied values given the average of their ranks (as scipy.stats.rankdata)."""
    n = x.numel()
    order = torch.argsort(x, stable=True)
    xs = x[order]
    # group boundaries of equal values in sorted order
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = xs[1:] != xs[:-1]
    group = torch.cumsum(new_group.to(torch.int64), 0) - 1
    starts = torch.nonzero(new_group).reshape(-1)
    ends = torch.cat([starts[1:], torch.tensor([n])])
    avg = (starts + ends + 1).to(torch.float64) / 2.0  # mean of ranks start+1 .. end
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = avg[group]
    return ranks


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve separating ``scores_out`` (positives) from ``scores_in``:

        AUROC = (R_out - n_out (n_out + 1) / 2) / (n_in n_out),

    ``R_out`` the sum of the average ranks of the OOD scores in the pooled sample (Mann-Whitney U / n_in n_out).
    """
    s_in, s_out = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    n_in, n_out = s_in.numel(), s_out.numel()
    ranks = _average_ranks(torch.cat([s_in, s_out]))
    r_out = float(ranks[n_in:].sum())
    return (r_out - n_out * (n_out + 1) / 2.0) / (n_in * n_out)


def fpr_at_tpr(scores_in: Tensor, scores_out: Tensor, tpr: float = 0.95) -> float:
    """Fraction of the shifted set accepted as in-distribution at the smallest threshold that accepts at least
    ``tpr`` of the in-distribution set (accept = score <= threshold)."""
    if not 0.0 < tpr <= 1.0:
        raise UserError(f"tpr must be in (0, 1], got {tpr!r}")
    s_in, s_out = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    n_in = s_in.numel()
    # k = the fewest in-distribution examples to accept: the smallest k with k / n_in >= tpr, compared in float
    # as an ROC curve's tpr is (ceil alone can be one off when tpr * n_in rounds up, e.g. 0.95 * 100)
    k = max(math.ceil(tpr * n_in), 1)
    while k > 1 and (k - 1) / n_in >= tpr:
        k -= 1
    while k / n_in < tpr:
        k += 1
    threshold = torch.sort(s_in).values[k - 1]
    return float((s_out <= threshold).to(torch.float64).mean())


def ood_metrics(scores: Mapping[str, tuple[Tensor, Tensor]], tpr: float = 0.95) -> dict[str, Any]:
    """``{score name: {"auroc", "fpr95"}}`` for ``{score name: (scores_in, scores_out)}``."""
    return {name: {"auroc": auroc(a, b), "fpr95": fpr_at_tpr(a, b, tpr)} for name, (a, b) in scores.items()}
