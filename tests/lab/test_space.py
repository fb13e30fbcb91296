"""Search spaces: parsing, every kind of bad space refused before anything runs (with the key named), Optuna
distributions and grids, and applying sampled values to a recipe (reference: the override path,
``load_recipe(..., overrides)``, which must give the same recipe)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tricklab.errors import ConfigError, UserError
from tricklab.lab.ablate import load_base
from tricklab.lab.recipe import load_recipe, recipe_from_dict
from tricklab.lab.space import Space, check_space, load_space, overrides_of, parse_space, technique_switch

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "recipes" / "mnist1d-cnn-paper.yaml"


def _check(text: str, tmp_path: Path) -> Space:
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    return load_space(path, load_recipe(PAPER))


def test_a_space_file_gives_typed_parameters(tmp_path: Path) -> None:
    space = _check("optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"
                   "batch_size: {low: 32, high: 128, step: 32}\n"
                   "schedule.name: [constant, cosine]\n"
                   "optimizer.weight_decay: {type: float, low: 0, high: 0.01, step: 0.005}\n"
                   "model.args.channels: [16, 25]\n", tmp_path)
    lr, bs, sched, wd, ch = space.params
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-1, True)
    assert (bs.kind, bs.grid()) == ("int", [32, 64, 96, 128])
    assert (sched.kind, sched.choices) == ("categorical", ("constant", "cosine"))
    assert wd.grid() == pytest.approx([0.0, 0.005, 0.01])
    assert ch.choices == (16, 25)
    dist = space.distributions()
    assert dist["optimizer.lr"].log and dist["batch_size"].step == 32 and dist["schedule.name"].choices == (
        "constant", "cosine")
    with pytest.raises(ConfigError, match="optimizer.lr: a grid search needs a finite set"):
        space.grid()


@pytest.mark.parametrize(("text", "message"), [
    ("optimizer.lrr: {low: 0.001, high: 0.1}", "no key 'optimizer.lrr'"),
    ("optimizer.lr: {low: 0.1, high: 0.1}", "empty range"),
    ("optimizer.lr: {low: 0.1, high: 0.01}", "empty range"),
    ("schedule.name: []", "empty range"),
    ("optimizer.weight_decay: {low: 0.0, high: 0.1, log: true}", "log scale needs a positive range"),
    ("optimizer.lr: {low: -1, high: 1, log: true}", "log scale needs a positive range"),
    ("batch_size: {low: 16.0, high: 64.5}", "float range on a key that takes int"),
    ("optimizer.lr: [fast, slow]", "optimizer.lr: expected a number"),
    ("deterministic: {low: 0, high: 1}", "int range on a key that takes bool"),
    ("batch_size: {low: 16, high: 64, step: 100}", "step 100 must be positive and at most"),
    ("budget.steps: {low: 100, high: 6000}", "cannot be tuned"),
    ("seed: [0, 1]", "cannot be tuned"),
    ("model.args.chanels: [8, 16]", "has no argument 'chanels'"),
    ("schedule.name: [constant, cosinus]", "unknown schedule 'cosinus'"),
    ("techniques.ema.decay: {low: 0.9, high: 0.99}", "techniques"),
    ("optimizer.lr: {low: 0.001}", "needs low and high"),
    ("optimizer.lr: {low: 0.001, high: 0.1, scale: log}", "unknown field"),
    ("optimizer.lr: 0.01", "expected a range"),
    ("[1, 2]", "a space is a YAML mapping"),
])
def test_bad_spaces_are_refused_naming_the_key(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=message):
        _check(text + "\n", tmp_path)


def test_a_technique_argument_of_the_recipe_is_a_key(tmp_path: Path) -> None:
    base = load_recipe(PAPER, ["techniques=[{name: label_smoothing, args: {eps: 0.1}}]"])
    path = tmp_path / "s.yaml"
    path.write_text("techniques.label_smoothing.eps: {low: 0.0, high: 0.2}\n", encoding="utf-8")
    space = load_space(path, base)
    d = space.apply(base.to_dict(), {"techniques.label_smoothing.eps": 0.05})
    assert d["techniques"] == [{"name": "label_smoothing", "args": {"eps": 0.05}}]
    path.write_text("techniques.label_smoothing.epsilon: {low: 0.0, high: 0.2}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no argument 'epsilon'"):
        load_space(path, base)
    path.write_text("techniques.label_smoothing.eps: [small, large]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="eps: expected a number"):
        load_space(path, base)


def test_applied_values_equal_the_same_overrides(tmp_path: Path) -> None:
    """Reference: the recipe the override path builds from the same keys and values."""
    base = load_recipe(PAPER)
    values = {"optimizer.lr": 0.003, "batch_size": 64, "schedule.name": "cosine", "model.args.channels": 16}
    space = _check("optimizer.lr: {low: 1.0e-4, high: 1.0e-1, log: true}\nbatch_size: [32, 64]\n"
                   "schedule.name: [constant, cosine]\nmodel.args.channels: [16, 25]\n", tmp_path)
    applied = recipe_from_dict(space.apply(base.to_dict(), values))
    overrides = overrides_of(base.to_dict(), values)
    assert applied == load_recipe(PAPER, overrides)
    assert applied.optimizer.lr == 0.003 and applied.batch_size == 64 and applied.model.args == {"channels": 16}
    assert base.optimizer.lr == 0.01  # the base is not changed


def test_switches_add_techniques_in_the_listed_order_with_their_arguments() -> None:
    base = load_base(None, [])
    space = check_space(Space((technique_switch("ema", {"decay": 0.9}), technique_switch("grad_clip"),
                               technique_switch("mixup"), technique_switch("cutmix"))), base)
    d = space.apply(base.to_dict(), {"techniques.ema": True, "techniques.grad_clip": False,
                                     "techniques.mixup": True, "techniques.cutmix": True})
    assert [(t["name"], t["args"]) for t in d["techniques"]] == [("ema", {"decay": 0.9}), ("mixup", {}),
                                                                 ("cutmix", {})]
    # a conflicting set is not refused by the space (the search prunes it); the variant spells the techniques
    assert overrides_of(base.to_dict(), {"techniques.ema": True}, space) == [
        'techniques=[{"name": "ema", "args": {"decay": 0.9}}]']


def test_parse_space_refuses_duplicates_and_non_mappings() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        parse_space({"schedule.name": ["cosine", "cosine"]})
    with pytest.raises(ConfigError, match="a space is a YAML mapping"):
        parse_space({})


def test_the_committed_spaces_validate() -> None:
    spaces = sorted((ROOT / "recipes" / "spaces").glob("*.yaml"))
    assert spaces
    for path in spaces:
        assert load_space(path, load_recipe(PAPER)).params
