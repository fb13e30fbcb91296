"""`tricklab tune`: the study driver finds a known optimum (an analytic objective computed from each trial's
recipe, written to the store by a backend of this file: reference, the closed-form argmax), resumes after an
interruption without repeating finished trials and retries the interrupted ones, prunes through the
``optuna_pruning`` technique (tested in tests/techniques/test_optuna_pruning.py), and the command line refuses bad
spaces with exit 2 before anything runs."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from tricklab.lab.ablate import load_base  # noqa: E402
from tricklab.lab.backends import RunJob, RunOutcome  # noqa: E402
from tricklab.lab.metrics import METRICS  # noqa: E402
from tricklab.lab.recipe import load_recipe, recipe_from_dict  # noqa: E402
from tricklab.lab.space import Space, parse_space  # noqa: E402
from tricklab.lab.store import Store  # noqa: E402
from tricklab.lab.tune import Objective, TuneConfig, optimize, trial_key  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ACCURACY = next(m for m in METRICS if m.key == "accuracy")
OPTIMUM_LR, OPTIMUM_BATCH = 3e-3, 64


def analytic_accuracy(recipe: dict) -> float:
    """The toy objective: a parabola in log10(lr) peaking at OPTIMUM_LR, plus 0.05 at OPTIMUM_BATCH."""
    lr, batch = recipe["optimizer"]["lr"], recipe["batch_size"]
    return 0.9 - 0.1 * (math.log10(lr) - math.log10(OPTIMUM_LR)) ** 2 + (0.05 if batch == OPTIMUM_BATCH else 0.0)


class Analytic:
    """A backend whose 'runs' write the analytic objective into the store (as a worker writes a run)."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.jobs: list[RunJob] = []
        self.executed: list[tuple[str, dict]] = []
        self.interrupt_after = interrupt_after

    def submit(self, job: RunJob) -> None:
        self.jobs.append(job)

    def completed(self) -> Iterator[RunOutcome]:
        while self.jobs:
            if self.interrupt_after is not None and len(self.executed) >= self.interrupt_after:
                raise KeyboardInterrupt  # the driver dies with trials in flight
            job = self.jobs.pop(0)
            value = analytic_accuracy(job.recipe)
            with Store(job.store_path) as store:
                run_id = store.claim(job.run_key, job.variant, "h", job.seed, job.recipe)
                store.finish(run_id, {}, {"val": {"accuracy": value}, "test": {"accuracy": value},
                                          "train_seconds": 0.0}, [])
            self.executed.append((job.run_key, {"lr": job.recipe["optimizer"]["lr"],
                                                "batch_size": job.recipe["batch_size"]}))
            yield RunOutcome(job.variant, job.seed, "done", value, 0.0)

    def cancel(self) -> None:
        self.jobs.clear()

    def __enter__(self) -> Analytic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _space(lr: object, batch: list[int]) -> Space:
    return Space(tuple(parse_space({"optimizer.lr": lr, "batch_size": batch})))


def _study(tmp_path: Path, sampler: str, trials: int, space: Space, backend: Analytic, jobs: int = 1):
    base = load_base(None, [])
    cfg = TuneConfig(trials=trials, sampler=sampler, pruner="none", jobs=jobs, sampler_seed=0)
    lines: list[str] = []
    result = optimize(base, space, Objective(ACCURACY, "val"), cfg, tmp_path / "tune", lines.append, backend)
    return result, lines


def test_grid_search_finds_the_known_optimum_exactly(tmp_path: Path) -> None:
    space = _space([1e-3, 3e-3, 1e-2], [32, 64])
    backend = Analytic()
    result, lines = _study(tmp_path, "grid", 50, space, backend)
    assert len(backend.executed) == 6 and "the grid has 6 points" in lines[0]
    assert result.best_values == {"optimizer.lr": OPTIMUM_LR, "batch_size": OPTIMUM_BATCH}
    assert result.best_value == pytest.approx(0.95)


@pytest.mark.parametrize("sampler", ["tpe", pytest.param("gp", marks=pytest.mark.slow)])
def test_bayesian_samplers_find_the_known_optimum(sampler: str, tmp_path: Path) -> None:
    """TPE and the Gaussian process (which fits a GP at every ask: slow on 2 cores) within 0.3 decades."""
    space = _space({"low": 1e-4, "high": 1e-1, "log": True}, [32, 64, 128])
    result, _ = _study(tmp_path, sampler, 30, space, Analytic())
    assert result.best_values["batch_size"] == OPTIMUM_BATCH
    assert abs(math.log10(result.best_values["optimizer.lr"]) - math.log10(OPTIMUM_LR)) < 0.3
    assert result.best_value > 0.94  # the optimum is 0.95


