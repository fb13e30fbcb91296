"""Bootstrapping technique for noisy labels (Reed et al. 2015): train against beta * y + (1 - beta) * prediction.

The functional core is :func:`tricklab.losses.bootstrap_loss` (soft: the prediction is ``softmax(z)``, with the
gradient flowing through it as in the paper's entropy-regularisation reading; hard: ``onehot(argmax z)``).
At the ``loss`` event the technique recomputes the loss from ``state.outputs`` and ``state.targets`` (class
indices, or soft targets from a mixer).
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.losses.bootstrapping import DEFAULT_BETA, bootstrap_loss
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class BootstrapLoss(Technique):
    """Bootstrapped cross-entropy for noisy labels, soft or hard (Reed et al. 2015)."""

    name: ClassVar[str] = "bootstrap_loss"
    reads = frozenset({"batch.outputs", "batch.targets"})
    writes = frozenset({"loss_fn"})  # replaces the task loss: runs before techniques that add to it

    def __init__(self, beta: float | None = None, mode: str = "soft") -> None:
        if mode not in DEFAULT_BETA:
            raise ValueError(f"bootstrap_loss mode must be 'soft' or 'hard', got {mode!r}")
        if beta is None:
            beta = DEFAULT_BETA[mode]  # the paper's values: 0.95 soft, 0.8 hard
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"bootstrap_loss beta (weight of the given labels) must be in [0, 1], got {beta!r}")
        self.beta = float(beta)
        self.mode = mode

    def on_loss(self, state: TrainState) -> None:
        state.loss = bootstrap_loss(state.outputs, state.targets, self.beta, self.mode)

    def __repr__(self) -> str:
        return f"BootstrapLoss(beta={self.beta}, mode={self.mode!r})"
