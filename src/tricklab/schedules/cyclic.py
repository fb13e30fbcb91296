"""Schedules that go up as well as down: one-cycle, cyclical (CLR), SGDR warm restarts, and the SWA schedule.

One-cycle and cyclical schedules are defined by torch relative to a *maximum* lr; here they are factors of it:
**the optimizer's (base) lr is the maximum lr** ``max_lr``, and the factor is ``lr / max_lr`` <= 1.
"""

from __future__ import annotations

import math


def _cos_anneal(start: float, end: float, pct: float) -> float:
    # from start (pct = 0) to end (pct = 1) along half a cosine: end + (start - end) (1 + cos(pi pct)) / 2
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _linear_anneal(start: float, end: float, pct: float) -> float:
    return start + (end - start) * pct


def one_cycle(step: int, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
              final_div_factor: float = 1e4, anneal: str = "cos", three_phase: bool = False) -> float:
    """Smith's 1cycle policy as torch's OneCycleLR defines it, as a factor of max_lr (base lr = max lr).

    initial = 1/div_factor, final = initial/final_div_factor. Two phases: initial -> 1 until step
    pct_start*T - 1, then 1 -> final until step T - 1. ``three_phase``: initial -> 1 -> initial (symmetric,
    ending at 2 pct_start T - 2) -> final, as in Smith and Topin 2019."""
    if not 0.0 < pct_start < 1.0:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
    if div_factor <= 0 or final_div_factor <= 0:
        raise ValueError("div_factor and final_div_factor must be positive")
    if anneal not in ("cos", "linear"):
        raise ValueError(f"anneal must be 'cos' or 'linear', got {anneal!r}")
    fn = _cos_anneal if anneal == "cos" else _linear_anneal
    initial = 1.0 / div_factor
    final = initial / final_div_factor
    T = max(total_steps, 1)
    # torch's phase ends (float, inclusive); the last phase ends at T - 1 where the factor is `final`
    if three_phase:
        phases = [(pct_start * T - 1, initial, 1.0), (2 * pct_start * T - 2, 1.0, initial), (T - 1, initial, final)]
    else:
        phases = [(pct_start * T - 1, initial, 1.0), (T - 1, 1.0, final)]
    t = min(max(step, 0), T - 1)  # OneCycleLR refuses steps past T; we hold the final value instead
    start_step = 0.0
    for i, (end_step, lo, hi) in enumerate(phases):
        if t <= end_step or i == len(phases) - 1:
            span = end_step - start_step
            # a zero-length phase (tiny T) is already at its end value
            pct = (t - start_step) / span if span > 0 else 1.0
            return fn(lo, hi, pct)
        start_step = end_step
    raise AssertionError("unreachable")


def cyclical(step: int, total_steps: int, step_size_up: int = 2000, step_size_down: int | None = None,
             mode: str = "triangular", gamma: float = 1.0, min_factor: float = 0.1) -> float:
    """Cyclical learning rates (Smith 2017) as torch's CyclicLR defines them, as a factor of max_lr.

    The lr moves between base_lr = min_factor * max_lr and max_lr (base lr of the optimizer = max lr):
    with period C = up + down, cycle c = floor(1 + t/C), x = 1 + t/C - c in [0, 1),
    scale = x / r for x <= r (r = up/C), else (x - 1)/(r - 1); and
    f = m + (1 - m) * scale * g, with g = 1 (triangular), 1/2^(c-1) (triangular2) or gamma^t (exp_range)."""
    if mode not in ("triangular", "triangular2", "exp_range"):
        raise ValueError(f"mode must be triangular, triangular2 or exp_range, got {mode!r}")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor!r}")
    up = float(step_size_up)
    down = float(step_size_down) if step_size_down is not None else up
    if up <= 0 or down < 0:
        raise ValueError("step_size_up must be positive and step_size_down non-negative")
    t = max(step, 0)
    size = up + down
    ratio = up / size
    cycle = math.floor(1 + t / size)
    x = 1.0 + t / size - cycle
    scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if mode == "triangular":
        g = 1.0
    elif mode == "triangular2":
        g = 1 / (2.0 ** (cycle - 1))  # halve the amplitude every cycle
    else:
        g = gamma ** t  # exp_range scales by iteration, not by cycle
    return min_factor + (1.0 - min_factor) * scale * g


def sgdr(step: int, total_steps: int, T_0: int | None = None, T_mult: int = 1, min_factor: float = 0.0) -> float:
    """SGDR: cosine annealing with warm restarts (Loshchilov and Hutter 2017), torch's
    CosineAnnealingWarmRestarts as a factor; ``min_factor`` = eta_min / base lr.

    The i-th cycle lasts T_i = T_0 T_mult^i steps; within it f = m + (1 - m)(1 + cos(pi T_cur / T_i)) / 2.
    ``T_0`` defaults to a quarter of ``total_steps``."""
    if T_0 is None:
        T_0 = max(total_steps // 4, 1)
    if T_0 < 1 or T_mult < 1 or int(T_mult) != T_mult:
        raise ValueError(f"T_0 must be a positive integer and T_mult an integer >= 1, got {T_0!r}, {T_mult!r}")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_factor must be in [0, 1], got {min_factor!r}")
    t = max(step, 0)
    if T_mult == 1:
        t_cur, t_i = t % T_0, T_0
    else:
        # restart k begins at T_0 (T_mult^k - 1)/(T_mult - 1); walk the cycles in integers (no log rounding)
        t_cur, t_i = t, T_0
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= T_mult
    return min_factor + (1.0 - min_factor) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0


def swa_schedule(step: int, total_steps: int, swa_start: float = 0.75, swa_factor: float = 0.2) -> float:
    """The SWA paper's schedule (Izmailov et al. 2018, their train.py): constant, then linear down, then
    constant at ``swa_factor`` (= swa_lr / lr_init) while the weights are averaged.

    With u = t / (swa_start T): f = 1 for u <= 0.5; 1 - (1 - s)(u - 0.5)/0.4 for 0.5 < u <= 0.9; s after.
    Pair it with the ``swa`` technique and the same start fraction."""
    if not 0.0 < swa_start <= 1.0:
        raise ValueError(f"swa_start must be in (0, 1], got {swa_start!r}")
    if not 0.0 < swa_factor <= 1.0:
        raise ValueError(f"swa_factor must be in (0, 1], got {swa_factor!r}")
    u = max(step, 0) / max(swa_start * total_steps, 1e-12)
    if u <= 0.5:
        return 1.0
    if u <= 0.9:
        return 1.0 - (1.0 - swa_factor) * (u - 0.5) / 0.4
    return swa_factor


__all__ = ["cyclical", "one_cycle", "sgdr", "swa_schedule"]
