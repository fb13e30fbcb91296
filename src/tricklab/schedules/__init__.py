"""Learning-rate schedules as pure functions ``factor(step, total_steps, **kw) -> float``.

The learning rate at optimizer step t (0-based, before the t-th update) is base_lr * factor(t, T).
The ``lr_schedule`` technique (``tricklab.techniques.lr_schedule``) applies one to an optimizer;
:func:`to_lr_scheduler` wraps one in a torch ``LambdaLR`` for a plain loop.

Families (docs/schedules.md plots each registered schedule with its formula):

* decays (``decay.py``): constant, cosine, linear, step, multistep, exponential, polynomial;
* warm-up then decay (``warmup.py``): ``warmup_then`` with ``decay`` and ``warmup`` arguments, and the fixed
  ``warmup_<decay>`` names;
* cyclic (``cyclic.py``): one_cycle, cyclical, sgdr, swa. For one_cycle and cyclical the base lr is the
  *maximum* lr (the factor is lr / max_lr).
"""

from __future__ import annotations

from typing import Any

from tricklab.schedules.adapters import linear_scaling_lr, schedule_fn, to_lr_scheduler
from tricklab.schedules.cyclic import cyclical, one_cycle, sgdr, swa_schedule
from tricklab.schedules.decay import (
    DECAYS,
    constant,
    cosine,
    exponential,
    linear,
    multistep,
    polynomial,
    step_decay,
)
from tricklab.schedules.registry import SCHEDULES, ScheduleFn
from tricklab.schedules.warmup import WARMUPS, make_warmup_schedule, warmup_then

SCHEDULES.register("constant", constant, summary="factor 1 at every step")
SCHEDULES.register("cosine", cosine,
                   summary="cosine decay from 1 to min_factor over total_steps (Loshchilov and Hutter 2017)")
SCHEDULES.register("linear", linear, summary="linear decay from 1 to min_factor over total_steps")
SCHEDULES.register("step", step_decay, summary="multiply by gamma every step_size steps (StepLR)")
SCHEDULES.register("multistep", multistep, summary="multiply by gamma at each milestone (MultiStepLR)")
SCHEDULES.register("exponential", exponential, summary="multiply by gamma every step (ExponentialLR)")
SCHEDULES.register("polynomial", polynomial, summary="(1 - t/T)^power decay to min_factor (PolynomialLR)")
SCHEDULES.register("warmup_then", warmup_then,
                   summary="warm-up (linear or exponential) over warmup_steps, then any decay (decay=...)")
warmup_cosine = make_warmup_schedule("cosine")
for _decay in ("cosine", "linear", "step", "multistep", "exponential", "polynomial"):
    _fn = warmup_cosine if _decay == "cosine" else make_warmup_schedule(_decay)
    SCHEDULES.register(f"warmup_{_decay}", _fn, summary=f"linear (or exponential) warm-up, then {_decay} decay")
SCHEDULES.register("one_cycle", one_cycle,
                   summary="Smith's 1cycle as torch's OneCycleLR, factor of max lr (base lr = max lr)")
SCHEDULES.register("cyclical", cyclical,
                   summary="cyclical lr (Smith 2017) as torch's CyclicLR: triangular, triangular2, exp_range; "
                           "base lr = max lr")
SCHEDULES.register("sgdr", sgdr, summary="cosine with warm restarts (SGDR) as CosineAnnealingWarmRestarts")
SCHEDULES.register("swa", swa_schedule,
                   summary="SWA paper schedule: constant, linear down to swa_factor, then constant (Izmailov 2018)")

#: Arguments that show each registered schedule's shape over :data:`EXAMPLE_TOTAL` steps: used by the plot
#: script (docs/schedules/plot_schedules.py) and by the sweep test over the registry.
EXAMPLE_TOTAL = 1000
EXAMPLE_ARGS: dict[str, dict[str, Any]] = {
    "constant": {},
    "cosine": {},
    "linear": {},
    "step": {"step_size": 300, "gamma": 0.5},
    "multistep": {"milestones": [500, 750], "gamma": 0.1},
    "exponential": {"final_factor": 0.01},
    "polynomial": {"power": 2.0},
    "warmup_then": {"decay": "cosine", "warmup": "exponential", "warmup_steps": 100},
    "warmup_cosine": {"warmup_steps": 100},
    "warmup_linear": {"warmup_steps": 100},
    "warmup_step": {"warmup_steps": 100, "step_size": 300, "gamma": 0.5},
    "warmup_multistep": {"warmup_steps": 100, "milestones": [400, 650]},
    "warmup_exponential": {"warmup_steps": 100, "final_factor": 0.01},
    "warmup_polynomial": {"warmup_steps": 100, "power": 2.0},
    "one_cycle": {"pct_start": 0.3},
    "cyclical": {"step_size_up": 125, "mode": "triangular2"},
    "sgdr": {"T_0": 100, "T_mult": 2},
    "swa": {"swa_start": 0.75, "swa_factor": 0.2},
}

__all__ = [
    "DECAYS", "EXAMPLE_ARGS", "EXAMPLE_TOTAL", "SCHEDULES", "WARMUPS", "ScheduleFn", "constant", "cosine",
    "cyclical", "exponential", "linear", "linear_scaling_lr", "multistep", "one_cycle", "polynomial",
    "schedule_fn", "sgdr", "step_decay", "swa_schedule", "to_lr_scheduler", "warmup_cosine", "warmup_then",
]
