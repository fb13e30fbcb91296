"""Recipes: YAML into dataclasses, overrides, validation messages, the hash."""

from __future__ import annotations

import pytest

from tricklab.errors import ConfigError
from tricklab.lab.recipe import Recipe, apply_override, load_recipe, recipe_from_dict


def test_default_recipe_is_the_paper_model_and_matches_its_file() -> None:
    from pathlib import Path

    r = load_recipe(None)
    assert (r.task, r.model.name, r.batch_size, r.optimizer.name, r.optimizer.lr) == (
        "mnist1d", "cnn", 100, "adam", 0.01)
    assert r.budget.steps == 6000 and r.schedule.name == "cosine"
    assert [t.name for t in r.techniques] == ["label_smoothing"]
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    assert load_recipe(recipes / "mnist1d-cnn.yaml") == r
    paper = load_recipe(recipes / "mnist1d-cnn-paper.yaml")
    assert paper.schedule.name == "constant" and paper.techniques == []


def test_overrides_parse_yaml_values() -> None:
    r = load_recipe(None, ["optimizer.lr=1e-3", "budget.steps=10", "techniques=ema,grad_clip",
                           "model.args={channels: 8}", "eval_every=null"])
    assert r.optimizer.lr == pytest.approx(1e-3)  # "1e-3" is a string to PyYAML; coerced to float
    assert r.budget.steps == 10 and r.eval_every is None
    assert [t.name for t in r.techniques] == ["ema", "grad_clip"]
    assert r.model.args == {"channels": 8}


def test_yaml_file_and_round_trip(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("task: digits\nmodel: cnn2d\ntechniques:\n  ema: {decay: 0.99}\nbudget: 100\n")
    r = load_recipe(path)
    assert r.model.name == "cnn2d" and r.techniques[0].args == {"decay": 0.99} and r.budget.steps == 100
    again = recipe_from_dict(__import__("yaml").safe_load(r.to_yaml()))
    assert again == r and again.hash() == r.hash()


def test_hash_ignores_seed_only() -> None:
    a, b = load_recipe(None, ["seed=1"]), load_recipe(None, ["seed=2"])
    assert a.hash() == b.hash()
    assert load_recipe(None, ["optimizer.lr=0.1"]).hash() != a.hash()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=ten", "batch_size: expected an integer"),
        ("deterministic=maybe", "deterministic: expected true/false"),
        ("optimizer.lrr=0.1", "unknown key 'lrr' (did you mean 'lr'?)"),
        ("budget.steps=0", "budget.steps must be a positive integer"),
        ("data.val_fraction=1.5", "data.val_fraction must be in [0, 1)"),
        ("novalue", "must look like key=value"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_recipe(None, [override])
    assert message in str(info.value)


def test_empty_budget_is_refused() -> None:
    with pytest.raises(ConfigError, match="set one of budget.steps"):
        recipe_from_dict({"budget": {}})


def test_apply_override_creates_nested_keys() -> None:
    d: dict = {}
    apply_override(d, "model.args.channels=4")
    assert d == {"model": {"args": {"channels": 4}}}
    assert isinstance(Recipe(), Recipe)
