"""Pseudo-labelling (Lee 2013): unlabelled examples are trained on the class the model itself predicts.

Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep Neural Networks", ICML 2013
workshop, eq. (15)-(16): ``L = (1/n) sum_labelled CE(y, f(x)) + alpha(t) (1/n') sum_unlabelled CE(y', f(x'))``
with ``y'`` the argmax of the network's own output on ``x'`` (recomputed at every update) and the weight ramped
``alpha(t) = 0`` for ``t < T1``, ``alpha_f (t - T1) / (T2 - T1)`` up to ``T2``, ``alpha_f`` after. As asked by
modern practice (and FixMatch's ablation), only pseudo-labels with confidence ``max softmax >= threshold`` count;
the average is over all unlabelled examples of the batch (masked ones add zero), as in FixMatch's eq. (2).

Unlabelled examples are those whose target is ``-100`` (``ignore_index``: the task's cross-entropy skips them),
or, with ``on="all"``, every example of the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.data.low_label import UNLABELLED  # -100, F.cross_entropy's default ignore_index
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["PseudoLabel", "UNLABELLED", "confident_pseudo_labels", "linear_ramp", "pseudo_label_loss",
           "unlabelled_mask"]


def unlabelled_mask(targets: Tensor, on: str) -> Tensor:
    """(B,) bool: the examples the unsupervised term applies to."""
    if on == "all":
        return torch.ones(targets.shape[0], dtype=torch.bool, device=targets.device)
    if targets.ndim != 1 or targets.is_floating_point():
        raise ValueError("semi-supervised techniques need (B,) integer targets with -100 marking unlabelled "
                         f"examples, got {tuple(targets.shape)} {targets.dtype} (a target mixer cannot run with them)")
    return targets == UNLABELLED


def confident_pseudo_labels(logits: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """(hard labels ``argmax p``, mask ``max p >= threshold``) from logits (N, C), without gradient."""
    with torch.no_grad():
        conf, labels = logits.detach().float().softmax(-1).max(-1)
        return labels, conf >= threshold


def pseudo_label_loss(logits: Tensor, threshold: float = 0.95) -> tuple[Tensor, Tensor]:
    """``(1/N) sum_i 1[max p_i >= threshold] CE(argmax p_i, logits_i)`` over N unlabelled logits, and the mask.
    The gradient flows through ``logits`` in the cross-entropy only (the labels are constants)."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0, torch.zeros(0, dtype=torch.bool, device=logits.device)
    labels, mask = confident_pseudo_labels(logits, threshold)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (ce * mask.to(ce.dtype)).mean(), mask


def linear_ramp(step: int, t1: int, t2: int, final: float) -> float:
    """Lee's alpha(t): 0 before ``t1``, linear to ``final`` at ``t2``, then ``final``."""
    if step < t1:
        return 0.0
    if step >= t2:
        return final
    return final * (step - t1) / (t2 - t1)


def _check_common(name: str, weight: float, threshold: float, on: str) -> None:
    if not (isinstance(weight, (int, float)) and weight >= 0):
        raise ValueError(f"{name} weight must be a number >= 0, got {weight!r}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"{name} threshold must be in [0, 1], got {threshold!r}")
    if on not in ("unlabelled", "all"):
        raise ValueError(f"{name} on must be 'unlabelled' (targets == -100) or 'all', got {on!r}")


@register_technique
class PseudoLabel(Technique):
    """Add the cross-entropy of confident unlabelled predictions against their own argmax (Lee 2013)."""

    name: ClassVar[str] = "pseudo_label"
    reads = frozenset({"batch.outputs", "batch.targets"})
    writes = frozenset({"loss"})  # adds a term to whatever task loss is in force

    def __init__(self, weight: float = 1.0, threshold: float = 0.95, ramp_start: int = 0, ramp_end: int = 0,
                 on: str = "unlabelled") -> None:
        _check_common("pseudo_label", weight, threshold, on)
        if not (isinstance(ramp_start, int) and isinstance(ramp_end, int) and 0 <= ramp_start <= ramp_end):
            raise ValueError(f"pseudo_label needs integers 0 <= ramp_start <= ramp_end, got {ramp_start}, {ramp_end}")
        self.weight, self.threshold, self.on = float(weight), float(threshold), on
        self.ramp_start, self.ramp_end = ramp_start, ramp_end

    def on_loss(self, state: TrainState) -> None:
        alpha = linear_ramp(state.step, self.ramp_start, self.ramp_end, self.weight)  # weight from step 0 by default
        if alpha == 0.0:
            return
        mask = unlabelled_mask(state.targets, self.on)
        term, _ = pseudo_label_loss(state.outputs[mask], self.threshold)
        state.loss = state.loss + alpha * term

    def state_dict(self) -> dict[str, Any]:
        return {}  # stateless: the ramp reads state.step
