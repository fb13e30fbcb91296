"""``run_fewshot``: deterministic for a seed (the reference is the same run repeated) and validates its config."""

from __future__ import annotations

import pytest

from tricklab.errors import ConfigError
from tricklab.paradigms.fewshot.run import FewShotConfig, run_fewshot


def test_fewshot_run_is_deterministic_and_validates() -> None:
    pytest.importorskip("mnist1d")
    cfg = FewShotConfig(steps=2, pairs_per_step=16, episodes=5, eval_every=1)
    a, b = run_fewshot(cfg, seed=0), run_fewshot(cfg, seed=0)
    assert {k: v for k, v in a.metrics.items() if "seconds" not in k} == {
        k: v for k, v in b.metrics.items() if "seconds" not in k}
    assert [r["step"] for r in a.history] == [1, 2]
    with pytest.raises(ConfigError, match="n_way"):
        run_fewshot(FewShotConfig(num_train_classes=7, n_way=5), seed=0)
