"""The typed run summary: it reads the summary.json layout the runner has always written (old stores too),
writes exactly that layout back, and each metric reads from where its MetricInfo says. The reference for the
layout is a real run's summary.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tricklab.lab.metrics import METRICS, MetricInfo, extra_test_metric
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.summary import AblationSetting, Evaluation, RunSummary


def test_reads_the_layout_of_an_old_summary() -> None:
    # the layout written by tricklab.lab.runner.run before the summary was typed (no task, no val, ...)
    old = {"train_seconds": 12.5, "parameters": 5210, "model_size_bytes": 21432,
           "test": {"accuracy": 0.471, "macro_f1": 0.4576, "nll": 1.3629, "ece": 0.117, "brier": 0.648},
           "inference_latency": {"median_ms": 5.29, "p90_ms": 8.2}, "convergence": None}
    expected = {"accuracy": 0.471, "macro_f1": 0.4576, "nll": 1.3629, "ece": 0.117, "brier": 0.648,
                "train_seconds": 12.5, "latency_ms": 5.29, "parameters": 5210.0, "model_size_bytes": 21432.0,
                "steps_to_target": None, "energy_wh": None, "co2e_g": None, "nonzero_parameters": None,
                "weight_sparsity": None, "bpc": None}
    s = RunSummary.from_dict(old)
    assert [m.key for m in METRICS] == list(expected)
    assert {m.key: s.value(m) for m in METRICS} == expected
    reached = RunSummary.from_dict({**old, "convergence": {"step": 300, "seconds": 1.5, "value": 0.91}})
    assert reached.value(METRICS[9]) == 300.0 and reached.convergence.seconds == 1.5
    assert RunSummary.from_dict({}).value(METRICS[0]) is None
    # language models: bits per character; further test sets: "extra:<name>:<metric>"
    assert RunSummary.from_dict({"test": {"bpc": 1.75}}).value(METRICS[-1]) == 1.75
    len256 = extra_test_metric("len256", METRICS[0])
    assert len256.key == "extra:len256:accuracy" and len256.higher_is_better
    assert RunSummary.from_dict({"extra_tests": {"len256": {"accuracy": 0.5}}}).value(len256) == 0.5
    assert s.value(len256) is None
    assert [m.key for m in METRICS if m.higher_is_better] == ["accuracy", "macro_f1", "weight_sparsity"]
    assert {m.key for m in METRICS if m.kind == "timing"} == {"train_seconds", "latency_ms", "energy_wh", "co2e_g"}
    assert [m.key for m in METRICS if not m.judged] == ["energy_wh", "co2e_g", "weight_sparsity"]  # never a verdict
    written = RunSummary.from_dict(old).to_dict()
    assert "nonzero_parameters" not in written and "weight_sparsity" not in written  # not invented for old runs


def test_a_real_summary_json_round_trips(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["budget.steps=20", "eval_every=10", "log_every=10", "progress=false", "threads=1",
                                "techniques=[ema]"])
    result = run(recipe, out=tmp_path / "run")
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert result.summary.to_dict() == json.loads(json.dumps(result.summary.to_dict()))
    assert RunSummary.from_dict(on_disk).to_dict() == on_disk
    assert RunSummary.from_dict(on_disk) == result.summary
    # the keys summary.json has always had (a weight averager adds the trained weights' evaluation), and what
    # the run declares since task kinds exist: its kind and its metrics; and its energy estimate
    assert set(on_disk) == {"task", "model", "seed", "recipe_hash", "steps", "epochs_completed", "stop_reason",
                            "train_seconds", "wall_seconds_this_process", "nonfinite_steps", "test",
                            "test_trained_weights", "parameters", "model_size_bytes", "inference_latency",
                            "convergence", "target_accuracy", "task_kind", "metrics", "energy",
                            "nonzero_parameters", "weight_sparsity"}
    assert on_disk["task_kind"] == "classification" and result.summary.metrics == METRICS
    assert {"accuracy", "macro_f1", "nll", "ece", "brier", "per_class_f1", "confusion_matrix",
            "reliability", "loss"} <= set(on_disk["test"])
    s = result.summary
    assert s.steps == 20 and s.test.value("accuracy") == on_disk["test"]["accuracy"]
    assert s.cost is not None and s.cost.parameters == on_disk["parameters"]
    assert len(s.test.reliability.count) == 15 and sum(s.test.reliability.count) == 1000  # 1000 test samples


def test_unknown_keys_are_kept() -> None:
    data = {"test": {"accuracy": 0.5, "note": "text", "custom": [1, 2]}, "future_key": {"a": 1}}
    s = RunSummary.from_dict(data)
    assert s.other == {"future_key": {"a": 1}} and s.test.other == {"note": "text", "custom": [1, 2]}
    out = s.to_dict()
    assert out["future_key"] == {"a": 1} and out["test"] == data["test"]


def test_evaluation_values_are_numbers_only() -> None:
    ev = Evaluation.from_dict({"accuracy": 1, "flag": True, "nll": math.nan, "name": "x"})
    assert ev.value("accuracy") == 1.0 and ev.value("flag") is None and math.isnan(ev.value("nll"))
    assert ev.value("name") is None and ev.value("missing") is None


def test_metric_info_refuses_an_unknown_source_or_kind() -> None:
    with pytest.raises(ValueError, match="source"):
        MetricInfo("x", "x", True, source="train")
    with pytest.raises(ValueError, match="kind"):
        MetricInfo("x", "x", True, kind="speed")
    assert MetricInfo("mse", "MSE", False).direction == "lower" and MetricInfo("mse", "MSE", False).name == "mse"


def test_setting_reads_a_model_spec_and_says_where() -> None:
    s = AblationSetting.from_dict({"task": "mnist1d", "model": {"name": "cnn"}})
    assert s.where() == "mnist1d/cnn" and AblationSetting().where() == "this setting"
    assert list(s.card_dict()) == ["task", "model", "budget", "seeds", "machine", "recipe_hash", "eval_every",
                                   "contention"]


def test_a_pruned_run_reports_its_sparsity_and_non_zero_parameters(tmp_path: Path) -> None:
    # reference: counts by hand on the trained model's own tensors (zeros of the linear weights, non-zeros of
    # every parameter); the dense run of the same recipe is the control (no zero weight)
    pruned = ["budget.steps=12", "eval_every=12", "log_every=12", "progress=false", "threads=1", "model=mlp",
              "techniques=[{name: gradual_pruning, args: {final_sparsity: 0.8, start_step: 0, end_step: 10, "
              "every: 5}}]"]
    results = {name: run(load_recipe(None, overrides), out=tmp_path / name)
               for name, overrides in (("pruned", pruned), ("dense", pruned[:-1]))}
    for name, result in results.items():
        model = result.trainer.state.raw_model  # the model the summary measured
        weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in weights)
        nonzero = sum(int((p != 0).sum()) for p in model.parameters())
        s = result.summary
        assert s.cost is not None and s.cost.nonzero_parameters == nonzero
        assert s.cost.weight_sparsity == pytest.approx(zeros / sum(w.numel() for w in weights), abs=0)
        by_key = {m.key: m for m in METRICS}
        assert s.value(by_key["nonzero_parameters"]) == nonzero
        assert s.value(by_key["weight_sparsity"]) == s.cost.weight_sparsity
        on_disk = json.loads((tmp_path / name / "summary.json").read_text())
        assert on_disk["nonzero_parameters"] == nonzero and RunSummary.from_dict(on_disk) == s
    assert results["pruned"].summary.cost.weight_sparsity == pytest.approx(0.8, abs=1e-3)  # global, 0.8 of all
    assert results["dense"].summary.cost.weight_sparsity == 0.0
    assert results["dense"].summary.cost.nonzero_parameters == results["dense"].summary.cost.parameters
