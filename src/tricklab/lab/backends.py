"""Where the runs of an ablation execute. A backend takes :class:`RunJob` s, runs each with
:func:`execute_run` somewhere, and hands back a :class:`RunOutcome` per job as it completes.

Every backend follows the same small interface (:class:`Backend`): ``submit`` a job, iterate
``completed()`` outcomes in completion order, ``cancel()`` what has not started, and close it (``with``).
The store stays the single record: a worker writes its run into the store itself, so the driver only
counts outcomes. :class:`LocalPool` runs jobs in worker processes on this machine.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from tricklab.lab.recipe import recipe_from_dict
from tricklab.lab.runner import run
from tricklab.lab.store import Store

__all__ = ["Backend", "LocalPool", "RunJob", "RunOutcome", "execute_run"]


@dataclass(frozen=True)
class RunJob:
    """One (variant, seed) of an ablation: everything a worker needs, as plain data that pickles."""

    store_path: str
    run_key: str
    variant: str
    recipe: dict[str, Any]  # the resolved recipe, seed included (Recipe.to_dict)
    seed: int
    run_dir: str


@dataclass(frozen=True)
class RunOutcome:
    """What became of a job: 'done' with its test accuracy and training seconds, or 'failed' with why."""

    variant: str
    seed: int
    status: str
    accuracy: float | None = None
    seconds: float | None = None
    error: str | None = None


def execute_run(job: RunJob) -> RunOutcome:
    """Train one job and record it in the store (claimed, then finished or failed)."""
    recipe = recipe_from_dict(job.recipe)
    store = Store(job.store_path)
    try:
        run_id = store.claim(job.run_key, job.variant, recipe.hash(), job.seed, recipe.to_dict())
        shutil.rmtree(job.run_dir, ignore_errors=True)  # an unfinished attempt is redone from scratch
        try:
            result = run(recipe, out=job.run_dir)
        except Exception as e:  # noqa: BLE001 - recorded in the store; the ablation goes on
            store.fail(run_id, f"{type(e).__name__}: {e}")
            return RunOutcome(job.variant, job.seed, "failed", error=f"{type(e).__name__}: {e}")
        env = json.loads((Path(job.run_dir) / "env.json").read_text(encoding="utf-8"))
        store.finish(run_id, env, result.summary.to_dict(), result.trainer.state.history)
        return RunOutcome(job.variant, job.seed, "done", result.summary.test.value("accuracy"),
                          result.summary.train_seconds)
    finally:
        store.close()


class Backend(Protocol):
    """The interface every backend offers (the local pool here; a cluster backend beside it)."""

    def submit(self, job: RunJob) -> None: ...

    def completed(self) -> Iterator[RunOutcome]: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def _worker_init(threads: int) -> None:
    # die with the driver: an orphan finishing a run while a re-run redoes it would write it twice
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class LocalPool:
    """``jobs`` worker processes on this machine (spawned, ``threads`` torch threads each), which die with
    the driver (Linux parent-death signal), so a killed driver leaves no orphan that could finish a run the
    next invocation is redoing."""

    def __init__(self, jobs: int, threads: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                         initializer=_worker_init, initargs=(threads,))
        self._pending: dict[Future[RunOutcome], RunJob] = {}

    def submit(self, job: RunJob) -> None:
        self._pending[self._pool.submit(execute_run, job)] = job

    def completed(self) -> Iterator[RunOutcome]:
        """Outcomes in completion order until every submitted job has one."""
        while self._pending:
            ready, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for fut in ready:
                self._pending.pop(fut)
                yield fut.result()

    def cancel(self) -> None:
        """Drop the jobs that have not started; those running finish (their results are kept)."""
        for fut in list(self._pending):
            if fut.cancel():
                self._pending.pop(fut)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
