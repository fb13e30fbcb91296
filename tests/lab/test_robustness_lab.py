"""Robustness as a lab metric: a run with a ``robustness:`` section records accuracy under FGSM, PGD and
Gaussian noise, declares those metrics, and the report shows them.

References: :meth:`tricklab.robust.RobustnessConfig.evaluate` (itself checked against a slow PGD loop and the
FGSM closed form in tests/robust/test_attacks.py) run again on the weights the run saved: the final weights,
or with EMA the averaged ones (``model.eval.safetensors``), which are the weights every test metric uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tricklab.cli import table_keys
from tricklab.data import load_dataset
from tricklab.lab.analysis import StoredRun, summarize
from tricklab.lab.recipe import load_recipe
from tricklab.lab.report import render_report
from tricklab.lab.runner import run
from tricklab.lab.summary import AblationSetting
from tricklab.models import build_model

ROBUST = "robustness={eps: 0.1, pgd_steps: 3, noise_sigmas: [0.2, 0.5], max_examples: 300, batch_size: 128}"


@pytest.mark.parametrize("ema", [False, True])
def test_a_run_records_robustness_of_its_evaluation_weights(tmp_path: Path, ema: bool) -> None:
    recipe = load_recipe(None, ["budget.steps=40", "eval_every=20", "log_every=20", "progress=false", "threads=1",
                                ROBUST, "techniques=[{name: ema, args: {decay: 0.9}}]" if ema else "techniques=[]"])
    result = run(recipe, out=tmp_path / "run")
    s = result.summary
    names = ["fgsm_accuracy", "pgd_accuracy", "noise_accuracy_0.2", "noise_accuracy_0.5"]
    assert s.robustness is not None and list(s.robustness.values) == names
    assert [m.key for m in s.metrics if m.source == "robust"] == [f"robust:{n}" for n in names]
    assert s.value(next(m for m in s.metrics if m.key == "robust:pgd_accuracy")) == s.robustness.value("pgd_accuracy")
    # the reference: the same evaluation on the weights the run saved
    data = load_dataset("mnist1d")
    model = build_model("cnn", data.input_shape, data.num_classes)
    model.load_state_dict(load_file(tmp_path / "run" / ("model.eval.safetensors" if ema else "model.safetensors")))
    torch.manual_seed(123)  # the evaluation draws from its own seeded generators, not the global RNG
    again = recipe.robustness.evaluate(model, data.x_test, data.y_test)
    assert again == pytest.approx(s.robustness.values, abs=1e-12)
    assert s.robustness.value("pgd_accuracy") <= s.robustness.value("fgsm_accuracy") + 0.05

    # the report draws the robustness section; the terminal table lists the robust metrics
    summary = summarize([StoredRun(1, "baseline", 0, s, result.history),
                         StoredRun(2, "other", 0, s, result.history)])
    assert [m.key for m in summary.robust_metrics] == [f"robust:{n}" for n in names]
    assert table_keys(summary)[-4:] == tuple(f"robust:{n}" for n in names)
    page = render_report(summary, {"baseline": [result.history]}, AblationSetting(task="mnist1d", model="cnn"))
    assert 'data-plot="robustness"' in page and "PGD-3 accuracy (L∞ ε=0.1)" in page
