"""Every ready recipe in recipes/ validates, and the ablation baseline file equals the embedded one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tricklab.lab.ablate import BASELINE_RECIPE
from tricklab.lab.recipe import load_recipe, recipe_from_dict
from tricklab.lab.build import validate

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


def test_there_are_ready_recipes() -> None:
    assert len(RECIPES) >= 4


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_validates(path: Path) -> None:
    recipe = load_recipe(path)
    task = validate(recipe)  # every registry name resolves and the techniques compose
    assert task.name == recipe.task


def test_ablation_baseline_file_matches_the_embedded_baseline() -> None:
    path = Path(__file__).resolve().parents[2] / "recipes" / "mnist1d-ablation.yaml"
    assert load_recipe(path) == recipe_from_dict(dict(BASELINE_RECIPE))


def test_digits_recipe_trains(tmp_path: Path) -> None:
    from tricklab.lab.runner import run

    r = run(load_recipe(RECIPES[[p.name for p in RECIPES].index("digits-cnn2d.yaml")], ["progress=false"]),
            out=tmp_path / "run")
    assert r.summary.test.value("accuracy") > 0.9  # 8x8 digits: a small CNN gets well above 90% in 600 steps
