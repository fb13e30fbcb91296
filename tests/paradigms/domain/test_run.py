"""``run_dann``: deterministic for a seed (the reference is the same run repeated) and validates its config."""

from __future__ import annotations

import pytest

from tricklab.errors import ConfigError
from tricklab.paradigms.domain.run import DannConfig, run_dann


def test_dann_runs_are_deterministic_and_validate() -> None:
    pytest.importorskip("mnist1d")
    for cfg in (DannConfig(steps=2, batch_size=8, eval_every=1),
                DannConfig(method="self_training", threshold=0.0, steps=2, batch_size=8, eval_every=1)):
        a, b = run_dann(cfg, seed=0), run_dann(cfg, seed=0)
        assert {k: v for k, v in a.metrics.items() if "seconds" not in k} == {
            k: v for k, v in b.metrics.items() if "seconds" not in k}
        assert [r["step"] for r in a.history] == [1, 2]
    with pytest.raises(ConfigError, match="pair"):
        DannConfig(pair="office-31")