def test_an_interrupted_study_resumes_without_repeating_finished_trials(tmp_path: Path) -> None:
    space = _space({"low": 1e-4, "high": 1e-1, "log": True}, [32, 64, 128])
    first = Analytic(interrupt_after=3)
    with pytest.raises(KeyboardInterrupt):
        _study(tmp_path, "tpe", 8, space, first, jobs=2)
    study = optuna.load_study(study_name=_name(tmp_path), storage=_url(tmp_path))
    running = [t for t in study.get_trials() if t.state.name == "RUNNING"]
    assert len(running) == 2  # submitted, not finished when the driver died
    second = Analytic()
    result, lines = _study(tmp_path, "tpe", 8, space, second, jobs=2)
    assert "3 of 8 trials already finished" in " ".join(lines)
    keys_first = [k for k, _ in first.executed]
    keys_second = [k for k, _ in second.executed]
    assert not set(keys_first) & set(keys_second)  # no finished trial ran again
    assert len(keys_first) + len(keys_second) == 8
    trials = result.study.get_trials()
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert sorted(t.number for t in interrupted) == sorted(t.number for t in running)
    for t in interrupted:  # each interrupted trial's parameters were tried again, and finished
        retry = [r for r in trials if r.user_attrs.get("retry_of") == t.number]
        assert len(retry) == 1 and retry[0].params == t.params and retry[0].state.name == "COMPLETE"
    assert sum(t.state.name == "COMPLETE" and "repeat_of" not in t.user_attrs for t in trials) == 8
    with Store(tmp_path / "tune" / "store.sqlite") as store:
        rows = {r.run_key: r for r in store.runs()}
        assert all(rows[k].status == "done" for k in keys_first + keys_second)


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{(tmp_path / 'tune' / 'study.sqlite').resolve()}"


def _name(tmp_path: Path) -> str:
    return optuna.get_all_study_names(storage=_url(tmp_path))[0]


def test_a_second_driver_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    import fcntl

    from tricklab.errors import UserError

    (tmp_path / "tune").mkdir()
    with open(tmp_path / "tune" / "tune.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="another tricklab tune or search is working on"):
            _study(tmp_path, "tpe", 2, _space([1e-3, 1e-2], [32]), Analytic())


# ---------------------------------------------------------------------------------------------- the command
def cli(*args: str) -> tuple[int, str, str]:
    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(("space", "message"), [
    ("optimizer.lrr: {low: 0.001, high: 0.1}", "no key 'optimizer.lrr'"),
    ("optimizer.lr: {low: 0.1, high: 0.01}", "empty range"),
    ("optimizer.weight_decay: {low: 0.0, high: 0.1, log: true}", "log scale needs a positive range"),
    ("batch_size: {low: 16.0, high: 64.5}", "float range on a key that takes int"),
])
def test_bad_spaces_exit_2_before_any_trial(space: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(space + "\n", encoding="utf-8")
    code, _, err = cli("tune", str(ROOT / "recipes" / "mnist1d-cnn-paper.yaml"), "--space", str(path),
                       "--trials", "2", "--out", str(tmp_path / "out"))
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # spawns a worker process that trains (about 20 s on an idle 2-core machine)
def test_tune_end_to_end_on_real_runs(tmp_path: Path) -> None:
    """Two real trials (MNIST-1D, 40 steps, one worker process): the best recipe, the page, the store."""
    path = tmp_path / "space.yaml"
    path.write_text("optimizer.lr: [0.001, 0.01]\n", encoding="utf-8")
    out = tmp_path / "out"
    code, text, err = cli("tune", str(ROOT / "recipes" / "mnist1d-cnn-paper.yaml"), "budget.steps=40",
                          "eval_every=20", "log_every=20", "eval_batch_size=500", "--space", str(path),
                          "--trials", "2", "--sampler", "grid", "--pruner", "median", "--jobs", "1",
                          "--val-fraction", "0.2", "--out", str(out))
    assert code == 0, err
    assert "validation accuracy" in text and "confirm over fresh seeds: tricklab ablate" in text
    best = load_recipe(out / "best.yaml")
    with Store(out / "store.sqlite") as store:
        rows = store.runs()
        assert [r.status for r in rows] == ["done", "done"]
        values = {r.recipe["optimizer"]["lr"]: r.summary["val"]["accuracy"] for r in rows}
        assert all(any(t["name"] == "optuna_pruning" for t in r.recipe["techniques"]) for r in rows)
        assert all(r.seed == 1000 and r.recipe["data"]["val_fraction"] == 0.2 for r in rows)
    assert best.optimizer.lr == max(values, key=values.get)
    assert best.data.val_fraction == 0.0 and best.techniques == []  # the recipe as given, with the best value
    page = (out / "report.html").read_text(encoding="utf-8")
    assert 'data-plot="history"' in page and "Best recipe" in page
    assert recipe_from_dict(best.to_dict()).budget.steps == 40


def test_without_a_validation_split_the_objective_is_the_test_split_with_a_warning() -> None:
    from tricklab.lab.tune import resolve_objective

    lines: list[str] = []
    objective = resolve_objective(load_base(None, []), "accuracy", lines.append)
    assert objective.split == "test" and "overfits the test split" in lines[0]
    assert resolve_objective(load_base(None, ["data.val_fraction=0.2"]), "accuracy", lines.append).split == "val"
    assert len(lines) == 1
    with pytest.raises(Exception, match="not a metric of the lab"):
        resolve_objective(load_base(None, []), "acuracy", lines.append)


def test_trial_keys_name_the_study() -> None:
    assert trial_key("s", 3) == "s:trial-3"
