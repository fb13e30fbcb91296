"""DropBlock schedule: drop_prob used by the forward of optimizer step t is start + (target - start) min(1, t/T).

References: the closed form of the paper's linear scheme (Ghiasi et al. 2018, sec. 3) written out in each test;
for resume, the uninterrupted run (the resumed one must see the same rates and end with torch.equal weights).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from crash_helpers import Crash, Crasher
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.layers.dropout import DropBlock
from tricklab.techniques import Checkpointing, GradAccumulation
from tricklab.techniques.dropblock_schedule import DropBlockSchedule, find_drop_blocks, scheduled_drop_prob
from tricklab.train import Technique, Trainer, TrainState, plan


class Net(nn.Module):
    """(B, 1, 6, 6) -> conv - DropBlock(0.2) - conv - DropBlock(0.1) - GAP - linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.db1 = nn.Conv2d(1, 4, 3, padding=1), DropBlock(0.2, block_size=2)
        self.conv2, self.db2 = nn.Conv2d(4, 4, 3, padding=1), DropBlock(0.1, block_size=3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.db1(torch.relu(self.conv1(x)))
        h = self.db2(torch.relu(self.conv2(h)))
        return self.fc(h.mean((2, 3)))


class RateProbe(Technique):
    """Records (step, drop_prob of every DropBlock) at the forward event: the rates the forward will use."""

    name = "rate_probe"
    reads = frozenset({"model.structure"})

    def __init__(self) -> None:
        self.seen: list[tuple[int, list[float]]] = []

    def on_forward(self, state) -> None:
        self.seen.append((state.step, [m.drop_prob for m in find_drop_blocks(state.raw_model).values()]))


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _trainer(schedule: Technique, extra=(), model_seed: int = 0, **budget):
    torch.manual_seed(model_seed)
    model = Net()
    x, y = _data()
    probe = RateProbe()
    torch.manual_seed(123)  # DropBlock draws from the global RNG
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                      InMemoryLoader(x, y, 8, seed=1), techniques=[schedule, probe, *extra], log_every=1, **budget)
    return trainer, model, probe


@pytest.mark.parametrize(("t", "T", "start", "target"), [(0, 10, 0.0, 0.2), (3, 10, 0.0, 0.2), (10, 10, 0.05, 0.3),
                                                          (25, 10, 0.05, 0.3), (7, 8, 0.1, 0.1)])
def test_scheduled_drop_prob_closed_form(t: int, T: int, start: float, target: float) -> None:
    """Reference: start + (target - start) * min(1, t / T), the paper's linear increase."""
    assert scheduled_drop_prob(t, T, start, target) == pytest.approx(start + (target - start) * min(1.0, t / T))


def test_scheduled_drop_prob_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="total_steps"):
        scheduled_drop_prob(1, 0, 0.0, 0.1)
    with pytest.raises(ValueError, match="step"):
        scheduled_drop_prob(-1, 5, 0.0, 0.1)


def test_trainer_rates_rise_linearly_over_the_whole_run() -> None:
    """Reference: closed form target_i * t / T with T = max_steps and each DropBlock's own built rate as target."""
    trainer, model, probe = _trainer(DropBlockSchedule(), max_steps=8)
    trainer.fit()
    assert [s for s, _ in probe.seen] == list(range(8))
    for t, rates in probe.seen:
        assert rates == pytest.approx([0.2 * t / 8, 0.1 * t / 8], abs=1e-12)
    # after the last step the next forward would use rate(8) = target; the model holds rate(7) now
    assert model.db1.drop_prob == pytest.approx(0.2 * 7 / 8)
    assert trainer.technique("dropblock_schedule").state_dict()["targets"] == {"db1": 0.2, "db2": 0.1}


def test_start_steps_and_shared_target() -> None:
    """Reference: start + (target - start) * min(1, t / steps) with steps shorter than the run (then flat)."""
    trainer, _, probe = _trainer(DropBlockSchedule(start=0.05, steps=4, target=0.25), max_steps=7)
    trainer.fit()
    for t, rates in probe.seen:
        want = 0.05 + 0.2 * min(1.0, t / 4)
        assert rates == pytest.approx([want, want], abs=1e-12)


