"""Learning-rate schedules as pure functions ``factor(step, total_steps, **kw) -> float``.

The learning rate at optimizer step t (0-based, before the t-th update) is base_lr * factor(t, T).
The ``lr_schedule`` technique (``tricklab.techniques.lr_schedule``) applies one to an optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tricklab.registry import Registry

ScheduleFn = Callable[..., float]
SCHEDULES: Registry[ScheduleFn] = Registry("schedule")


@SCHEDULES.register("constant", summary="factor 1 at every step")
def constant(step: int, total_steps: int) -> float:
    return 1.0


@SCHEDULES.register("cosine", summary="cosine decay from 1 to min_factor over total_steps (Loshchilov and Hutter 2017)")
def cosine(step: int, total_steps: int, min_factor: float = 0.0) -> float:
    t = min(max(step, 0), total_steps) / max(total_steps, 1)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


@SCHEDULES.register("warmup_cosine", summary="linear warm-up over warmup_steps, then cosine decay")
def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 100, min_factor: float = 0.0) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return cosine(step - warmup_steps, max(total_steps - warmup_steps, 1), min_factor)


@SCHEDULES.register("step", summary="multiply by gamma every step_size steps")
def step_decay(step: int, total_steps: int, step_size: int = 1000, gamma: float = 0.1) -> float:
    return gamma ** (step // step_size)


__all__ = ["SCHEDULES", "constant", "cosine", "step_decay", "warmup_cosine"]
