"""Running a task that brings its own loop (:class:`~tricklab.lab.tasks.LoopTask`) as a lab run.

The run folder is laid out as for a trained run (``recipe.yaml``, ``env.json``, ``metrics.jsonl``,
``summary.json``, ``model.safetensors`` when the loop returns a model), and the summary is a
:class:`~tricklab.lab.summary.RunSummary` like any other: the loop's final metrics are its ``test`` evaluation,
its declared metrics are recorded with it, and its history rows are stored with each declared metric under
``eval_<name>`` (the key the trainer's evaluation rows use), so the store, the analysis, the report and the
cards treat it exactly like a trained run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from safetensors.torch import save as st_save

from tricklab.errors import ConfigError
from tricklab.evaluate import count_parameters, model_size_bytes
from tricklab.io import atomic_write_bytes, atomic_write_text
from tricklab.lab.recipe import Recipe
from tricklab.lab.summary import Cost, Evaluation, RunSummary
from tricklab.lab.tasks import LoopResult, LoopTask
from tricklab.train.reproducibility import environment_info, seed_everything

__all__ = ["ProgressLog", "curve_rows", "loop_summary", "run_loop"]


class ProgressLog:
    """The ``progress`` callback a loop gets: appends each row to ``metrics.jsonl`` at once (a killed loop
    leaves what it reported) and, when ``show``, prints a line at most every ``every`` seconds."""

    def __init__(self, path: Path, show: bool, append: bool, every: float = 2.0, stream: TextIO | None = None):
        self._file = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.show, self.every, self.stream = show, every, stream or sys.stderr
        self._last = float("-inf")

    def __call__(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, default=float) + "\n")
        self._file.flush()
        now = time.monotonic()
        if self.show and now - self._last >= self.every:
            self._last = now
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
            print(shown, file=self.stream, flush=True)

    def close(self) -> None:
        self._file.close()


def curve_rows(history: list[dict[str, Any]], task: LoopTask) -> list[dict[str, Any]]:
    """History rows with each declared metric renamed ``eval_<name>`` (``step`` and ``seconds`` kept)."""
    names = {m.name for m in task.metrics if m.source == "test"}
    return [{(f"eval_{k}" if k in names and f"eval_{k}" not in row else k): v for k, v in row.items()}
            for row in history]


def loop_summary(recipe: Recipe, task: LoopTask, result: LoopResult, wall: float,
                 history: list[dict[str, Any]]) -> RunSummary:
    """The run summary of a loop's result (see the module docstring)."""
    steps = result.steps if result.steps is not None else (history[-1]["step"] if history else None)
    model = result.model
    cost = None if model is None else Cost(count_parameters(model), model_size_bytes(model))
    return RunSummary(
        task=recipe.task, model=None, seed=recipe.seed, recipe_hash=recipe.hash(), steps=steps,
        stop_reason=None, train_seconds=result.train_seconds, wall_seconds_this_process=wall,
        test=Evaluation.from_dict(result.metrics), cost=cost, task_kind=task.kind, metrics=task.metrics,
        extras=result.extras or None,
    )


def _write_run_files(recipe: Recipe, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
    env = environment_info()
    env.update({"world_size": 1, "recipe_hash": recipe.hash(), "seed": recipe.seed, "device": "cpu",
                "task_kind": "loop"})
    atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2))


def run_loop(recipe: Recipe, task: LoopTask, run_dir: Path, resume: bool = False
             ) -> tuple[RunSummary, list[dict[str, Any]]]:
    """Seed, call the task's loop, and write the run folder; returns the summary and the stored history."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"task {task.name!r} runs its own loop in one process; start it without torchrun")
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    _write_run_files(recipe, run_dir)
    seed_everything(recipe.seed, recipe.deterministic)
    log = ProgressLog(run_dir / "metrics.jsonl", recipe.progress, append=resume)
    wall0 = time.perf_counter()
    try:
        result = task.run(recipe, seed=recipe.seed, run_dir=run_dir, progress=log, resume=resume)
    finally:
        log.close()
    history = curve_rows(result.history, task)
    summary = loop_summary(recipe, task, result, time.perf_counter() - wall0, history)
    if result.model is not None:
        blob = st_save({k: v.detach().cpu().contiguous().clone() for k, v in result.model.state_dict().items()})
        atomic_write_bytes(run_dir / "model.safetensors", blob)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary.to_dict(), indent=2))
    return summary, history
