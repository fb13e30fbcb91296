"""The learning-rate schedule owner: sets each group's lr to base_lr * factor(step) before every step.

It writes the exclusive ``lr`` slot, so two schedule owners in one recipe are refused before training.
Any schedule of ``tricklab.schedules.SCHEDULES`` works; for ``one_cycle`` and ``cyclical`` the factor is
relative to the maximum lr, so the optimizer's lr (the base lr) *is* the maximum lr.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

from tricklab.errors import ConfigError
from tricklab.schedules import SCHEDULES
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class LRSchedule(Technique):
    """Own the learning rate: lr = base_lr * schedule(step, total_steps, **args)."""

    name: ClassVar[str] = "lr_schedule"
    reads = frozenset({"lr", "accum_steps"})  # the base lrs, and the run length in optimizer steps
    writes = frozenset({"lr"})

    def __init__(self, schedule: str = "cosine", total_steps: int | None = None, **args: Any) -> None:
        self.schedule_name = schedule
        fn = SCHEDULES.get(schedule)
        self.fn = functools.partial(fn, **args)
        self.args = args
        self.total_steps = total_steps
        self.base_lrs: list[float] = []
        # evaluate once now so a misspelt or out-of-range argument is reported when the recipe is checked,
        # not at the first optimizer step (TypeError: unknown argument; ValueError: bad value)
        try:
            self.fn(0, total_steps if total_steps is not None else 1000)
        except ValueError as e:
            raise ConfigError(f"schedule {schedule!r}: {e}") from e

    def on_fit_start(self, state: TrainState) -> None:
        self.base_lrs = [float(g["lr"]) for g in state.optimizer.param_groups]
        if self.total_steps is None:
            self.total_steps = state.planned_steps()
            if self.total_steps is None:
                raise ValueError("lr_schedule needs total_steps when the budget is wall-clock seconds")
        self._apply(state)

    def _apply(self, state: TrainState) -> None:
        factor = self.fn(state.step, self.total_steps)
        for g, base in zip(state.optimizer.param_groups, self.base_lrs):
            g["lr"] = base * factor

    def on_before_step(self, state: TrainState) -> None:
        self._apply(state)

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs), "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.total_steps = state["total_steps"]
