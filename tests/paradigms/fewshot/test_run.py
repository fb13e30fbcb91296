"""``run_fewshot``: deterministic for a seed (the reference is the same run repeated) and validates its config."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST files absent")
def test_twenty_way_run_on_rot40_scores_only_unseen_garments() -> None:
    cfg = FewShotConfig(dataset="fashion-mnist-rot40", num_train_classes=20, n_way=5, n_way_wide=20, steps=1,
                        pairs_per_step=8, episodes=3, width=4, feature_dim=8, eval_every=1)
    res = run_fewshot(cfg, seed=0)
    train, test = res.extras["train_classes"], res.extras["test_classes"]
    assert len(test) == 20 and {c % 10 for c in train}.isdisjoint({c % 10 for c in test})
    assert res.metrics["zeroshot_chance"] == 1 / 20 and 0.0 <= res.metrics["oneshot_acc"] <= 1.0
    assert {"wide_oneshot_acc", "wide_oneshot_random_acc", "wide_oneshot_raw_acc"} <= set(res.metrics)
    with pytest.raises(ConfigError, match="n_way_wide"):
        run_fewshot(FewShotConfig(dataset="fashion-mnist-rot40", num_train_classes=20, n_way_wide=24, steps=1),
                    seed=0)
    with pytest.raises(ConfigError, match="multiple of 4"):
        run_fewshot(FewShotConfig(dataset="fashion-mnist-rot40", num_train_classes=6, steps=1), seed=0)
