"""``optuna_pruning``: each evaluation is reported to the Optuna trial, and a trial the pruner stops ends
cleanly at that step (reference: the median rule computed by hand against a finished trial's values)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

optuna = pytest.importorskip("optuna")

from tricklab.data import InMemoryLoader  # noqa: E402
from tricklab.techniques.optuna_pruning import PRUNED, OptunaPruning  # noqa: E402
from tricklab.train import Trainer  # noqa: E402


def _tiny_trainer(technique: OptunaPruning, steps: int = 6) -> Trainer:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    return Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 16, seed=0),
                   techniques=[technique], eval_data=(x[:32], y[:32]), eval_every=2, max_steps=steps)


def _study_with_a_finished_trial(tmp_path: Path, value: float) -> tuple[str, int]:
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    study = optuna.create_study(storage=url, study_name="p", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=value, intermediate_values={2: value, 4: value, 6: value},
                                              params={}, distributions={}))
    return url, study.ask().number


def test_pruning_stops_a_trial_below_the_median_cleanly(tmp_path: Path) -> None:
    url, number = _study_with_a_finished_trial(tmp_path, 1.0)  # nothing beats accuracy 1.0
    technique = OptunaPruning(url, "p", number, "accuracy", "median", {"n_startup_trials": 1})
    state = _tiny_trainer(technique).fit()
    # the median rule: at step 2 the trial is below the median (1.0) of the finished trial's step-2 value
    assert state.step == 2 and state.stop_reason.startswith(PRUNED) and state.should_stop
    trial = optuna.load_study(study_name="p", storage=url).trials[number]
    assert list(trial.intermediate_values) == [2]
    assert trial.intermediate_values[2] == pytest.approx(state.history[-1]["eval_accuracy"])


def test_a_trial_above_the_median_runs_to_the_end_reporting_each_evaluation(tmp_path: Path) -> None:
    url, number = _study_with_a_finished_trial(tmp_path, 0.0)
    state = _tiny_trainer(OptunaPruning(url, "p", number, "accuracy", "median", {"n_startup_trials": 1})).fit()
    assert state.step == 6 and not state.should_stop
    trial = optuna.load_study(study_name="p", storage=url).trials[number]
    assert sorted(trial.intermediate_values) == [2, 4, 6]
