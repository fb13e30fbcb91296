"""``run_selfsup``: config validation names the field; a short run is deterministic for a seed (the
reference is the same run repeated)."""

from __future__ import annotations

import pytest

from tricklab.errors import ConfigError
from tricklab.paradigms.selfsup.run import SelfSupConfig, run_selfsup


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="method"):
        SelfSupConfig(method="swav")
    with pytest.raises(ConfigError, match="queue_size"):
        SelfSupConfig(queue_size=8, batch_size=16)


@pytest.mark.parametrize("method", ["simclr", "moco", "byol", "supervised"])
def test_a_short_run_is_deterministic_for_a_seed(method: str) -> None:
    pytest.importorskip("mnist1d")
    cfg = SelfSupConfig(method=method, steps=2, batch_size=32, queue_size=64, eval_every=1, probe_steps=5,
                        train_limit=300)
    a, b = run_selfsup(cfg, seed=0), run_selfsup(cfg, seed=0)
    assert {k: v for k, v in a.metrics.items() if k != "seconds"} == {
        k: v for k, v in b.metrics.items() if k != "seconds"}
    assert [r["step"] for r in a.history] == [1, 2] and 0.0 <= a.metrics["probe_acc"] <= 1.0
