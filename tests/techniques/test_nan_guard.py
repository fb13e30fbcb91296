"""NaN/inf guard: non-finite steps are skipped and counted; K in a row raise TrainingError.

Reference: the simple slow path. A probe records the weights after every step; a skipped step must leave
them bit-identical to the previous step's, and finite steps must match a plain SGD update computed by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import TrainingError
from tricklab.techniques import GradClip, NanGuard
from tricklab.train import Technique, Trainer


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


class PoisonLoss(Technique):
    """Test probe: makes the loss NaN (or its gradient inf) on chosen optimizer steps (1-based)."""

    name = "poison_loss"
    writes = frozenset({"loss"})

    def __init__(self, bad_steps: set[int], kind: str = "nan") -> None:
        self.bad_steps, self.kind = bad_steps, kind

    def on_loss(self, state) -> None:
        if state.step + 1 in self.bad_steps:
            if self.kind == "nan":
                state.loss = state.loss * float("nan")
            else:  # finite loss, infinite gradient: sqrt'(0) = inf
                w = next(state.raw_model.parameters())
                state.loss = state.loss + torch.sqrt((w * 0).abs().sum())


class WeightRecorder(Technique):
    name = "weight_recorder"
    reads = frozenset({"params"})

    def __init__(self) -> None:
        self.weights: list[list[torch.Tensor]] = []
        self.skip_flags: list[bool] = []

    def on_fit_start(self, state) -> None:
        self.weights.append([p.detach().clone() for p in state.raw_model.parameters()])

    def on_after_step(self, state) -> None:
        self.weights.append([p.detach().clone() for p in state.raw_model.parameters()])
        self.skip_flags.append(state.skip_step)


@pytest.mark.parametrize("kind", ["nan", "inf_grad"])
def test_bad_steps_are_skipped_counted_and_training_continues(kind: str) -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    rec = WeightRecorder()
    guard = NanGuard(max_consecutive=3)
    bad = {2, 5, 6}
    state = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                    techniques=[PoisonLoss(bad, kind), guard, rec], max_steps=8).fit()
    assert state.step == 8  # training went on to the end of the budget
    assert state.counters["nonfinite_steps"] == 3 == guard.total
    assert guard.consecutive == 0  # reset by the finite steps 7 and 8
    assert rec.skip_flags == [s in bad for s in range(1, 9)]
    for step in range(1, 9):
        before, after = rec.weights[step - 1], rec.weights[step]
        unchanged = all(torch.equal(a, b) for a, b in zip(before, after))
        assert unchanged == (step in bad), step
        assert all(torch.isfinite(p).all() for p in after)


def test_finite_steps_match_plain_sgd_reference() -> None:
    """Reference: w <- w - lr * grad computed with torch.autograd on the same batch (slow path)."""
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    w0 = [p.detach().clone() for p in model.parameters()]
    loader = InMemoryLoader(x, y, 8, seed=0)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader,
            techniques=[PoisonLoss({1}), NanGuard()], max_steps=2).fit()
    # step 1 was skipped; step 2 used batch 1 of epoch 0
    ref_loader = InMemoryLoader(x, y, 8, seed=0)
    ref_loader.next_batch()
    bx, by = ref_loader.next_batch()
    w, b = (t.clone().requires_grad_() for t in w0)
    loss = F.cross_entropy(bx @ w.T + b, by)
    gw, gb = torch.autograd.grad(loss, (w, b))
    torch.testing.assert_close(model.weight.detach(), w0[0] - 0.1 * gw)
    torch.testing.assert_close(model.bias.detach(), w0[1] - 0.1 * gb)


def test_k_consecutive_bad_steps_raise_training_error_mentioning_learning_rate(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    guard = NanGuard(max_consecutive=3)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[PoisonLoss({2, 3, 4, 5}), guard], max_steps=10, run_dir=tmp_path)
    with pytest.raises(TrainingError, match="learning rate") as info:
        trainer.fit()
    msg = str(info.value)
    assert "3 optimizer steps in a row" in msg and "step 4" in msg and str(tmp_path) in msg
    assert trainer.state.step == 3  # raised during step 4, before it was taken
    assert guard.consecutive == 3


def test_bad_steps_that_are_not_consecutive_do_not_raise() -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    guard = NanGuard(max_consecutive=2)
    state = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                    techniques=[PoisonLoss({1, 3, 5, 7}), guard], max_steps=8).fit()
    assert state.step == 8  # trained to the end: never 2 bad steps in a row
    assert guard.total == 4 and state.counters["nonfinite_steps"] == 4


def test_guard_after_grad_clip_still_sees_non_finite_gradients() -> None:
    """Clipping an inf gradient produces NaN/0, not a finite update; the guard runs after clipping."""
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    rec = WeightRecorder()
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[NanGuard(), GradClip(max_norm=1.0), PoisonLoss({2}, "inf_grad"), rec],
                      max_steps=3)
    order = [trainer.plan.names[i] for i in trainer.plan.order["after_backward"]]
    assert order.index("grad_clip") < order.index("nan_guard")
    st = trainer.fit()
    assert st.counters["nonfinite_steps"] == 1
    assert all(torch.equal(a, b) for a, b in zip(rec.weights[1], rec.weights[2]))


def test_respects_a_step_already_skipped_by_the_loss_scaler() -> None:
    guard = NanGuard(max_consecutive=1)
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([float("inf"), 0.0])
    st = SimpleNamespace(skip_step=True, loss=torch.tensor(1.0), optimizer=torch.optim.SGD([p], lr=0.1),
                         counters={}, step=0, run_dir=None)
    guard.on_after_backward(st)  # no raise, no count
    assert guard.total == 0 and st.counters == {}


def test_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    x, y = _data()
    model = nn.Linear(4, 3)
    guard = NanGuard(max_consecutive=5)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[PoisonLoss({2, 4, 5}), guard], max_steps=5).fit()
    sd = guard.state_dict()
    assert sd == {"consecutive": 2, "total": 3}
    fresh = NanGuard(max_consecutive=5)
    fresh.load_state_dict(sd)
    assert fresh.state_dict() == sd


@pytest.mark.parametrize("k", [0, -3, 1.5])
def test_invalid_max_consecutive(k) -> None:
    with pytest.raises(ValueError):
        NanGuard(max_consecutive=k)
