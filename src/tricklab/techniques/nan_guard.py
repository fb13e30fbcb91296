"""NaN/inf guard: skip an optimizer step whose loss or gradients are not finite; stop after K in a row.

One bad batch (an overflow, a log of zero) should not poison the weights; many in a row mean the run has
diverged, and continuing only burns compute, so the guard stops with a message that says what to try.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tricklab.errors import TrainingError
from tricklab.techniques.mixed_precision import grads_are_finite
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class NanGuard(Technique):
    """Skip steps with non-finite loss or gradients; raise after ``max_consecutive`` such steps in a row."""

    name: ClassVar[str] = "nan_guard"
    # checks the final gradients (after every gradient stage); reads the skip flag so an overflow the loss
    # scaler already handled is not counted (the scaler, a pure writer of the flag, runs first)
    reads = frozenset({"loss", "grads", "skip_step"})
    writes = frozenset({"skip_step", "counters"})

    def __init__(self, max_consecutive: int = 5) -> None:
        if not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f"nan_guard max_consecutive must be a positive integer, got {max_consecutive!r}")
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.total = 0

    def on_after_backward(self, state: TrainState) -> None:
        if state.skip_step:
            return  # the loss scaler already skipped this step for an expected fp16 overflow
        loss_ok = state.loss is None or bool(torch.isfinite(state.loss.detach()).all())
        if loss_ok and grads_are_finite(state.grads()):
            self.consecutive = 0
            return
        state.skip_step = True
        self.consecutive += 1
        self.total += 1
        state.counters["nonfinite_steps"] = self.total
        if self.consecutive >= self.max_consecutive:
            where = f"; the metric log is in {state.run_dir}" if state.run_dir else ""
            last = float(state.loss.detach()) if state.loss is not None else "n/a"
            raise TrainingError(
                f"training diverged: {self.consecutive} optimizer steps in a row (up to step {state.step + 1}) "
                f"had a non-finite loss or gradients (last loss: {last}). "
                f"Lower the learning rate, add gradient clipping, or check the inputs for NaN{where}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive, self.total = int(state["consecutive"]), int(state["total"])
