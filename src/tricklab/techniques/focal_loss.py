"""Focal loss technique (Lin et al. 2017): replace the task's cross-entropy with -alpha_t (1 - p_t)^gamma log p_t.

The functional core is :func:`tricklab.losses.focal_loss`. At the ``loss`` event the technique recomputes the
loss from ``state.outputs`` (logits, classes on dim 1) and ``state.targets``: class indices, or soft targets
(B, C) from a mixer, for which it uses ``-sum_c t_c alpha_c (1 - p_c)^gamma log p_c`` (the hard form when t is
one-hot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tricklab.losses.focal import focal_loss
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class FocalLossTechnique(Technique):
    """Focal loss -alpha_t (1 - p_t)^gamma log p_t in place of the task's cross-entropy (Lin et al. 2017)."""

    name: ClassVar[str] = "focal_loss"
    reads = frozenset({"batch.outputs", "batch.targets"})
    writes = frozenset({"loss_fn"})  # replaces the task loss: runs before techniques that add to it

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma >= 0:
            raise ValueError(f"focal_loss gamma must be a number >= 0 (0 gives cross-entropy), got {gamma!r}")
        if alpha is not None and not isinstance(alpha, (int, float)):
            if not isinstance(alpha, Sequence) or not all(isinstance(a, (int, float)) for a in alpha):
                raise TypeError(
                    f"focal_loss alpha must be None, a number or a list of per-class numbers, got {alpha!r}"
                )
            alpha = [float(a) for a in alpha]
            if any(a < 0 for a in alpha):
                raise ValueError(f"focal_loss alpha weights must be >= 0, got {alpha}")
        elif alpha is not None and alpha < 0:
            raise ValueError(f"focal_loss alpha must be >= 0, got {alpha!r}")
        self.gamma = float(gamma)
        self.alpha = alpha

    def on_loss(self, state: TrainState) -> None:
        state.loss = focal_loss(state.outputs, state.targets, self.gamma, self.alpha)

    def __repr__(self) -> str:
        return f"FocalLossTechnique(gamma={self.gamma}, alpha={self.alpha})"
