"""Linear DropBlock schedule: raise every DropBlock's drop_prob from ``start`` to its target over training.

Ghiasi, Lin & Le (2018, NeurIPS, sec. 3 "Scheduled DropBlock") found that a fixed drop rate from the first step
hurts learning, and that increasing it linearly from 0 to the target value over training works better and is
more robust to the choice of the target. At optimizer step t of T:

    drop_prob(t) = start + (target - start) * min(1, t / T)

The target of each :class:`~tricklab.layers.dropout.DropBlock` is the ``drop_prob`` it was built with (read at
``fit_start``), or ``target`` for all of them when given.

Slot: the schedule changes a module's configuration - how its forward computes - and nothing else: not the
weights (``params``), gradients, batch or learning rate. Of the trainer's slots, ``model.structure`` is the one
for that; declaring ``params`` would claim it edits weight values and would order it before every reader of
``params`` (EMA, SWA) for no reason. ``model.structure`` is not exclusive, so it composes with everything.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

from torch import nn

from tricklab.layers.dropout import DropBlock
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["DropBlockSchedule", "find_drop_blocks", "scheduled_drop_prob"]


def scheduled_drop_prob(step: int, total_steps: int, start: float, target: float) -> float:
    """drop_prob at optimizer step ``step``: linear from ``start`` (step 0) to ``target`` (step >= total_steps)."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step!r}")
    return start + (target - start) * min(1.0, step / total_steps)


def find_drop_blocks(model: nn.Module) -> dict[str, DropBlock]:
    """Every DropBlock in ``model`` by qualified module name, in ``named_modules`` order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, DropBlock)}


def _check_prob(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropblock_schedule {name} must be a drop probability in [0, 1), got {value!r}")
    return float(value)


@register_technique
class DropBlockSchedule(Technique):
    """Linearly increase the drop_prob of every DropBlock from ``start`` to its target (Ghiasi et al. 2018).

    Args:
        start: drop_prob at step 0 (the paper starts from 0, i.e. keep_prob 1).
        steps: optimizer steps over which to reach the target; by default the whole run (``max_steps``, or
            ``max_epochs`` x batches per epoch / accumulation steps).
        target: one target for every DropBlock; by default each keeps the drop_prob it was built with.
    """

    name: ClassVar[str] = "dropblock_schedule"
    # It also reads accum_steps, but only at batch_start (to resolve the run length), after every fit_start
    # handler has run: declaring it would order it after the owner at fit_start, where it does not read it.
    writes = frozenset({"model.structure"})

    def __init__(self, start: float = 0.0, steps: int | None = None, target: float | None = None) -> None:
        self.start = _check_prob("start", start)
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"dropblock_schedule steps must be a positive int (or None for the whole run), "
                             f"got {steps!r}")
        self.steps = steps
        self.target = None if target is None else _check_prob("target", target)
        self.total_steps: int | None = steps
        self.targets: dict[str, float] = {}
        self._captured = False

    def on_fit_start(self, state: TrainState) -> None:
        blocks = find_drop_blocks(state.raw_model)
        if not blocks:
            warnings.warn("dropblock_schedule: the model has no DropBlock module, so the schedule does nothing; "
                          "build the model with DropBlock layers (e.g. drop_block=0.1)", stacklevel=2)
        if not self._captured:
            # the targets are the rates the model was built with; read once, so a second fit on the same
            # (already scheduled) model does not take a partly raised rate as its target
            self.targets = {n: (self.target if self.target is not None else m.drop_prob) for n, m in blocks.items()}
            self._captured = True
        # the run length is resolved at the first batch, after every fit_start handler has run (gradient
        # accumulation sets state.accum_steps in its own fit_start)

    @staticmethod
    def _run_length(state: TrainState) -> int:
        steps = state.planned_steps()
        if steps is not None:
            return max(1, steps)
        raise ValueError("dropblock_schedule needs steps= when the budget is wall-clock seconds (the run length "
                         "is unknown in steps)")

    def _apply(self, state: TrainState) -> None:
        blocks = find_drop_blocks(state.raw_model)
        if self.total_steps is None:
            self.total_steps = self._run_length(state)
        for name, target in self.targets.items():
            if name not in blocks:
                raise ValueError(f"dropblock_schedule: the model has no DropBlock named {name!r} (the state was "
                                 f"saved for another model); DropBlocks here: {sorted(blocks)}")
            blocks[name].drop_prob = scheduled_drop_prob(state.step, self.total_steps, self.start, target)

    def on_batch_start(self, state: TrainState) -> None:
        # state.step counts finished optimizer steps, so every micro-batch of one step sees the same rate
        self._apply(state)

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "total_steps": self.total_steps, "targets": dict(self.targets)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = float(state["start"])
        self.total_steps = None if state["total_steps"] is None else int(state["total_steps"])
        self.targets = {str(k): float(v) for k, v in state["targets"].items()}
        self._captured = True

    def __repr__(self) -> str:
        return f"DropBlockSchedule(start={self.start}, steps={self.steps}, target={self.target})"
