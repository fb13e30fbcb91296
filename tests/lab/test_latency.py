"""The latency pass: contenders timed round-robin in one process (each round starts at the next contender),
each model's train/eval flags restored. The pass over a real ablation folder is tested in test_backends.py
(every variant and the baseline's copy timed for every seed, the numbers the summary then uses)."""

from __future__ import annotations

import torch
from torch import nn

from tricklab.lab.latency import Contender, time_interleaved


class Recorder(nn.Module):
    """A model that records the order in which it is called."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log
        self.lin = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        assert not self.training and torch.is_inference_mode_enabled()
        return self.lin(self.drop(x))


def test_round_robin_order_and_flags_restored() -> None:
    log: list[str] = []
    models = {n: Recorder(n, log) for n in "abc"}
    models["b"].drop.train(False)  # a submodule deliberately in eval mode stays so
    x = torch.zeros(3, 4)
    times = time_interleaved([Contender(n, m, x) for n, m in models.items()], repeats=4, warmup=2)
    # warm-up: each contender twice, in order; then round r starts at contender r mod 3
    assert log[:6] == ["a", "a", "b", "b", "c", "c"]
    assert log[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {n: len(t) for n, t in times.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t > 0 for ts in times.values() for t in ts)
    assert models["a"].training and models["a"].drop.training and not models["b"].drop.training
