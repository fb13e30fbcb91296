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


def test_pi_stop_gradient_reaches_the_technique_and_changes_the_run() -> None:
    """The config's switch builds the Pi-model with a constant second pass (the slow simple path it must equal:
    PiModel(stop_gradient=True) built by hand), and the two settings train differently."""
    from tricklab.paradigms.semisup.run import _techniques

    cfg = SemiSupConfig(method="pi_model", pi_stop_gradient=True, steps=10)
    (pi,) = [t for t in _techniques(cfg, seed=0) if t.name == "pi_model"]
    assert pi.stop_gradient is True and pi.weight == cfg.mt_weight and pi.rampup_steps == 3
    (plain,) = [t for t in _techniques(SemiSupConfig(method="pi_model", steps=10), seed=0) if t.name == "pi_model"]
    assert plain.stop_gradient is False
    with pytest.raises(ConfigError, match="pi_stop_gradient"):
        SemiSupConfig(method="pi_model", pi_stop_gradient="yes")  # type: ignore[arg-type]
    pytest.importorskip("mnist1d")
    small = dict(method="pi_model", steps=4, labelled_batch=8, mu=2, eval_every=4, labels_per_class=2,
                 train_limit=400)
    a = run_semisup(SemiSupConfig(**small), seed=0)
    b = run_semisup(SemiSupConfig(**small, pi_stop_gradient=True), seed=0)
    assert a.history[-1]["train_loss"] != b.history[-1]["train_loss"]
