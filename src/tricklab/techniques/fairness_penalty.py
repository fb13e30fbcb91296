"""Fairness constraint as a loss penalty: demographic parity or equalized odds (in-processing).

With ``p_i = softmax(z_i)[positive]`` the model's probability of the favourable label and ``G`` the groups
present in the batch, the penalties are the soft (differentiable) versions of the audit's disparities
(:mod:`tricklab.explain.fairness`), computed on the batch:

* demographic parity (Zemel et al. 2013; the "mean difference" of Calders & Verwer 2010):
  ``DP = max_g mean_{i in g} p_i - min_g mean_{i in g} p_i``;
* equalized odds (Hardt et al. 2016, as a penalty in the style of Zafar et al. 2017):
  ``EO = sum_{y in {0, 1}} (max_g mean_{i in g, Y_i = y} p_i - min_g mean_{i in g, Y_i = y} p_i)``,
  the soft TPR gap plus the soft FPR gap (an upper bound of their maximum, which the audit reports).

The loss becomes ``L_task + weight * penalty``. A group (or a group-label cell for EO) absent from the batch is
left out; with fewer than two groups present the penalty is 0 for that batch, so batches must be large enough
to hold every group (the penalty's noise falls as ``1 / sqrt(batch per group)``).

The group id is read from the input column ``group_column`` (the fairness data sets put it last, see
``tricklab.data.datasets.fairness``). Targets must be class indices (not a mixer's soft targets).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from tricklab.train.state import TrainState
from tricklab.techniques.registry import register_technique
from tricklab.train.technique import Technique

__all__ = ["FairnessPenalty", "demographic_parity_penalty", "equalized_odds_penalty", "FAIRNESS_KINDS"]

FAIRNESS_KINDS = ("demographic_parity", "equalized_odds")


def _group_means(p: Tensor, groups: Tensor, keep: Tensor | None = None) -> Tensor:
    """Mean of ``p`` per group id present (among the rows in ``keep``): ``(#groups present,)``."""
    if keep is not None:
        p, groups = p[keep], groups[keep]
    ids, inverse = torch.unique(groups, return_inverse=True)
    sums = p.new_zeros(ids.shape[0]).index_add(0, inverse, p)
    counts = p.new_zeros(ids.shape[0]).index_add(0, inverse, torch.ones_like(p))
    return sums / counts


def _gap(means: Tensor) -> Tensor:
    return means.max() - means.min() if means.numel() >= 2 else means.new_zeros(())


def demographic_parity_penalty(probs: Tensor, groups: Tensor) -> Tensor:
    """Soft selection-rate gap ``max_g mean p - min_g mean p`` (a scalar with gradient)."""
    return _gap(_group_means(probs, groups.long()))


def equalized_odds_penalty(probs: Tensor, targets: Tensor, groups: Tensor, positive: int = 1) -> Tensor:
    """Soft TPR gap + soft FPR gap over the groups (a scalar with gradient)."""
    pos = targets == positive
    groups = groups.long()
    return _gap(_group_means(probs, groups, pos)) + _gap(_group_means(probs, groups, ~pos))


@register_technique
class FairnessPenalty(Technique):
    """Adds ``weight *`` a demographic-parity or equalized-odds gap of the batch to the loss."""

    name: ClassVar[str] = "fairness_penalty"
    reads = frozenset({"batch.inputs", "batch.targets", "batch.outputs"})
    # adds a term to the loss: the data flow orders it after the techniques that replace the loss (loss_fn)
    writes = frozenset({"loss"})

    def __init__(self, weight: float = 1.0, kind: str = "demographic_parity", group_column: int = -1,
                 positive: int = 1) -> None:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ValueError(f"fairness_penalty weight must be a number >= 0, got {weight!r}")
        if kind not in FAIRNESS_KINDS:
            raise ValueError(f"fairness_penalty kind must be one of {', '.join(FAIRNESS_KINDS)}, got {kind!r}")
        if isinstance(group_column, bool) or not isinstance(group_column, int):
            raise TypeError(f"fairness_penalty group_column must be an int (input column of the group id), "
                            f"got {group_column!r}")
        self.weight, self.kind, self.group_column, self.positive = float(weight), kind, group_column, int(positive)

    def on_loss(self, state: TrainState) -> None:
        if not self.weight:
            return
        x, y, z = state.inputs, state.targets, state.outputs
        if not isinstance(x, Tensor) or x.dim() != 2:
            raise ValueError(f"fairness_penalty needs tabular inputs (B, features) holding the group id in column "
                             f"{self.group_column}, got {type(x).__name__} {tuple(getattr(x, 'shape', ()))}")
        if y.dim() != 1 or y.dtype.is_floating_point:
            raise ValueError("fairness_penalty needs class-index targets; it cannot follow a target mixer")
        groups = x[:, self.group_column].round().long()
        probs = z.float().softmax(1)[:, self.positive]
        if self.kind == "demographic_parity":
            pen = demographic_parity_penalty(probs, groups)
        else:
            pen = equalized_odds_penalty(probs, y, groups, self.positive)
        state.loss = state.loss + (self.weight * pen).to(state.loss.dtype)

    def __repr__(self) -> str:
        return (f"FairnessPenalty(weight={self.weight}, kind={self.kind!r}, group_column={self.group_column}, "
                f"positive={self.positive})")
