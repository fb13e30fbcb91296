"""The uncertainty paradigm as lab loop tasks (issue 16: usable from recipes and `tricklab ablate`).
Reference: the paradigm's own run function called directly with the same config and seed gives the numbers the
lab stores (the lab seeds and calls it, and records what it returns)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.tasks import TASKS, LoopTask
from tricklab.uncertainty.paradigm import LabelNoiseConfig, UncertaintyConfig, run_label_noise, run_uncertainty

pytest.importorskip("mnist1d")


def test_uncertainty_task_stores_what_the_paradigm_returns(tmp_path: Path) -> None:
    args = {"steps": 20, "eval_every": 10, "method": "mc_dropout", "mc_samples": 3}
    recipe = load_recipe(None, ["techniques=[]", "task=mnist1d-uncertainty", f"task_args={args}", "seed=1"])
    summary = run(recipe, tmp_path / "run").summary
    direct = run_uncertainty(UncertaintyConfig(**args), seed=1).metrics
    assert isinstance(TASKS.get("mnist1d-uncertainty"), LoopTask) and summary.task_kind == "loop"
    for key in ("accuracy", "nll", "ece", "ood_auroc", "ood_auroc_mi", "ts_ece"):
        assert summary.test.value(key) == pytest.approx(direct[key], rel=1e-9), key
    assert "ood_auroc" in [m.key for m in summary.metrics]


def test_a_plain_network_has_no_mutual_information_and_still_runs(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["techniques=[]", "task=mnist1d-uncertainty", "task_args={steps: 10, eval_every: 10}"])
    summary = run(recipe, tmp_path / "run").summary
    assert summary.test.value("ood_auroc_mi") is None and summary.test.value("ood_auroc") is not None


def test_label_noise_task(tmp_path: Path) -> None:
    args = {"steps": 20, "eval_every": 10, "technique": "gce", "noise_fraction": 0.4}
    recipe = load_recipe(None, ["techniques=[]", "task=mnist1d-label-noise", f"task_args={args}"])
    summary = run(recipe, tmp_path / "run").summary
    direct = run_label_noise(LabelNoiseConfig(**args), seed=recipe.seed).metrics
    assert summary.test.value("memorized") == pytest.approx(direct["memorized"], rel=1e-9)
    assert summary.test.value("accuracy") == pytest.approx(direct["accuracy"], rel=1e-9)
