"""LR schedule owner: the lr used by optimizer step t is base_lr * factor(t, T).

References: torch.optim.lr_scheduler.CosineAnnealingLR ('cosine') and StepLR ('step') driven in lock step
on a twin optimizer; the closed form (t+1)/W then 0.5 (1 + cos(pi (t - W)/(T - W))) for 'warmup_cosine'.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConflictError, UnknownNameError
from tricklab.techniques import GradAccumulation, LRSchedule
from tricklab.train import Technique, Trainer, plan


class LrProbe(Technique):
    """Records every group's lr at after_step: the lr the optimizer step just used."""

    name = "lr_probe"
    reads = frozenset({"lr"})

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_after_step(self, state) -> None:
        self.lrs.append([g["lr"] for g in state.optimizer.param_groups])


def _fit(schedule, steps=12, base=(0.1, 0.03), techniques=(), **kw):
    torch.manual_seed(0)
    x, y = torch.randn(48, 4), torch.randint(0, 3, (48,))
    model = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 3))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": base[0]},
                           {"params": model[1].parameters(), "lr": base[1]}])
    probe = LrProbe()
    st = Trainer(model, opt, InMemoryLoader(x, y, 8, seed=0), techniques=[schedule, probe, *techniques],
                 max_steps=kw.pop("max_steps", steps), log_every=1, **kw).fit()
    return probe.lrs, st


def _twin(base=(0.1, 0.03)):
    ps = [nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD([{"params": [ps[0]], "lr": base[0]}, {"params": [ps[1]], "lr": base[1]}])


def test_cosine_matches_torch_cosine_annealing() -> None:
    T = 12
    lrs, st = _fit(LRSchedule("cosine"), steps=T)
    opt = _twin()
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T)
    for t in range(T):
        assert lrs[t] == pytest.approx(ref.get_last_lr(), rel=1e-9, abs=1e-12), t
        opt.step()
        ref.step()
    assert [r["lr"] for r in st.history] == [group_lrs[0] for group_lrs in lrs]  # the logged lr is the one used


def test_cosine_with_min_factor_matches_eta_min() -> None:
    """Reference: CosineAnnealingLR(eta_min = min_factor * base) (one group, so eta_min is a scalar)."""
    T = 10
    lrs, _ = _fit(LRSchedule("cosine", min_factor=0.2), steps=T, base=(0.5, 0.5))
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=T, eta_min=0.1)
    for t in range(T):
        assert lrs[t][0] == pytest.approx(ref.get_last_lr()[0], rel=1e-9)
        opt.step()
        ref.step()


def test_step_matches_torch_step_lr() -> None:
    lrs, _ = _fit(LRSchedule("step", step_size=3, gamma=0.5), steps=10)
    opt = _twin()
    ref = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    for t in range(10):
        assert lrs[t] == pytest.approx(ref.get_last_lr(), rel=1e-12)
        opt.step()
        ref.step()


def test_warmup_cosine_closed_form() -> None:
    T, W = 14, 4
    lrs, _ = _fit(LRSchedule("warmup_cosine", warmup_steps=W), steps=T)
    for t in range(T):
        f = (t + 1) / W if t < W else 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W)))
        assert lrs[t] == pytest.approx([0.1 * f, 0.03 * f], rel=1e-12, abs=1e-15), t
    assert lrs[W - 1][0] == pytest.approx(0.1)  # warm-up ends at the base lr


def test_explicit_total_steps_and_epoch_budget() -> None:
    # explicit total_steps overrides the budget
    lrs, _ = _fit(LRSchedule("cosine", total_steps=20), steps=5)
    assert lrs[4][0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 4 / 20)))
    # epoch budget: T = epochs * batches per epoch / accumulation = 2 * 6 / 2 = 6 optimizer steps
    sched = LRSchedule("cosine")
    lrs, st = _fit(sched, max_steps=None, max_epochs=2, techniques=[GradAccumulation(2)])
    assert sched.total_steps == 6 and st.step == 6
    assert lrs[-1][0] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_seconds_budget_without_total_steps_raises() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        _fit(LRSchedule("cosine"), max_steps=None, max_seconds=1.0)


def test_two_schedule_owners_are_refused_naming_both() -> None:
    with pytest.raises(ConflictError) as info:
        plan([LRSchedule("cosine"), LrProbe(), LRSchedule("step")])
    msg = str(info.value)
    assert "'lr_schedule' and 'lr_schedule#2'" in msg and "'lr'" in msg
    # the trainer refuses before anything runs
    model = nn.Linear(2, 2)
    with pytest.raises(ConflictError):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                InMemoryLoader(torch.randn(8, 2), torch.zeros(8, dtype=torch.long), 4),
                techniques=[LRSchedule(), LRSchedule()], max_steps=1)


def test_another_lr_writer_is_refused_naming_both() -> None:
    class Other(Technique):
        name = "other_scheduler"
        writes = frozenset({"lr"})

    with pytest.raises(ConflictError, match=r"'lr_schedule'.*'other_scheduler'|'other_scheduler'.*'lr_schedule'"):
        plan([LRSchedule(), Other()])


def test_unknown_schedule_name() -> None:
    with pytest.raises(UnknownNameError, match="cosine"):
        LRSchedule("cosin")


def test_state_dict_round_trip_and_resume_keeps_base_lr() -> None:
    sched = LRSchedule("cosine")
    _fit(sched, steps=6)
    sd = sched.state_dict()
    assert sd == {"base_lrs": [0.1, 0.03], "total_steps": 6}
    fresh = LRSchedule("cosine")
    fresh.load_state_dict(sd)
    assert fresh.state_dict() == sd
