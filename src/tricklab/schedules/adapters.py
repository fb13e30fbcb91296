"""Use any registered schedule outside the trainer, and the linear batch-size scaling rule."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from tricklab.schedules.registry import SCHEDULES


def schedule_fn(name: str | Callable[..., float], total_steps: int, **kw: Any) -> Callable[[int], float]:
    """``t -> factor(t, total_steps, **kw)`` for a registered name (or a schedule function)."""
    fn = SCHEDULES.get(name) if isinstance(name, str) else name
    bound = functools.partial(fn, total_steps=total_steps, **kw)
    bound(0)  # fail here, not at the first optimizer step, on a bad argument
    return lambda step: bound(step)


def to_lr_scheduler(optimizer: torch.optim.Optimizer, name: str | Callable[..., float], total_steps: int,
                    **kw: Any) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that sets lr = initial_lr * factor(t, total_steps, **kw) after ``t`` calls to ``step()``.

    Same convention as the trainer: build it before training (the optimizer then holds factor(0) * lr) and
    call ``scheduler.step()`` after every ``optimizer.step()``. For one-cycle and cyclical schedules the
    optimizer's lr is the maximum lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn(name, total_steps, **kw))


def linear_scaling_lr(base_lr: float, batch_size: int, base_batch_size: int = 256) -> float:
    """The linear scaling rule (Goyal et al. 2017): lr = base_lr * batch_size / base_batch_size.

    When the batch grows k-fold, one step averages k times as many gradients, so k times the lr keeps the
    update per sample the same (their ImageNet rule: 0.1 per 256 images). Pair a large scaled lr with a warm-up.
    """
    if batch_size < 1 or base_batch_size < 1:
        raise ValueError(f"batch sizes must be positive, got {batch_size!r} and {base_batch_size!r}")
    if not base_lr > 0:
        raise ValueError(f"base_lr must be positive, got {base_lr!r}")
    return base_lr * batch_size / base_batch_size


__all__ = ["linear_scaling_lr", "schedule_fn", "to_lr_scheduler"]
