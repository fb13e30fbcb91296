"""Label smoothing (Szegedy et al. 2016): train against (1 - eps) * onehot + eps / C.

The functional core is torch's own ``F.cross_entropy(..., label_smoothing=eps)``; the technique replaces the
task's loss with it at the ``loss`` event. Soft targets (from a mixer) are smoothed the same way by torch.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class LabelSmoothing(Technique):
    """Cross-entropy against smoothed targets: (1 - eps) on the true class, eps spread over all classes."""

    name: ClassVar[str] = "label_smoothing"
    reads = frozenset({"batch.outputs", "batch.targets"})
    writes = frozenset({"loss_fn"})  # replaces the task loss: runs before techniques that add to it

    def __init__(self, eps: float = 0.1) -> None:
        if not 0.0 <= eps < 1.0:
            raise ValueError(f"label_smoothing eps must be in [0, 1), got {eps!r}")
        self.eps = float(eps)

    def on_loss(self, state: TrainState) -> None:
        outputs, targets = state.outputs, state.targets
        if outputs.dim() == 3 and targets.dim() == 2 and not targets.is_floating_point():
            # per-token outputs (B, T, V) against (B, T) ids, -100 where nothing is predicted
            outputs, targets = outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
        state.loss = F.cross_entropy(outputs, targets, label_smoothing=self.eps, ignore_index=-100)
