"""``run_semisup``: deterministic for a seed (the reference is the same run repeated), reports its declared
metrics, and refuses a labelled batch larger than the labelled set."""

from __future__ import annotations

import pytest

from tricklab.errors import ConfigError
from tricklab.paradigms.semisup.run import SemiSupConfig, run_semisup


def test_semisup_run_is_deterministic_and_reports_its_metrics() -> None:
    pytest.importorskip("mnist1d")
    cfg = SemiSupConfig(method="fixmatch", steps=3, labelled_batch=8, mu=2, eval_every=3, labels_per_class=2,
                        train_limit=400)
    a, b = run_semisup(cfg, seed=1), run_semisup(cfg, seed=1)

    def same(m: dict) -> dict:  # NaN (no confident pseudo-label after 3 steps) compares equal to itself here
        return {k: (None if v != v else v) for k, v in m.items() if k != "seconds"}

    assert same(a.metrics) == same(b.metrics)
    assert set(a.metrics) == {"test_acc", "pseudo_label_acc", "mask_rate", "seconds"}
    assert len(a.extras["labelled"]) == 20 and a.history[-1]["step"] == 3
    with pytest.raises(ConfigError, match="labelled_batch"):
        run_semisup(SemiSupConfig(labelled_batch=64, labels_per_class=2, train_limit=400, steps=1), seed=0)