def test_epoch_budget_and_gradient_accumulation() -> None:
    """T = max_epochs * batches per epoch / accumulation steps (4 batches of 8, 2 epochs, accumulate 2 -> T = 4);
    both micro-batches of one optimizer step use the same rate (reference: closed form 0.2 * t / 4)."""
    trainer, _, probe = _trainer(DropBlockSchedule(), extra=[GradAccumulation(steps=2)], max_epochs=2)
    trainer.fit()
    assert [s for s, _ in probe.seen] == [0, 0, 1, 1, 2, 2, 3, 3]
    for t, rates in probe.seen:
        assert rates[0] == pytest.approx(0.2 * t / 4, abs=1e-12)


def test_seconds_budget_needs_steps() -> None:
    trainer, *_ = _trainer(DropBlockSchedule(), max_seconds=1.0)
    with pytest.raises(ValueError, match="steps="):
        trainer.fit()
    trainer, _, probe = _trainer(DropBlockSchedule(steps=5), max_seconds=30.0, max_steps=3)
    trainer.fit()
    assert probe.seen[-1][1][0] == pytest.approx(0.2 * 2 / 5)


def test_declarations_and_composition() -> None:
    """It writes the non-exclusive model.structure slot: plans alone and beside a probe that reads it."""
    t = DropBlockSchedule()
    assert t.writes == frozenset({"model.structure"}) and not t.reads
    p = plan([t, RateProbe()])
    assert p.names == ("dropblock_schedule", "rate_probe")
    assert [p.names[i] for i in p.order["batch_start"]] == ["dropblock_schedule"]


def test_model_without_dropblock_warns_and_does_nothing() -> None:
    model = nn.Linear(4, 3)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    before = [p.detach().clone() for p in model.parameters()]
    t = DropBlockSchedule()
    with pytest.warns(UserWarning, match="no DropBlock"):
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), InMemoryLoader(x, y, 8),
                techniques=[t], max_steps=2).fit()
    assert t.state_dict()["targets"] == {}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kwargs", [{"start": 1.0}, {"start": -0.1}, {"steps": 0}, {"steps": 2.5},
                                    {"target": 1.2}, {"start": True}])
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DropBlockSchedule(**kwargs)


def test_state_dict_keeps_targets_not_the_partly_raised_rates() -> None:
    """The targets survive in state_dict: a fresh instance loaded from it schedules towards the built rates even
    though the model now holds partly raised ones (reference: closed form target * t / T)."""
    sched = DropBlockSchedule()
    trainer, model, _ = _trainer(sched, max_steps=4)
    trainer.fit()
    sd = sched.state_dict()
    assert sd == {"start": 0.0, "total_steps": 4, "targets": {"db1": 0.2, "db2": 0.1}}
    assert model.db1.drop_prob < 0.2
    fresh = DropBlockSchedule()
    fresh.load_state_dict(sd)
    state = TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                       loss_fn=torch.nn.functional.cross_entropy, device=torch.device("cpu"), step=2, max_steps=4)
    fresh.on_fit_start(state)  # does not re-read targets from the (modified) model
    assert fresh.state_dict() == sd
    fresh.on_batch_start(state)
    assert model.db1.drop_prob == pytest.approx(0.2 * 2 / 4) and model.db2.drop_prob == pytest.approx(0.1 * 2 / 4)
    other = Net()
    del other.db2
    other.db2 = nn.Identity()
    with pytest.raises(ValueError, match="db2"):
        fresh.on_batch_start(SimpleNamespace(raw_model=other, step=1))


def test_resume_is_exact(tmp_path) -> None:
    """Reference: the uninterrupted run. A run checkpointed every 3 steps that dies after step 7 resumes from step
    6 with a fresh model (new init) and fresh technique, and sees the same rates and ends with equal weights."""
    ref_trainer, ref_model, ref_probe = _trainer(DropBlockSchedule(), max_steps=10)
    ref_trainer.fit()
    crashed, *_ = _trainer(DropBlockSchedule(), extra=[Crasher(7), Checkpointing(every_steps=3, folder=str(tmp_path))],
                           max_steps=10)
    with pytest.raises(Crash):
        crashed.fit()
    resumed, model, probe = _trainer(DropBlockSchedule(), extra=[Checkpointing(every_steps=3, folder=str(tmp_path))],
                                     model_seed=99, max_steps=10)
    resumed.fit(resume_from=tmp_path)
    assert probe.seen == ref_probe.seen[6:]
    for (k, a), b in zip(model.state_dict().items(), ref_model.state_dict().values()):
        assert torch.equal(a, b), k
