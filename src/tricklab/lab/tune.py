"""`tricklab tune`: hyperparameter optimization of a recipe on Optuna.

The driver samples (TPE, a Gaussian process, random or grid), the runs train where the ablations train (the
local process pool or a Ray cluster, :mod:`tricklab.lab.backends`), each into the lab store ``store.sqlite``
of the output folder (variant ``trial-N``), and the study lives in an Optuna SQLite storage beside it
(``study.sqlite``, or ``--storage``). Each run reports its evaluation metric at every evaluation through the
``optuna_pruning`` technique, so Hyperband or the median rule can stop a trial early; a pruned run stops
cleanly and is recorded like any other.

Resuming: the same command continues the study from its storage. Finished trials (complete, pruned, failed)
count towards ``--trials`` and are never repeated; a trial that was running when the driver was killed is
marked failed (``interrupted``) and its parameters are tried again. One driver works on a study at a time
(a lock file in the output folder).

The objective is a declared metric (:data:`tricklab.lab.metrics.METRICS`) of the final model on the
validation split when the task has one (``--val-fraction`` carves one from the training set), else on the
test split, with a warning: choosing by test accuracy overfits the test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import ConflictError, UserError
from tricklab.io import atomic_write_text
from tricklab.lab.backends import Backend, LocalPool, RunJob, RunOutcome
from tricklab.lab.build import prepare_data, validate
from tricklab.lab.metrics import METRICS, MetricInfo
from tricklab.lab.recipe import Recipe, recipe_from_dict
from tricklab.lab.space import Space
from tricklab.lab.store import Store
from tricklab.lab.summary import RunSummary
from tricklab.lab.tasks import TASKS
from tricklab.techniques.optuna_pruning import PRUNED, make_pruner, open_storage
from tricklab.train.distributed import DistInfo

__all__ = ["SAMPLERS", "Objective", "StudyResult", "TuneConfig", "optimize", "resolve_objective"]

SAMPLERS = ("tpe", "gp", "random", "grid")
#: Trial runs use this seed unless told otherwise: `tricklab ablate --seeds N` (seeds 0..N-1) then confirms
#: the winner on seeds the tuning never saw.
TRIAL_SEED = 1000


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise UserError("tuning needs optuna: pip install 'tricklab[tune]'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ------------------------------------------------------------------------------------------- objective
@dataclass(frozen=True)
class Objective:
    """A metric of the final model, and the split it is read from (``val`` or ``test``; ``run`` metrics
    such as training time come from the run itself)."""

    metric: MetricInfo
    split: str

    @property
    def direction(self) -> str:
        return "maximize" if self.metric.higher_is_better else "minimize"

    @property
    def prunable(self) -> bool:
        return self.split != "run"  # the evaluations during training report the same metric

    def describe(self) -> str:
        where = {"val": "validation", "test": "test", "run": "run"}[self.split]
        return f"{where} {self.metric.name}"

    def value(self, summary: RunSummary) -> float | None:
        return summary.metric(self.split, self.metric.name)


def _has_validation(recipe: Recipe) -> bool:
    if recipe.data.val_fraction > 0:
        return True
    return prepare_data(TASKS.get(recipe.task), recipe, DistInfo()).val_data is not None


def resolve_objective(recipe: Recipe, metric: str, say: Callable[[str], Any] = print) -> Objective:
    """The objective ``metric`` (a declared metric key) on the validation split when ``recipe``'s task has
    one, else on the test split with a warning."""
    info = next((m for m in METRICS if m.key == metric and m.source in ("test", "run")), None)
    if info is None:
        keys = [m.key for m in METRICS if m.source in ("test", "run")]
        raise UserError(f"--metric {metric!r} is not a metric of the lab; choose one of {keys}")
    if info.source == "run":
        return Objective(info, "run")
    if _has_validation(recipe):
        return Objective(info, "val")
    say(f"warning: task {recipe.task!r} has no validation split here, so the objective is the TEST {info.name}; "
        f"choosing settings by test accuracy overfits the test split. Carve a validation split from the "
        f"training set with --val-fraction 0.2 (data.val_fraction).")
    return Objective(info, "test")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class TuneConfig:
    trials: int
    sampler: str = "tpe"
    pruner: str = "hyperband"
    storage: str | None = None  # default: sqlite:///<out>/study.sqlite
    study_name: str | None = None  # default: derived from the recipe, the space and the objective
    jobs: int = 1
    seed: int = TRIAL_SEED
    sampler_seed: int = 0

    def check(self) -> None:
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}")
        if self.jobs < 1:
            raise UserError(f"--jobs must be at least 1, got {self.jobs}")
        if self.sampler not in SAMPLERS:
            raise UserError(f"--sampler {self.sampler!r}: choose one of {list(SAMPLERS)}")
        if self.storage is not None and not self.storage.startswith(("sqlite:///", "postgresql", "mysql")):
            raise UserError(f"--storage {self.storage!r}: give a database URL, e.g. sqlite:///runs/tune/study.sqlite")


@dataclass
class StudyResult:
    study: Any  # optuna.Study
    objective: Objective
    best_values: dict[str, Any] | None
    best_value: float | None
    best_trial: int | None
    ran: int  # trials that ran in this invocation


def _sampler(cfg: TuneConfig, seed: int) -> Any:
    optuna = _optuna()
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=cfg.jobs > 1)
    if cfg.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    # grid: every point is queued in the study when it is created (see _open_study); Optuna's GridSampler
    # stops the study from inside tell() when the grid is exhausted, which only works under study.optimize
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner_spec(cfg: TuneConfig, base: Recipe, objective: Objective) -> tuple[str, dict[str, Any]]:
    """The pruner's name and arguments; the resource is the optimizer step of each evaluation."""
    if cfg.pruner == "none" or not objective.prunable or base.eval_every is None:
        return "none", {}
    if cfg.pruner == "hyperband":
        top = base.budget.steps if base.budget.steps is not None else "auto"
        return "hyperband", {"min_resource": base.eval_every, "max_resource": top, "reduction_factor": 3}
    if cfg.pruner == "median":
        return "median", {"n_startup_trials": 5, "n_warmup_steps": base.eval_every}
    raise UserError(f"--pruner {cfg.pruner!r}: choose one of hyperband, median, none")


