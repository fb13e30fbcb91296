"""Gradient accumulation: sum gradients over k micro-batches, then take one optimizer step.

With a mean-reduced loss, backward on loss/k for each of k micro-batches of size b gives the gradient of the
mean loss over the k*b samples, the same as one batch of k*b (up to float summation order). The trainer
divides the loss by ``state.accum_steps`` and fires ``after_backward`` only on the last micro-batch.
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class GradAccumulation(Technique):
    """Take one optimizer step every ``steps`` micro-batches (effective batch = steps x batch size)."""

    name: ClassVar[str] = "grad_accumulation"
    writes = frozenset({"accum_steps"})  # exclusive: a second owner of the count is refused

    def __init__(self, steps: int = 2) -> None:
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"grad_accumulation steps must be a positive integer, got {steps!r}")
        self.steps = steps

    def on_fit_start(self, state: TrainState) -> None:
        state.accum_steps = self.steps
