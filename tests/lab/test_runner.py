"""The runner's pieces: steps to the target interpolated between evaluations, technique arguments resolved
into the recipe (and its hash), composition checked before any data is loaded."""

from __future__ import annotations

import pytest

from tricklab.errors import ConflictError
from tricklab.lab import runner
from tricklab.lab.build import resolve_techniques
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import steps_to_target
from tricklab.techniques import EMA


def _rows(*evals: tuple[int, float, float]) -> list[dict]:
    # training rows without an evaluation in between, as the trainer logs them
    rows = []
    for step, seconds, acc in evals:
        rows.append({"step": step - 50, "seconds": seconds - 0.1, "train_loss": 1.0})
        rows.append({"step": step, "seconds": seconds, "eval_accuracy": acc})
    return rows


def test_steps_to_target_interpolates_between_evaluations() -> None:
    history = _rows((500, 1.0, 0.80), (1000, 2.0, 0.88), (1500, 3.0, 0.93), (2000, 4.0, 0.95))
    c = steps_to_target(history, 0.90, 500)
    # between (1000, 0.88) and (1500, 0.93): 1000 + (0.90 - 0.88) / (0.93 - 0.88) * 500 = 1200
    assert c is not None and c.interpolated and c.step == pytest.approx(1200.0)
    assert c.seconds == pytest.approx(2.4) and c.value == 0.93
    assert (c.step_evaluated, c.resolution) == (1500, 500)
    # a target reached at the first evaluation: nothing below it to interpolate from
    first = steps_to_target(history, 0.75, 500)
    assert first is not None and not first.interpolated and first.step == 500
    assert steps_to_target(history, 0.99, 500) is None
    # two runs crossing anywhere inside one interval no longer tie at exactly the same count
    other = steps_to_target(_rows((500, 1.0, 0.80), (1000, 2.0, 0.89), (1500, 3.0, 0.91)), 0.90, 500)
    assert other is not None and other.step == pytest.approx(1250.0) and other.step_evaluated == c.step_evaluated


def test_resolved_technique_arguments_enter_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = load_recipe(None, ["techniques=[ema, {name: label_smoothing, args: {eps: 0.2}}]"])
    resolved = resolve_techniques(recipe)
    assert resolved.techniques[0].args == {"decay": 0.999, "warmup": True, "every": 1}
    assert resolved.techniques[1].args == {"eps": 0.2}  # a given argument stays
    assert resolve_techniques(resolved) == resolved  # resolving again changes nothing
    assert resolved.hash() != recipe.hash()
    # a changed default is a changed recipe: the same YAML now hashes differently
    monkeypatch.setattr(EMA.__init__, "__defaults__", (0.99, True, 1))
    again = resolve_techniques(recipe)
    assert again.techniques[0].args["decay"] == 0.99 and again.hash() != resolved.hash()


def test_conflicts_are_refused_before_any_data_is_loaded(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was loaded before the techniques were checked")

    monkeypatch.setattr(runner, "prepare_data", no_data)
    recipe = load_recipe(None, ["techniques=[mixup, cutmix]"])  # two target mixers
    with pytest.raises(ConflictError, match="mixup.*cutmix|cutmix.*mixup"):
        runner.run(recipe, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
