"""Decay schedules ``f(step, total_steps, **kw)``: the factor falls from 1 over ``total_steps``.

Each is the factor form of a torch scheduler: with base lr ``b`` the torch scheduler's lr after ``t`` calls to
``step()`` equals ``b * f(t, T)`` (tests/schedules/test_decay.py checks every one in lock step):

=============  ======================================  =============================================
name           factor f(t, T)                          torch equivalent
=============  ======================================  =============================================
cosine         m + (1 - m) * (1 + cos(pi t / T)) / 2    CosineAnnealingLR(T_max=T, eta_min=m b)
linear         m + (1 - m) * (1 - t / T)                PolynomialLR(total_iters=T, power=1) for m = 0
step           gamma ** floor(t / step_size)           StepLR(step_size, gamma)
multistep      gamma ** #{milestones <= t}             MultiStepLR(milestones, gamma)
exponential    gamma ** t                              ExponentialLR(gamma)
polynomial     m + (1 - m) * (1 - t / T) ** power        PolynomialLR(total_iters=T, power) for m = 0
=============  ======================================  =============================================

``t`` is clamped to ``[0, T]`` where the formula has an end (cosine, linear, polynomial), so the factor holds
its final value past ``T`` instead of rising again as torch's CosineAnnealingLR would.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence


def _progress(step: int, total_steps: int) -> float:
    """t / T with t clamped to [0, T] and T >= 1 (a zero-length decay is over at once)."""
    return min(max(step, 0), total_steps) / max(total_steps, 1)


def _check_min_factor(min_factor: float) -> None:
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor!r}")


def _check_gamma(gamma: float) -> None:
    if not gamma > 0.0:
        raise ValueError(f"gamma must be positive, got {gamma!r}")


def constant(step: int, total_steps: int) -> float:
    """Factor 1 at every step."""
    return 1.0


def cosine(step: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Cosine decay from 1 to ``min_factor`` over ``total_steps`` (Loshchilov and Hutter 2017, no restarts)."""
    _check_min_factor(min_factor)
    # f = m + (1 - m) (1 + cos(pi t/T)) / 2: 1 at t = 0, m at t = T, slope 0 at both ends
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, total_steps)))


def linear(step: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Linear decay from 1 to ``min_factor`` over ``total_steps``."""
    _check_min_factor(min_factor)
    return min_factor + (1.0 - min_factor) * (1.0 - _progress(step, total_steps))


def step_decay(step: int, total_steps: int, step_size: int = 1000, gamma: float = 0.1) -> float:
    """Multiply by ``gamma`` every ``step_size`` steps (torch's StepLR)."""
    if step_size < 1:
        raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
    _check_gamma(gamma)
    return gamma ** (max(step, 0) // step_size)


def multistep(step: int, total_steps: int, milestones: Sequence[int] = (), gamma: float = 0.1,
              milestone_fractions: Sequence[float] = (0.5, 0.75)) -> float:
    """Multiply by ``gamma`` at each milestone (torch's MultiStepLR).

    ``milestones`` are step numbers; when empty, ``milestone_fractions`` of ``total_steps`` are used (the
    classic ResNet recipe divides by 10 at 50% and 75% of training)."""
    _check_gamma(gamma)
    marks = sorted(int(m) for m in milestones) if milestones else sorted(
        int(round(f * total_steps)) for f in milestone_fractions)
    # number of milestones already passed: MultiStepLR multiplies by gamma when last_epoch reaches one
    return gamma ** bisect.bisect_right(marks, max(step, 0))


def exponential(step: int, total_steps: int, gamma: float | None = None, final_factor: float = 0.01) -> float:
    """Multiply by ``gamma`` every step (torch's ExponentialLR).

    Without ``gamma``, gamma = final_factor ** (1 / T), so the factor reaches ``final_factor`` at ``T``."""
    if gamma is None:
        if not final_factor > 0.0:
            raise ValueError(f"final_factor must be positive, got {final_factor!r}")
        gamma = final_factor ** (1.0 / max(total_steps, 1))
    _check_gamma(gamma)
    return gamma ** max(step, 0)


def polynomial(step: int, total_steps: int, power: float = 2.0, min_factor: float = 0.0) -> float:
    """Polynomial decay (1 - t/T)^power from 1 to ``min_factor`` (torch's PolynomialLR for min_factor 0)."""
    _check_min_factor(min_factor)
    if not power > 0.0:
        raise ValueError(f"power must be positive, got {power!r}")
    return min_factor + (1.0 - min_factor) * (1.0 - _progress(step, total_steps)) ** power


#: decay name -> function, for :func:`tricklab.schedules.warmup.warmup_then`
DECAYS = {
    "constant": constant,
    "cosine": cosine,
    "linear": linear,
    "step": step_decay,
    "multistep": multistep,
    "exponential": exponential,
    "polynomial": polynomial,
}

__all__ = ["DECAYS", "constant", "cosine", "exponential", "linear", "multistep", "polynomial", "step_decay"]