def study_name(base: Recipe, space: Space, objective: Objective) -> str:
    text = json.dumps([base.hash(), base.seed, [dataclasses.asdict(p) for p in space.params],
                       objective.metric.key, objective.split], sort_keys=True, default=str)
    return "tricklab-" + hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _driver_lock(out: Path) -> Iterator[None]:
    """One driver per output folder: a second one would take the first's running trials for dead ones."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tune.lock", "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another tricklab tune or search is working on {out}; wait for it or choose "
                            f"another --out") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------- the study
def _open_study(cfg: TuneConfig, out: Path, name: str, objective: Objective, space: Space,
                pruner: tuple[str, dict[str, Any]]) -> Any:
    optuna = _optuna()
    url = cfg.storage or f"sqlite:///{(out / 'study.sqlite').resolve()}"
    study = optuna.create_study(storage=open_storage(url), study_name=name, load_if_exists=True,
                                direction=objective.direction, pruner=make_pruner(*pruner))
    # a resumed study must not replay the random start of the first invocation: the seed moves on with it
    study.sampler = _sampler(cfg, cfg.sampler_seed + len(study.get_trials(deepcopy=False)))
    if study.direction.name.lower() != objective.direction:
        raise UserError(f"study {name!r} in {url} was created to {study.direction.name.lower()}; "
                        f"the objective {objective.describe()} asks to {objective.direction}")
    study.set_user_attr("objective", objective.describe())
    study.set_user_attr("storage_url", url)
    if cfg.sampler == "grid" and not study.user_attrs.get("grid_queued"):
        grid = space.grid()
        for point in itertools.product(*grid.values()):
            study.enqueue_trial(dict(zip(grid, point)))
        study.set_user_attr("grid_queued", True)
    return study


def _counts(trial: Any) -> bool:
    """Whether a finished trial counts towards --trials: it ran (complete, pruned, or failed by itself)."""
    attrs = trial.user_attrs
    if attrs.get("conflict") or attrs.get("repeat_of") is not None or attrs.get("interrupted"):
        return False
    return trial.state.name in ("COMPLETE", "PRUNED", "FAIL")


def _recover(study: Any, store_path: Path, say: Callable[[str], Any]) -> None:
    """Trials left 'running' by a killed driver: mark them failed (interrupted) and queue their parameters
    again; their store rows are marked failed too. Safe because this driver holds the folder's lock."""
    optuna = _optuna()
    storage = open_storage(study.user_attrs["storage_url"])
    study_id = storage.get_study_id_from_name(study.study_name)
    with Store(store_path) as store:
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            storage.set_trial_user_attr(trial_id, "interrupted", True)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            row = store.get(trial_key(study.study_name, t.number))
            if row is not None and row.status == "running":
                store.fail(row.id, "interrupted: the driver stopped; its parameters are tried again")
            say(f"trial {t.number} was interrupted when the study stopped; its parameters are queued again")


def trial_key(name: str, number: int) -> str:
    return f"{name}:trial-{number}"


