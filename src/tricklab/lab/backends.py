"""Where the runs of an ablation execute. A backend takes :class:`RunJob` s, runs each with
:func:`execute_run` somewhere, and hands back a :class:`RunOutcome` per job as it completes.

Every backend follows the same small interface (:class:`Backend`): ``submit`` a job, iterate
``completed()`` outcomes in completion order, ``cancel()`` what has not started, and close it (``with``).
The store stays the single record: a worker writes its run into the store itself, so the driver only
counts outcomes. :class:`LocalPool` runs jobs in worker processes on this machine; :class:`RayBackend` runs
them as Ray tasks on a cluster (extra ``ray``), whose workers must see the output folder (one machine, or a
shared file system): they write the store and the run folders exactly where a local run would.

Stopping: workers ignore SIGINT (Ctrl-C reaches the whole process group); the driver decides. Leaving a
``LocalPool`` on an exception (Ctrl-C in the driver) terminates the workers at once instead of waiting for
the runs in flight: a run stopped half-way is still 'running' in the store and is redone by the next
invocation, while every finished run is already committed.
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

from tricklab.errors import UserError
from tricklab.io import PipeSafeStream
from tricklab.lab.metrics import METRICS, primary_metric
from tricklab.lab.recipe import recipe_from_dict
from tricklab.lab.runner import CONCURRENT_RUNS_ENV, run
from tricklab.lab.store import Store
from tricklab.lab.summary import RunSummary

__all__ = ["BACKENDS", "Backend", "LocalPool", "RayBackend", "RunJob", "RunOutcome", "execute_run", "make_backend"]

BACKENDS = ("local", "ray")


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
    """What became of a job: 'done' with its test accuracy (None for a task without one), training seconds
    and headline metric (``metric`` named by its label, e.g. "Test MSE"), or 'failed' with why."""

    variant: str
    seed: int
    status: str
    accuracy: float | None = None
    seconds: float | None = None
    error: str | None = None
    metric: str | None = None
    value: float | None = None


def _headline(summary: RunSummary) -> tuple[str | None, float | None]:
    p = primary_metric(summary.metrics or METRICS)
    return (None, None) if p is None else (p.label, summary.value(p))


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
        store.finish(run_id, env, result.summary.to_dict(), result.history)
        return RunOutcome(job.variant, job.seed, "done", result.summary.test.value("accuracy"),
                          result.summary.train_seconds, None, *_headline(result.summary))
    finally:
        store.close()


class Backend(Protocol):
    """The interface every backend offers (the local pool here; a cluster backend beside it)."""

    def submit(self, job: RunJob) -> None: ...

    def completed(self) -> Iterator[RunOutcome]: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> Backend: ...

    def __exit__(self, *exc: object) -> None: ...


def _worker_init(threads: int, jobs: int = 1) -> None:
    # die with the driver: an orphan finishing a run while a re-run redoes it would write it twice
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    # Ctrl-C reaches every process of the terminal's group: the driver stops the workers itself (terminate),
    # so a worker does not die half-way through its own cleanup with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the workers share the driver's stdout and stderr: a closed pipe (`tricklab ablate | head`) must not fail
    # a run that prints a warning
    sys.stdout = PipeSafeStream(sys.stdout)  # type: ignore[assignment]
    sys.stderr = PipeSafeStream(sys.stderr)  # type: ignore[assignment]
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ[CONCURRENT_RUNS_ENV] = str(jobs)
    torch.set_num_threads(threads)


class LocalPool:
    """``jobs`` worker processes on this machine (spawned, ``threads`` torch threads each), which die with
    the driver (Linux parent-death signal), so a killed driver leaves no orphan that could finish a run the
    next invocation is redoing."""

    def __init__(self, jobs: int, threads: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                         initializer=_worker_init, initargs=(threads, jobs))
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

    def terminate(self) -> None:
        """Stop every worker now (SIGTERM, then SIGKILL after a second) and drop every job: runs in flight
        stay 'running' in the store and are redone by the next invocation."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(timeout=1.0)
            if p.is_alive():
                p.kill()
                p.join(timeout=1.0)
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __exit__(self, *exc: object) -> None:
        if exc and exc[0] is not None:  # Ctrl-C or an error in the driver: do not wait for runs in flight
            self.terminate()
            return
        self.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------------------ Ray
def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise UserError("--backend ray needs Ray: pip install 'tricklab[ray]'") from e
    return ray


def _ray_execute(job: RunJob, threads: int, jobs: int) -> RunOutcome:
    """A Ray task: one torch-thread budget per run, as in the local pool, then the same :func:`execute_run`."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ[CONCURRENT_RUNS_ENV] = str(jobs)  # recorded in env.json: the runs submitted at once
    torch.set_num_threads(threads)
    return execute_run(job)


class RayBackend:
    """Each job a Ray task asking for ``threads`` CPUs, on the cluster at ``address`` (``None``: the one this
    process is already connected to, else a new local instance; ``"auto"``: a running local cluster).

    The store stays the single record: a task writes its run into the store like a local worker, so the
    workers must reach the output folder. Ray schedules the tasks by their CPU requests; ``cancel`` drops
    the tasks not finished (Ray interrupts running ones, whose store rows stay 'running' and are redone by
    the next invocation, as after a kill). The Ray connection is closed on exit only if this backend
    opened it.
    """

    def __init__(self, threads: int = 1, address: str | None = None, jobs: int = 1) -> None:
        ray = _ray()
        self._ray, self._threads, self._jobs = ray, max(1, int(threads)), max(1, int(jobs))
        self._owner = not ray.is_initialized()
        if self._owner:
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self._threads)}})
            except ConnectionError as e:
                raise UserError(f"--address {address!r}: cannot reach a Ray cluster there ({e})") from None
        self._task = ray.remote(num_cpus=self._threads, max_retries=0)(_ray_execute)
        self._pending: dict[Any, RunJob] = {}

    def submit(self, job: RunJob) -> None:
        self._pending[self._task.remote(job, self._threads, self._jobs)] = job

    def completed(self) -> Iterator[RunOutcome]:
        """Outcomes in completion order until every submitted job has one."""
        while self._pending:
            ready, _ = self._ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                job = self._pending.pop(ref)
                try:
                    yield self._ray.get(ref)
                except self._ray.exceptions.RayError as e:  # the worker died: the run stays unfinished
                    yield RunOutcome(job.variant, job.seed, "failed", error=f"Ray task failed: {e}")

    def cancel(self) -> None:
        for ref in list(self._pending):
            self._ray.cancel(ref)
            self._pending.pop(ref)

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
        if self._owner:
            self._ray.shutdown()


def make_backend(name: str, jobs: int, threads: int, address: str | None = None) -> Backend:
    """The backend a command line names: ``local`` (a pool of ``jobs`` processes) or ``ray``."""
    if name == "local":
        if address is not None:
            raise UserError("--address names a Ray cluster; use it with --backend ray")
        return LocalPool(jobs, threads)
    if name == "ray":
        return RayBackend(threads, address, jobs)
    raise UserError(f"--backend {name!r}: choose one of {list(BACKENDS)}")
