"""Generalized cross-entropy technique for noisy labels (Zhang & Sabuncu 2018): train with
``L_q = (1 - p_y^q) / q`` instead of cross-entropy.

The functional core is :func:`tricklab.losses.gce.generalized_cross_entropy`; at the ``loss`` event the technique
recomputes the loss from ``state.outputs`` and ``state.targets`` (class indices, or soft targets from a mixer).
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.losses.gce import _check_k, _check_q, generalized_cross_entropy
from tricklab.train.state import TrainState
from tricklab.techniques.registry import register_technique
from tricklab.train.technique import Technique


@register_technique
class GCELoss(Technique):
    """Generalized cross-entropy (1 - p_y^q) / q, optionally truncated at p_y <= k (Zhang & Sabuncu 2018)."""

    name: ClassVar[str] = "gce_loss"
    reads = frozenset({"batch.outputs", "batch.targets"})
    writes = frozenset({"loss_fn"})  # replaces the task loss: runs before techniques that add to it

    def __init__(self, q: float = 0.7, k: float | None = None) -> None:
        self.q, self.k = _check_q(q), _check_k(k)

    def on_loss(self, state: TrainState) -> None:
        state.loss = generalized_cross_entropy(state.outputs, state.targets, self.q, self.k)

    def __repr__(self) -> str:
        return f"GCELoss(q={self.q}, k={self.k})"
