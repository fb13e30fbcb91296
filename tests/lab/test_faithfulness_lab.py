"""Faithfulness of attributions as run metrics (issue 18 item 3). Reference: tricklab.explain's attribute and
faithfulness_scores called directly on the trained model and the same test examples (their own tests check
them against captum and the curve definitions)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tricklab.data import load_dataset
from tricklab.errors import ConfigError
from tricklab.explain import attribute, faithfulness_scores
from tricklab.explain.lab_faithfulness import FaithfulnessConfig
from tricklab.lab.analysis import metrics_for
from tricklab.lab.build import validate
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.summary import RunSummary


def test_a_run_records_the_faithfulness_of_its_attributions(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["task=digits", "model.name=mlp", "budget.steps=60", "techniques=[]",
                                "faithfulness={methods: [gradient, random], examples: 20, steps: 8}"])
    result = run(recipe, tmp_path / "run")
    s = result.summary
    model = result.trainer.state.raw_model.eval()
    x = load_dataset("digits").x_test[:20]  # the lab's test split of digits, as loaded
    with torch.no_grad():
        pred = model(x).argmax(-1)
    direct = faithfulness_scores(model, x, attribute("gradient", model, x, pred).detach(), pred, steps=8)
    assert s.faithfulness is not None
    assert s.faithfulness.value("gradient_deletion_auc") == pytest.approx(float(direct["deletion_auc"].mean()))
    assert s.faithfulness.value("gradient_insertion_auc") == pytest.approx(float(direct["insertion_auc"].mean()))
    # a trained model's gradients are more faithful than a random ranking of the features
    assert s.faithfulness.value("gradient_insertion_auc") > s.faithfulness.value("random_insertion_auc")
    keys = {m.key: m for m in metrics_for([s])}
    assert not keys["explain:gradient_deletion_auc"].higher_is_better
    assert keys["explain:gradient_insertion_auc"].higher_is_better
    assert RunSummary.from_dict(s.to_dict()).faithfulness == s.faithfulness


def test_bad_faithfulness_sections_are_refused() -> None:
    with pytest.raises(ConfigError, match="attribution method"):
        FaithfulnessConfig(methods=["gradcam"])
    with pytest.raises(ConfigError, match="faithfulness.examples"):
        FaithfulnessConfig(examples=0)
    with pytest.raises(ConfigError, match="runs its own loop"):
        validate(load_recipe(None, ["task=bandit", "techniques=[]", "faithfulness={methods: [gradient]}"]))