def _check_store(store_path: Path, name: str) -> None:
    with Store(store_path) as store:
        existing = store.get_meta("study_name")
        if existing is not None and existing != name:
            raise UserError(f"{store_path.parent} holds another study ({existing}): a different recipe, space or "
                            f"objective; choose another --out, or the same recipe, space and objective")
        store.set_meta("study_name", name)
        store.set_meta("kind", "tune")


# ------------------------------------------------------------------------------------------------ driving
@dataclass
class _Driver:
    study: Any
    space: Space
    base: dict[str, Any]
    objective: Objective
    cfg: TuneConfig
    out: Path
    pruner: tuple[str, dict[str, Any]]
    say: Callable[[str], Any]
    in_flight: dict[str, Any] = dataclasses.field(default_factory=dict)
    started: float = dataclasses.field(default_factory=time.perf_counter)
    ran: int = 0
    skipped_in_a_row: int = 0
    # trials whose recipe is the same as a trial in flight: told its result when it finishes
    waiting: dict[str, list[Any]] = dataclasses.field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        return self.out / "store.sqlite"

    def counted(self) -> int:
        return sum(1 for t in self.study.get_trials(deepcopy=False) if _counts(t))

    def trial_recipe(self, values: dict[str, Any]) -> Recipe:
        d = self.space.apply(self.base, values)
        d.update(seed=self.cfg.seed, progress=False)
        return recipe_from_dict(d)

    def _skip(self, trial: Any, attr: str, value: Any, what: str, tell: dict[str, Any]) -> None:
        trial.set_user_attr(attr, value)
        self.study.tell(trial, **tell)
        self.skipped_in_a_row += 1
        self.say(f"trial {trial.number}: {what}")

    def exhausted(self) -> bool:
        """A grid search has asked for every point of its grid."""
        waiting = self.study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.WAITING,))
        return self.cfg.sampler == "grid" and not waiting

    def launch(self, pool: Backend) -> bool:
        """Ask for a trial and submit its run; False when the trial needed no run (a conflicting technique
        set, pruned at once; or the recipe of a finished trial, told the same value)."""
        optuna = _optuna()
        trial = self.study.ask(self.space.distributions())
        recipe = self.trial_recipe(trial.params)
        try:
            validate(recipe)
        except ConflictError as e:
            self._skip(trial, "conflict", str(e), f"skipped, the techniques do not compose ({e})",
                       {"state": optuna.trial.TrialState.PRUNED})
            return False
        trial.set_user_attr("recipe_hash", recipe.hash())
        same = self._finished_with(recipe.hash())
        if same is not None:
            self._skip(trial, "repeat_of", same.number, f"same recipe as trial {same.number} "
                       f"({self.objective.describe()} {same.value:.4f}); not run again", {"values": same.value})
            return False
        running = next((t for t in self.in_flight.values() if t.user_attrs.get("recipe_hash") == recipe.hash()), None)
        if running is not None:
            trial.set_user_attr("repeat_of", running.number)
            self.waiting.setdefault(recipe.hash(), []).append(trial)
            self.skipped_in_a_row += 1
            return False
        self.skipped_in_a_row = 0
        pool.submit(self._job(trial, recipe))
        self.in_flight[f"trial-{trial.number}"] = trial
        return True

    def _finished_with(self, recipe_hash: str) -> Any:
        done = self.study.get_trials(deepcopy=False, states=(_optuna().trial.TrialState.COMPLETE,))
        return next((t for t in done if t.user_attrs.get("recipe_hash") == recipe_hash), None)

    def _job(self, trial: Any, recipe: Recipe) -> RunJob:
        d = recipe.to_dict()
        if self.pruner[0] != "none":
            d["techniques"] = [*d["techniques"], {"name": "optuna_pruning", "args": {
                "storage": self.study.user_attrs["storage_url"], "study_name": self.study.study_name,
                "trial_number": trial.number, "metric": self.objective.metric.name, "pruner": self.pruner[0],
                "pruner_args": self.pruner[1]}}]
        threads = max(1, (os.cpu_count() or 1) // self.cfg.jobs)
        d["threads"] = d.get("threads") or threads
        name = f"trial-{trial.number}"
        return RunJob(str(self.store_path), trial_key(self.study.study_name, trial.number), name, d,
                      self.cfg.seed, str(self.out / "runs" / name))

    def finish(self, outcome: RunOutcome) -> None:
        """Tell the study what the run gave (and the trials waiting on the same recipe), and say so."""
        trial = self.in_flight.pop(outcome.variant)
        self.ran += 1
        self._tell(trial, outcome)
        told = self.study.get_trials(deepcopy=False)[trial.number]
        for same in self.waiting.pop(trial.user_attrs.get("recipe_hash"), []):
            self.study.tell(same, values=told.value if told.state.name == "COMPLETE" else None, state=told.state)
            self.say(f"trial {same.number}: same recipe as trial {trial.number}; told the same result")

    def _tell(self, trial: Any, outcome: RunOutcome) -> None:
        optuna = _optuna()
        with Store(self.store_path) as store:
            row = store.get(trial_key(self.study.study_name, trial.number))
        summary = RunSummary.from_dict(row.summary) if row is not None and row.summary else None
        if outcome.status != "done" or summary is None:
            trial.set_user_attr("error", outcome.error or "no summary")
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.say(f"{self._where(trial)}: FAILED {outcome.error}")
        elif (summary.stop_reason or "").startswith(PRUNED):
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            self.say(f"{self._where(trial)}: {summary.stop_reason}")
        else:
            value = self.objective.value(summary)
            self.study.tell(trial, values=value, state=None if value is not None else optuna.trial.TrialState.FAIL)
            self.say(f"{self._where(trial)}: {self.objective.describe()} {_fmt(value)} "
                     f"({summary.train_seconds:.0f}s training){self._best()}")

    def _where(self, trial: Any) -> str:
        return f"[{self.counted()}/{self.cfg.trials}] trial {trial.number} ({describe_values(trial.params)})"

    def _best(self) -> str:
        try:
            best = self.study.best_trial
        except ValueError:
            return ""
        return f"; best {_fmt(best.value)} (trial {best.number}); {time.perf_counter() - self.started:.0f}s elapsed"


def describe_values(values: dict[str, Any]) -> str:
    """``key=value, ...``; a search's switches as one ``techniques: a+b`` item."""
    items = [f"{k}={_fmt(v)}" for k, v in values.items() if not _is_switch(k)]
    if any(_is_switch(k) for k in values):
        items.insert(0, "techniques: " + ("+".join(k.split(".")[1] for k, v in values.items() if _is_switch(k) and v)
                                          or "none"))
    return ", ".join(items)


def _is_switch(key: str) -> bool:
    return key.startswith("techniques.") and key.count(".") == 1


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _target(cfg: TuneConfig, space: Space, say: Callable[[str], Any]) -> int:
    if cfg.sampler != "grid":
        return cfg.trials
    size = space.grid_size()
    if cfg.trials > size:
        say(f"the grid has {size} points; running {size} trials, not {cfg.trials}")
    return min(cfg.trials, size)


def _drive(drv: _Driver, pool: Backend, target: int) -> None:
    """Keep ``jobs`` trials in flight until ``target`` trials have run (or the sampler only repeats)."""
    def fill() -> None:
        while len(drv.in_flight) < drv.cfg.jobs and drv.counted() + len(drv.in_flight) < target:
            if drv.exhausted():
                return
            if drv.skipped_in_a_row >= 50 * max(1, drv.cfg.jobs):
                drv.say("the sampler proposed only known or impossible settings 50 times in a row: stopping early")
                return
            drv.launch(pool)

    fill()
    if not drv.in_flight:
        return
    for outcome in pool.completed():
        drv.finish(outcome)
        fill()


def optimize(base: Recipe, space: Space, objective: Objective, cfg: TuneConfig, out: Path,
             say: Callable[[str], Any] = print, backend: Backend | None = None) -> StudyResult:
    """Run (or continue) the study until it holds ``cfg.trials`` finished trials; returns its result."""
    cfg.check()
    if cfg.sampler == "grid":
        space.grid()  # a continuous range is refused before anything is written
    optuna = _optuna()
    name = cfg.study_name or study_name(base, space, objective)
    pruner = _pruner_spec(cfg, base, objective)
    with _driver_lock(out):
        _check_store(out / "store.sqlite", name)
        study = _open_study(cfg, out, name, objective, space, pruner)
        _recover(study, out / "store.sqlite", say)
        drv = _Driver(study, space, base.to_dict(), objective, cfg, out, pruner, say)
        target = _target(cfg, space, say)
        done = drv.counted()
        if done:
            say(f"study {name}: {done} of {target} trials already finished in {study.user_attrs['storage_url']}")
        if done < target:
            threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
            with backend if backend is not None else LocalPool(cfg.jobs, threads) as pool:
                _drive(drv, pool, target)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best = study.best_trial if complete else None
    return StudyResult(study, objective, dict(best.params) if best else None, best.value if best else None,
                       best.number if best else None, drv.ran)


def write_best(path: Path, recipe: Recipe, space: Space, values: dict[str, Any]) -> Path:
    """``recipe`` with the best values, as YAML (written atomically)."""
    best = recipe_from_dict(space.apply(recipe.to_dict(), values))
    atomic_write_text(path, best.to_yaml())
    return path
