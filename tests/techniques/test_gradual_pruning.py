"""The gradual_pruning technique. References: Zhu & Gupta's eq. 1 in closed form (the sparsity of the model after
each pruning step, counted exactly), the masks of tricklab.compress.magnitude_masks on the weights just before that
step (the functional core, itself checked against NumPy and torch.nn.utils.prune in tests/compress), and for
resume the uninterrupted run (bit-identical weights, masks and history)."""

from __future__ import annotations

import pytest
import torch
from crash_helpers import Crash, Crasher
from torch import nn

from tricklab.compress.pruning import MASK, magnitude_masks, masks_of
from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.techniques import Checkpointing, GradualPruning
from tricklab.train import Technique, Trainer, TrainState

STEPS = 12


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(1, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 10, 16), nn.ReLU(), nn.Linear(16, 3))


class Recorder(Technique):
    """Keeps a copy of the weights at ``after_step``, before the pruning handler (the optimizer has stepped)."""

    name = "recorder"
    before = frozenset({"gradual_pruning"})

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.masks: dict[int, dict[str, torch.Tensor]] = {}

    def on_after_step(self, state: TrainState) -> None:
        self.weights[state.step] = {n: m.weight.detach().clone() for n, m in state.raw_model.named_modules()
                                    if isinstance(m, (nn.Linear, nn.Conv1d))}
        self.masks[state.step] = {n: m.clone() for n, m in masks_of(state.raw_model).items()}


class AfterRecorder(Recorder):
    """The same, after the pruning handler."""

    name = "after_recorder"
    before = frozenset()
    after = frozenset({"gradual_pruning"})


def _trainer(technique: GradualPruning, extra: list[Technique] = (), seed: int = 0, steps: int = STEPS) -> Trainer:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 10, generator=g), torch.randint(0, 3, (64,), generator=g)
    model = _model(seed)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 16, seed=0),
                   techniques=[technique, *extra], eval_data=(x[:16], y[:16]), eval_every=4, log_every=1,
                   max_steps=steps)


def test_sparsity_follows_the_cubic_schedule_and_masks_are_magnitude_masks() -> None:
    pruning, before, after = GradualPruning(final_sparsity=0.8, start_step=2, end_step=10, every=3), Recorder(), \
        AfterRecorder()
    trainer = _trainer(pruning, [before, after])
    trainer.fit()
    n = sum(w.numel() for w in after.weights[1].values())
    for step in range(1, STEPS + 1):
        last = 2 + (step - 2) // 3 * 3 if step < 10 else 10  # the last pruning step so far
        target = 0.0 if step < 2 else 0.8 + (0.0 - 0.8) * (1 - (last - 2) / 8) ** 3  # eq. 1, by hand
        zeros = sum(int((w == 0).sum()) for w in after.weights[step].values())
        assert zeros == round(target * n), step
        if step in (2, 5, 8, 10):  # pruning steps: the masks are the core's on the weights the step left
            expected = magnitude_masks(before.weights[step], target)
            assert all(torch.equal(after.masks[step][k], expected[k]) for k in expected), step
        elif step > 1:  # other steps: the masks do not change
            assert all(torch.equal(m, after.masks[step - 1][k]) for k, m in after.masks[step].items())
    assert trainer.state.history[-1]["sparsity"] == pytest.approx(0.8)


def test_pruned_run_interrupted_and_resumed_is_bit_identical(tmp_path) -> None:
    """Reference: the uninterrupted run. The crashed run dies after step 7; the resumed run (fresh model with
    another init, fresh technique) restarts from the checkpoint of step 6 and must end with equal weights, masks,
    BN statistics and history."""
    kwargs = {"final_sparsity": 0.75, "start_step": 1, "end_step": 10, "every": 2, "scope": "layer"}
    ref = _trainer(GradualPruning(**kwargs))
    ref.fit()
    crashed = _trainer(GradualPruning(**kwargs), [Crasher(7), Checkpointing(every_steps=3, folder=str(tmp_path))])
    with pytest.raises(Crash):
        crashed.fit()
    resumed = _trainer(GradualPruning(**kwargs), [Checkpointing(every_steps=3, folder=str(tmp_path))], seed=99)
    resumed.fit(resume_from=tmp_path)
    assert resumed.state.resumed_from.endswith("step-00000006.json")
    a, b = resumed.state.raw_model.state_dict(), ref.state.raw_model.state_dict()
    assert a.keys() == b.keys() and sum(k.endswith(MASK) for k in a) == 3
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in ref.state.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.state.history] == strip


@pytest.mark.parametrize("kwargs, match", [
    ({"final_sparsity": 1.0}, "final_sparsity"),
    ({"initial_sparsity": 0.5, "final_sparsity": 0.2}, "exceeds"),
    ({"start_step": 10, "end_step": 10}, "end_step"),
    ({"every": 0}, "every"),
    ({"scope": "row"}, "scope"),
])
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        GradualPruning(**kwargs)
