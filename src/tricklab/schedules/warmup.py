"""Warm-up followed by any decay: ``warmup_then(step, T, decay=..., warmup=..., warmup_steps=W)``.

For ``t < W`` the factor ramps up to 1; from ``t = W`` on it is ``DECAYS[decay](t - W, T - W, **decay_args)``,
so the decay runs over the remaining ``T - W`` steps and starts at exactly 1 (every decay has f(0) = 1).

Warm-ups (``s`` = ``warmup_start``):

* ``linear`` (Goyal et al. 2017): f = s + (1 - s) (t + 1) / W. With s = 0 the first step uses base/W (not 0, a
  wasted step) and step W - 1 uses the base lr; this is the rule the original ``warmup_cosine`` used.
* ``exponential``: f = s^(1 - (t + 1)/W), a geometric ramp from s (default 0.01) to 1, i.e. linear in log lr,
  which spends equal steps on every decade of lr. (Not the 1 - exp(-t/tau) "exponential warm-up" of Ma and
  Yarats 2021, which never reaches 1 and so has no end at which a decay could start.)
"""

from __future__ import annotations

from typing import Any

from tricklab.errors import UnknownNameError
from tricklab.schedules.decay import DECAYS


def linear_warmup(step: int, warmup_steps: int, start: float = 0.0) -> float:
    """Linear ramp: s + (1 - s) (t + 1) / W, reaching 1 at t = W - 1."""
    if not 0.0 <= start <= 1.0:
        raise ValueError(f"warmup_start must be in [0, 1] for a linear warm-up, got {start!r}")
    return start + (1.0 - start) * (max(step, 0) + 1) / warmup_steps


def exponential_warmup(step: int, warmup_steps: int, start: float = 0.01) -> float:
    """Geometric ramp: s ** (1 - (t + 1) / W), reaching 1 at t = W - 1."""
    if not 0.0 < start <= 1.0:
        raise ValueError(f"warmup_start must be in (0, 1] for an exponential warm-up, got {start!r}")
    return start ** (1.0 - (max(step, 0) + 1) / warmup_steps)


WARMUPS = {"linear": linear_warmup, "exponential": exponential_warmup}
_DEFAULT_START = {"linear": 0.0, "exponential": 0.01}


def _lookup(table: dict[str, Any], kind: str, what: str) -> Any:
    if kind not in table:
        raise UnknownNameError(f"unknown {what} {kind!r}; choose one of {sorted(table)}")
    return table[kind]


def warmup_then(step: int, total_steps: int, decay: str = "cosine", warmup: str = "linear",
                warmup_steps: int = 100, warmup_start: float | None = None, **decay_args: Any) -> float:
    """Warm up over ``warmup_steps`` (``linear`` or ``exponential``), then ``decay`` over the rest.

    ``decay_args`` go to the decay (e.g. ``min_factor`` for cosine, ``step_size`` and ``gamma`` for step)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be non-negative, got {warmup_steps!r}")
    ramp = _lookup(WARMUPS, warmup, "warm-up")
    fall = _lookup(DECAYS, decay, "decay")
    if step < warmup_steps:
        start = _DEFAULT_START[warmup] if warmup_start is None else warmup_start
        return ramp(step, warmup_steps, start)
    # max(., 1): a warm-up as long as the run leaves a one-step decay, not a division by zero
    return fall(step - warmup_steps, max(total_steps - warmup_steps, 1), **decay_args)


def make_warmup_schedule(decay: str) -> Any:
    """A registered ``warmup_<decay>`` schedule: :func:`warmup_then` with ``decay`` fixed."""

    def schedule(step: int, total_steps: int, warmup_steps: int = 100, warmup: str = "linear",
                 warmup_start: float | None = None, **decay_args: Any) -> float:
        return warmup_then(step, total_steps, decay=decay, warmup=warmup, warmup_steps=warmup_steps,
                           warmup_start=warmup_start, **decay_args)

    schedule.__name__ = schedule.__qualname__ = f"warmup_{decay}"
    schedule.__doc__ = f"Warm-up (linear or exponential) over warmup_steps, then {decay} decay over the rest."
    return schedule


__all__ = ["WARMUPS", "exponential_warmup", "linear_warmup", "make_warmup_schedule", "warmup_then"]
