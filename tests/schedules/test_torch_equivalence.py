"""Each schedule against the torch scheduler that defines it, step by step.

Reference: ``torch.optim.lr_scheduler`` (OneCycleLR, CyclicLR, CosineAnnealingWarmRestarts, CosineAnnealingLR,
StepLR, MultiStepLR, ExponentialLR, PolynomialLR) driven on a one-parameter SGD optimizer; after ``t`` calls to
``scheduler.step()`` its lr must equal ``base * factor(t, T)`` (for one-cycle and cyclical: ``max_lr * factor``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.optim import lr_scheduler as S

from tricklab.schedules import (
    cosine,
    cyclical,
    exponential,
    linear,
    multistep,
    one_cycle,
    polynomial,
    sgdr,
    step_decay,
)


def torch_lrs(make: Callable[[torch.optim.Optimizer], S.LRScheduler], steps: int, lr: float = 0.4) -> list[float]:
    """The lr each of ``steps`` optimizer steps uses under the torch scheduler ``make(optimizer)``."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def assert_lrs(ref: list[float], ours: list[float]) -> None:
    assert len(ref) == len(ours)
    for t, (a, b) in enumerate(zip(ref, ours)):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12), f"step {t}: torch {a}, ours {b}"


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("pct_start,three_phase", [(0.1, False), (0.25, False), (0.3, False), (0.5, False),
                                                   (0.77, False), (0.1, True), (0.3, True), (0.45, True)])
def test_one_cycle_equals_torch_one_cycle_lr(anneal: str, pct_start: float, three_phase: bool) -> None:
    T, max_lr = 97, 0.8
    ref = torch_lrs(lambda o: S.OneCycleLR(o, max_lr=max_lr, total_steps=T, pct_start=pct_start,
                                           anneal_strategy=anneal, div_factor=20.0, final_div_factor=300.0,
                                           three_phase=three_phase, cycle_momentum=False), T)
    ours = [max_lr * one_cycle(t, T, pct_start=pct_start, div_factor=20.0, final_div_factor=300.0,
                               anneal=anneal, three_phase=three_phase) for t in range(T)]
    assert_lrs(ref, ours)


def test_one_cycle_defaults_and_end_values() -> None:
    """Reference: torch's OneCycleLR defaults (div 25, final div 1e4, pct 0.3, cos) and its end points."""
    T = 200
    ref = torch_lrs(lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=T, cycle_momentum=False), T)
    assert_lrs(ref, [one_cycle(t, T) for t in range(T)])
    assert one_cycle(0, T) == pytest.approx(1 / 25)
    assert one_cycle(T - 1, T) == pytest.approx(1 / 25 / 1e4)
    assert one_cycle(T + 5, T) == one_cycle(T - 1, T)  # held past the end


@pytest.mark.parametrize("mode,gamma", [("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.995)])
@pytest.mark.parametrize("up,down", [(10, None), (7, 13), (12, 4)])
def test_cyclical_equals_torch_cyclic_lr(mode: str, gamma: float, up: int, down: int | None) -> None:
    T, base_lr, max_lr = 120, 0.05, 0.5
    ref = torch_lrs(lambda o: S.CyclicLR(o, base_lr=base_lr, max_lr=max_lr, step_size_up=up,
                                         step_size_down=down, mode=mode, gamma=gamma, cycle_momentum=False), T)
    ours = [max_lr * cyclical(t, T, step_size_up=up, step_size_down=down, mode=mode, gamma=gamma,
                              min_factor=base_lr / max_lr) for t in range(T)]
    assert_lrs(ref, ours)


@pytest.mark.parametrize("T_0,T_mult", [(10, 1), (7, 1), (5, 2), (3, 3)])
@pytest.mark.parametrize("min_factor", [0.0, 0.1])
def test_sgdr_equals_torch_cosine_annealing_warm_restarts(T_0: int, T_mult: int, min_factor: float) -> None:
    T, base = 160, 0.4
    ref = torch_lrs(lambda o: S.CosineAnnealingWarmRestarts(o, T_0=T_0, T_mult=T_mult, eta_min=min_factor * base),
                    T, lr=base)
    assert_lrs(ref, [base * sgdr(t, T, T_0=T_0, T_mult=T_mult, min_factor=min_factor) for t in range(T)])


@pytest.mark.parametrize("min_factor", [0.0, 0.25])
def test_cosine_equals_torch_cosine_annealing_lr(min_factor: float) -> None:
    T, base = 50, 0.4
    ref = torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=T, eta_min=min_factor * base), T + 1, lr=base)
    assert_lrs(ref, [base * cosine(t, T, min_factor=min_factor) for t in range(T + 1)])


def test_step_equals_torch_step_lr() -> None:
    ref = torch_lrs(lambda o: S.StepLR(o, step_size=7, gamma=0.3), 40)
    assert_lrs(ref, [0.4 * step_decay(t, 40, step_size=7, gamma=0.3) for t in range(40)])


def test_multistep_equals_torch_multistep_lr() -> None:
    ref = torch_lrs(lambda o: S.MultiStepLR(o, milestones=[5, 12, 30], gamma=0.5), 40)
    assert_lrs(ref, [0.4 * multistep(t, 40, milestones=[12, 5, 30], gamma=0.5) for t in range(40)])
    # default milestones: 50% and 75% of T
    ref = torch_lrs(lambda o: S.MultiStepLR(o, milestones=[20, 30], gamma=0.1), 40)
    assert_lrs(ref, [0.4 * multistep(t, 40) for t in range(40)])


def test_exponential_equals_torch_exponential_lr() -> None:
    ref = torch_lrs(lambda o: S.ExponentialLR(o, gamma=0.93), 60)
    assert_lrs(ref, [0.4 * exponential(t, 60, gamma=0.93) for t in range(60)])
    # gamma from final_factor: reaches it at T (closed form final_factor ** (t / T))
    assert exponential(60, 60, final_factor=0.05) == pytest.approx(0.05, rel=1e-12)


def test_linear_equals_torch_polynomial_lr_power_1() -> None:
    ref = torch_lrs(lambda o: S.PolynomialLR(o, total_iters=30, power=1.0), 35)
    assert_lrs(ref, [0.4 * linear(t, 30) for t in range(35)])


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_polynomial_equals_torch_polynomial_lr(power: float) -> None:
    T = 30
    ref = torch_lrs(lambda o: S.PolynomialLR(o, total_iters=T, power=power), T + 5)
    assert_lrs(ref, [0.4 * polynomial(t, T, power=power) for t in range(T + 5)])
