"""Low-label training from a recipe (issue 19 item 1): ``data.labels_per_class`` keeps k labels per class and
makes the rest unlabelled for the trainer's semi-supervised techniques. Reference: tricklab.data.low_label's
``low_label_split`` with the recipe's seed (its own tests check stratification and seeding)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from tricklab.data import load_dataset
from tricklab.data.low_label import UNLABELLED, SemiSupervisedLoader, low_label_split
from tricklab.errors import ConfigError
from tricklab.lab.build import prepare_data
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.tasks import TASKS
from tricklab.train import distributed

LOW = ["task=digits", "model.name=mlp", "data.labels_per_class=5", "data.unlabelled_ratio=3", "batch_size=20",
       "seed=4"]


def _prepared(overrides: list[str]):  # noqa: ANN202 - PreparedData
    recipe = load_recipe(None, overrides)
    return recipe, prepare_data(TASKS.get(recipe.task), recipe, distributed.DistInfo(0, 1, 0))


def test_batches_hold_the_seeded_labelled_examples_and_unlabelled_ones() -> None:
    recipe, data = _prepared(LOW)
    ds = load_dataset("digits")
    split = low_label_split(ds.y_train, 5, 4, 10)
    assert isinstance(data.loader, SemiSupervisedLoader)
    assert torch.equal(data.train_targets, ds.y_train[split.labelled])
    seen_labelled, seen_unlabelled = set(), 0
    rows = {tuple(r.flatten().tolist()): i for i, r in enumerate(ds.x_train)}  # map inputs back to training indices
    assert len(rows) == len(ds.x_train)  # no duplicate images, so the map is one-to-one
    for _ in range(len(data.loader)):
        x, y = data.loader.next_batch()
        assert x.shape[0] == 20 * (1 + 3)
        assert (y[:20] != UNLABELLED).all() and (y[20:] == UNLABELLED).all()
        for xi, yi in zip(x[:20], y[:20]):
            i = rows[tuple(xi.flatten().tolist())]
            assert int(ds.y_train[i]) == int(yi)  # the labelled examples keep their true labels
            seen_labelled.add(i)
        seen_unlabelled += 60
    assert seen_labelled == set(split.labelled.tolist())  # only the k-per-class examples are ever labelled
    assert seen_unlabelled >= len(split.unlabelled) - 60  # one epoch = one pass over the unlabelled examples


def test_a_pseudo_label_run_trains_on_the_low_label_split(tmp_path: Path) -> None:
    result = run(load_recipe(None, [*LOW, "budget.steps=30", "techniques=[pseudo_label]"]), tmp_path / "run")
    assert result.summary.steps == 30 and 0.0 <= result.summary.test.value("accuracy") <= 1.0


def test_unset_low_label_keys_leave_the_recipe_hash_as_before() -> None:
    recipe = load_recipe(None, ["task=digits"])
    d = recipe.to_dict()
    for k in ("seed", "seeds", "progress", "threads"):
        d.pop(k)
    for k in ("task_args", "robustness", "faithfulness"):
        if not d.get(k):
            d.pop(k, None)
    d["data"] = {k: v for k, v in d["data"].items() if k not in ("labels_per_class", "unlabelled_ratio")}
    assert recipe.hash() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert load_recipe(None, ["task=digits", "data.labels_per_class=5"]).hash() != recipe.hash()


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.unlabelled_ratio=3"], "data.labels_per_class is not"),
    (["data.labels_per_class=0"], "positive integer"),
    (["data.labels_per_class=2", "batch_size=64"], "lower batch_size"),
    (["data.labels_per_class=1000", "batch_size=8"], "fewer than 1000 labels per class"),
])
def test_bad_low_label_settings_are_explained(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _prepared(["task=digits", "model.name=mlp", *overrides])


def test_regression_targets_are_refused(tmp_path: Path) -> None:
    rows = ["x1,x2,price"] + [f"{i},{i % 3},{0.5 * i}" for i in range(40)]
    (tmp_path / "houses.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ConfigError, match="class labels"):
        _prepared(["task=files", f"data.args.path={tmp_path / 'houses.csv'}", "data.args.target=price",
                   "data.args.format=csv", "data.labels_per_class=2", "batch_size=4"])
