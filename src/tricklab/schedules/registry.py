"""The schedule registry, kept apart from ``__init__`` so the schedule modules can register into it."""

from __future__ import annotations

from collections.abc import Callable

from tricklab.registry import Registry

ScheduleFn = Callable[..., float]
SCHEDULES: Registry[ScheduleFn] = Registry("schedule")

__all__ = ["SCHEDULES", "ScheduleFn"]
