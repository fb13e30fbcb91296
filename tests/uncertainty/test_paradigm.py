"""Run functions of the uncertainty paradigms: every method runs end to end on MNIST-1D for a few steps, reports
the declared metrics, is deterministic for a seed, and refuses bad configurations with messages naming the field.
(The measured effects are in docs/cards/uncertainty-*; these runs are far too short to show any.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tricklab.errors import ConfigError
from tricklab.uncertainty.metrics import LABEL_NOISE_METRICS, UNCERTAINTY_METRICS
from tricklab.uncertainty.paradigm import (
    METHODS,
    LabelNoiseConfig,
    UncertaintyConfig,
    run_label_noise,
    run_uncertainty,
)

pytest.importorskip("mnist1d")
FAST = {"steps": 4, "eval_every": 2, "mc_samples": 2, "members": 2, "bbb_samples": 2, "sngp_features": 32}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_and_reports_its_metrics(method: str, tmp_path: Path) -> None:
    rows = []
    result = run_uncertainty(UncertaintyConfig(method=method, **FAST), seed=0, run_dir=tmp_path,
                             progress=rows.append)
    declared = {m.key for m in UNCERTAINTY_METRICS}
    expected = declared - ({"ood_auroc_mi"} if method in ("plain", "sngp") else set())
    assert expected <= set(result.metrics), expected - set(result.metrics)
    assert all(isinstance(v, float) for v in result.metrics.values())
    assert result.metrics["ts_accuracy"] == result.metrics["accuracy"]  # temperature keeps predictions
    assert rows and all("step" in r and "seconds" in r for r in result.history)
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["metrics"] == result.metrics
    if method == "ensemble":
        assert len(result.extras["members"]) == 2


def test_runs_are_deterministic_for_a_seed() -> None:
    a = run_uncertainty(UncertaintyConfig(method="plain", calibrate=False, **FAST), seed=3)
    b = run_uncertainty(UncertaintyConfig(method="plain", calibrate=False, **FAST), seed=3)
    assert {k: v for k, v in a.metrics.items() if k != "train_seconds"} == {
        k: v for k, v in b.metrics.items() if k != "train_seconds"}


@pytest.mark.parametrize("technique", ["plain", "co_teaching", "bootstrap", "gce"])
def test_label_noise_runs(technique: str) -> None:
    result = run_label_noise(LabelNoiseConfig(technique=technique, steps=4, eval_every=2), seed=0)
    assert {m.key for m in LABEL_NOISE_METRICS} <= set(result.metrics)
    assert result.extras["noise"]["num_flipped"] == 1600  # 40% of 4000, exactly
    assert 0.0 <= result.metrics["memorized"] <= 1.0


@pytest.mark.parametrize("field,value,match", [
    ("method", "laplace", "method must be one of"),
    ("dropout", 1.5, "dropout must be"),
    ("steps", 0, "steps must be"),
    ("val_fraction", 0.7, "val_fraction"),
    ("dataset", "cifar10", "dataset must be"),
    ("bbb_prior", "laplace", "bbb_prior"),
])
def test_bad_uncertainty_configs_are_refused(field: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        UncertaintyConfig(**{field: value})
    with pytest.raises(ConfigError, match="> 0 for method mc_dropout"):
        UncertaintyConfig(method="mc_dropout", dropout=0.0)


def test_bad_label_noise_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="technique must be one of"):
        LabelNoiseConfig(technique="mixup")
    with pytest.raises(ConfigError, match="noise_fraction"):
        LabelNoiseConfig(noise_fraction=1.0)
    with pytest.raises(ConfigError, match="gce_q"):
        LabelNoiseConfig(gce_q=0.0)
