"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018 sec. 3.3).

Reference: the paper's schedule written out by hand (epoch e trains the last min(G, e + 1) layer groups), checked
on the trainable set at every optimizer step of a real Trainer run, and on the weights themselves: a frozen group's
parameters stay bit-identical through AdamW steps with weight decay (no gradient, no update), an unfrozen one moves.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from tricklab.data.loader import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.techniques.gradual_unfreezing import (GradualUnfreezing, apply_unfreezing_, default_layer_groups,
                                                    unfrozen_groups)
from tricklab.train import Trainer
from tricklab.train.technique import Technique


def test_schedule_matches_the_paper() -> None:
    # G = 3 groups: epoch 0 -> 1 group (the last), 1 -> 2, 2 and later -> all 3
    assert [unfrozen_groups(e, 3) for e in range(5)] == [1, 2, 3, 3, 3]
    with pytest.raises(ConfigError):
        unfrozen_groups(0, 0)


class Record(Technique):
    name: ClassVar[str] = "record"
    reads = frozenset({"params"})
    writes = frozenset()

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, set[str], set[str]]] = []
        self.before: dict[str, torch.Tensor] = {}

    def on_batch_start(self, state) -> None:
        self.before = {n: p.detach().clone() for n, p in state.raw_model.named_parameters()}

    def on_after_step(self, state) -> None:
        model = state.raw_model
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, self.before[n])}
        self.rows.append((state.step, state.epoch, trainable, moved))


def _fit(technique: GradualUnfreezing, model: nn.Module, steps: int) -> Record:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    rec = Record()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    Trainer(model, opt, InMemoryLoader(x, y, 8, seed=0), techniques=[technique, rec], max_steps=steps).fit()
    return rec


def _mlp() -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def test_one_more_group_trains_each_epoch_and_frozen_weights_do_not_move() -> None:
    model = _mlp()
    assert default_layer_groups(model) == [["0."], ["2."], ["4."]]
    rec = _fit(GradualUnfreezing(), model, steps=8)  # 2 batches per epoch: epochs 0, 0, 1, 1, 2, 2, 3, 3
    groups = {0: {"4.weight", "4.bias"}, 1: {"2.weight", "2.bias", "4.weight", "4.bias"}}
    everything = {n for n, _ in model.named_parameters()}
    for step, epoch, trainable, moved in rec.rows:
        want = groups.get(epoch, everything)
        assert trainable == want, (step, epoch)
        assert moved == want, (step, epoch)  # AdamW's weight decay did not touch the frozen groups
    assert [r[1] for r in rec.rows] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_every_steps_and_an_initially_frozen_parameter_stays_frozen() -> None:
    model = _mlp()
    model[0].bias.requires_grad_(False)  # e.g. a frozen base weight under LoRA: never unfrozen
    rec = _fit(GradualUnfreezing(groups=[["0.", "2."], "4."], every_steps=3), model, steps=7)
    first = {"0.weight", "2.weight", "2.bias"}
    for step, _, trainable, _ in rec.rows:
        want = {"4.weight", "4.bias"} | (first if (step - 1) // 3 >= 1 else set())  # stage at the step's start
        assert trainable == want, step
    assert not model[0].bias.requires_grad


def test_groups_must_cover_the_parameters_and_arguments_are_checked() -> None:
    with pytest.raises(ConfigError, match="in no group"):
        apply_unfreezing_(_mlp(), [["0."], ["4."]], 1)
    with pytest.raises(ConfigError, match="every_steps"):
        GradualUnfreezing(every_steps=0)
    with pytest.raises(ConfigError, match="groups"):
        GradualUnfreezing(groups="0.")
