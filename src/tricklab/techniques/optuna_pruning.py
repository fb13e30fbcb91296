"""Optuna pruning: report an evaluation metric to an Optuna trial at every evaluation, and stop the run
cleanly when the study's pruner says the trial will not beat the others (Hyperband, median rule).

The trial lives in an Optuna storage (a database URL, e.g. ``sqlite:///study.sqlite``) so that a run in a
worker process, or on another machine of a Ray cluster that reaches the storage, reports to the study the
driver samples from. The pruner is not kept in the storage, so the driver and every worker build it from the
same spec (:func:`make_pruner`). A pruned run stops like an early-stopped one: the stop request is set at
``eval_end``, the loop ends after that step, and the run is summarized and recorded as usual with
``stop_reason`` starting with :data:`PRUNED`.

Functional core: :func:`report_and_check` (one report, one decision) works in any loop with any
``optuna.trial.Trial``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tricklab.errors import ConfigError
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["PRUNED", "PRUNERS", "OptunaPruning", "make_pruner", "open_storage", "report_and_check"]

#: The prefix of the stop reason of a pruned run.
PRUNED = "pruned by optuna"
PRUNERS = ("hyperband", "median", "none")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ConfigError("optuna is not installed: pip install 'tricklab[tune]'") from e
    return optuna


def make_pruner(name: str, args: dict[str, Any] | None = None) -> Any:
    """The Optuna pruner ``name`` (hyperband, median, none) with ``args`` (its constructor's arguments)."""
    optuna = _optuna()
    classes = {"hyperband": optuna.pruners.HyperbandPruner, "median": optuna.pruners.MedianPruner,
               "none": optuna.pruners.NopPruner}
    if name not in classes:
        raise ConfigError(f"unknown pruner {name!r}; choose one of {list(PRUNERS)}")
    try:
        return classes[name](**(args or {}))
    except TypeError as e:
        raise ConfigError(f"pruner {name!r}: {e}") from None


def open_storage(url: str) -> Any:
    """An Optuna RDB storage at ``url``; SQLite waits up to 60 s for the write lock (workers report at once)."""
    optuna = _optuna()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def report_and_check(trial: Any, value: float, step: int, last: bool = False) -> bool:
    """Report ``value`` at ``step`` to ``trial``; True when its study's pruner prunes the trial now (never at
    the ``last`` evaluation: the run is finished anyway, and its final value is worth more than a prune)."""
    trial.report(float(value), int(step))
    return not last and bool(trial.should_prune())


@register_technique
class OptunaPruning(Technique):
    """Report ``metric`` of every evaluation to trial ``trial_number`` of an Optuna study; stop when pruned."""

    name: ClassVar[str] = "optuna_pruning"
    reads = frozenset({"eval_metrics", "accum_steps"})  # the metric, and the run length (planned_steps)
    writes = frozenset({"stop"})
    # one report per evaluation; a stop request reaches every DDP rank through the trainer
    main_process_only: ClassVar[bool] = True

    def __init__(self, storage: str, study_name: str, trial_number: int, metric: str = "accuracy",
                 pruner: str = "median", pruner_args: dict[str, Any] | None = None) -> None:
        if pruner not in PRUNERS:
            raise ValueError(f"optuna_pruning: pruner must be one of {list(PRUNERS)}, got {pruner!r}")
        self.storage, self.study_name, self.trial_number = storage, study_name, int(trial_number)
        self.metric, self.pruner, self.pruner_args = metric, pruner, dict(pruner_args or {})
        self._trial: Any = None
        self._reported = -1  # the trainer may evaluate one step twice (an evaluation step that ends the run)

    def _open(self) -> Any:
        optuna = _optuna()
        storage = open_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage,
                                  pruner=make_pruner(self.pruner, self.pruner_args),
                                  sampler=optuna.samplers.RandomSampler(seed=0))
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        return optuna.trial.Trial(study, trial_id)

    def on_eval_end(self, state: TrainState) -> None:
        if self.metric not in state.eval_metrics:
            raise ValueError(f"optuna_pruning reports {self.metric!r}, but the evaluation gives "
                             f"{sorted(state.eval_metrics)}")
        if state.step <= self._reported:
            return
        if self._trial is None:
            self._trial = self._open()
        self._reported = state.step
        value = float(state.eval_metrics[self.metric])
        planned = state.planned_steps()
        if report_and_check(self._trial, value, state.step, last=planned is not None and state.step >= planned):
            state.should_stop = True
            state.stop_reason = f"{PRUNED} at step {state.step} ({self.metric} {value:.6g})"

    def state_dict(self) -> dict[str, Any]:
        return {}  # the reports live in the study's storage
