"""``run_greedy``: deterministic for a seed (the reference is the same run repeated) and validates its config."""

from __future__ import annotations

import pytest

from tricklab.errors import ConfigError
from tricklab.paradigms.pretrain.run import GreedyConfig, run_greedy


def test_greedy_run_is_deterministic_and_validates() -> None:
    pytest.importorskip("mnist1d")
    cfg = GreedyConfig(method="rbm", hidden=[8, 8], pretrain_steps=2, steps=2, eval_every=1)
    a, b = run_greedy(cfg, seed=0), run_greedy(cfg, seed=0)
    assert {k: v for k, v in a.metrics.items() if "seconds" not in k} == {
        k: v for k, v in b.metrics.items() if "seconds" not in k}
    assert [r["step"] for r in a.history] == [1, 2]
    with pytest.raises(ConfigError, match="method"):
        GreedyConfig(method="dbn")
