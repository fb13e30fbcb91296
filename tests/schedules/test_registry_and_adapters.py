"""Sweep over SCHEDULES (finite, non-negative, positive on the steps actually used, plotted on the docs page),
the LambdaLR adapter, the LRSchedule technique with every schedule, and the linear scaling rule.

References: the pure schedule function itself for the adapter and the technique (lr = base * factor(t, T)); the
closed form base_lr * batch / base_batch (Goyal et al. 2017) for the scaling rule.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.schedules import EXAMPLE_ARGS, EXAMPLE_TOTAL, SCHEDULES, linear_scaling_lr, to_lr_scheduler
from tricklab.techniques import LRSchedule
from tricklab.train import Technique, Trainer

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAMES = SCHEDULES.names()


def test_every_schedule_has_example_args() -> None:
    assert set(EXAMPLE_ARGS) == set(NAMES)
    assert {"constant", "cosine", "warmup_cosine", "step", "one_cycle", "cyclical", "sgdr", "warmup_then"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_is_finite_and_positive_over_the_run(name: str) -> None:
    """Every factor over [0, T] is finite and >= 0; over the steps a run takes, [0, T), strictly > 0 (a decay
    to min_factor 0 reaches 0 only at t = T, after the last step)."""
    fn = SCHEDULES.get(name)
    T = EXAMPLE_TOTAL
    values = [fn(t, T, **EXAMPLE_ARGS[name]) for t in range(T + 1)]
    assert all(math.isfinite(v) and v >= 0 for v in values)
    assert all(v > 0 for v in values[:T]), min(values[:T])
    assert max(values) <= 1.0 + 1e-12  # a factor of the base (for one_cycle / cyclical: of the max) lr
    # also with its defaults and a short run (what a recipe without args gets)
    short = [fn(t, 20) for t in range(21)]
    assert all(math.isfinite(v) and v >= 0 for v in short) and all(v > 0 for v in short[:20])


@pytest.mark.parametrize("name", NAMES)
def test_schedule_is_plotted_on_the_docs_page(name: str) -> None:
    assert (DOCS / "schedules" / f"{name}.svg").is_file(), "run python docs/schedules/plot_schedules.py"
    assert f"![{name}](schedules/{name}.svg)" in (DOCS / "schedules.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_lambda_lr_adapter_gives_the_pure_function_lrs(name: str) -> None:
    T, base = 300, 0.2
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = to_lr_scheduler(opt, name, T, **EXAMPLE_ARGS[name])
    fn = SCHEDULES.get(name)
    for t in range(T):
        assert opt.param_groups[0]["lr"] == pytest.approx(base * fn(t, T, **EXAMPLE_ARGS[name]), rel=1e-12, abs=0)
        opt.step()
        sched.step()


def test_adapter_rejects_bad_arguments_at_once() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(TypeError):
        to_lr_scheduler(opt, "cosine", 10, bogus=1)
    with pytest.raises(ValueError):
        to_lr_scheduler(opt, "one_cycle", 10, pct_start=1.5)


class LrProbe(Technique):
    name = "lr_probe"
    reads = frozenset({"lr"})

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_after_step(self, state) -> None:
        self.lrs.append(state.optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize("name", NAMES)
def test_lr_schedule_technique_runs_every_schedule(name: str) -> None:
    """The trainer's lr at step t is base * factor(t, T) for every registered schedule."""
    T, base = 24, 0.05
    args = {"sgdr": {"T_0": 5, "T_mult": 2}, "cyclical": {"step_size_up": 4, "mode": "exp_range", "gamma": 0.97},
            "step": {"step_size": 5}, "warmup_step": {"warmup_steps": 4, "step_size": 5}}.get(name, {})
    if name.startswith("warmup_") and "warmup_steps" not in args:
        args["warmup_steps"] = 4
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    probe = LrProbe()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=base), InMemoryLoader(torch.randn(16, 3),
            torch.randint(0, 2, (16,)), 4), techniques=[LRSchedule(name, **args), probe], max_steps=T).fit()
    fn = SCHEDULES.get(name)
    assert probe.lrs == pytest.approx([base * fn(t, T, **args) for t in range(T)], rel=1e-12)


def test_lr_schedule_reports_bad_values_when_built() -> None:
    with pytest.raises(ConfigError, match="one_cycle"):
        LRSchedule("one_cycle", pct_start=0.0)
    with pytest.raises(TypeError):
        LRSchedule("cosine", warmup_steps=3)


def test_linear_scaling_rule() -> None:
    """Reference: Goyal et al. 2017, lr = 0.1 * k for batch 256 k."""
    assert linear_scaling_lr(0.1, 8192, 256) == pytest.approx(3.2)
    assert linear_scaling_lr(0.1, 256) == pytest.approx(0.1)
    assert linear_scaling_lr(1e-3, 50, 100) == pytest.approx(5e-4)
    with pytest.raises(ValueError):
        linear_scaling_lr(0.1, 0, 256)
