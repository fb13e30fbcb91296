"""Backends: the small interface run_ablation drives (submit, completed, cancel), shown with an in-process
backend written here and with the local process pool; the store stays the single record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tricklab.cli import plan_ablation
from tricklab.lab.ablate import load_base, run_ablation, run_key
from tricklab.lab.backends import LocalPool, RunJob, RunOutcome, execute_run
from tricklab.lab.store import Store

TINY = ["budget.steps=4", "eval_every=2", "log_every=2", "threads=1", "eval_batch_size=200"]


class InProcess:
    """The simplest backend: runs each job here, in submission order, when its outcome is asked for."""

    def __init__(self) -> None:
        self.jobs: list[RunJob] = []

    def submit(self, job: RunJob) -> None:
        self.jobs.append(job)

    def completed(self) -> Iterator[RunOutcome]:
        while self.jobs:
            yield execute_run(self.jobs.pop(0))

    def cancel(self) -> None:
        self.jobs.clear()

    def __enter__(self) -> InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def test_run_ablation_drives_any_backend(tmp_path: Path) -> None:
    plan = plan_ablation(load_base(None, TINY), ["grad_clip"], [], [0, 1])
    lines: list[str] = []
    summary = run_ablation(plan, tmp_path / "abl", say=lines.append, backend=InProcess())
    assert summary.variants == ["baseline", "grad_clip"] and summary.seeds["grad_clip"] == [0, 1]
    assert len(lines) == 4 and all("test accuracy" in line for line in lines)
    with Store(tmp_path / "abl" / "store.sqlite") as store:
        done = store.runs(status="done")
        assert sorted((r.variant, r.seed) for r in done) == [("baseline", 0), ("baseline", 1), ("grad_clip", 0),
                                                             ("grad_clip", 1)]
        assert {r.run_key for r in done} == {run_key(v.recipe, s) for v in plan.variants for s in (0, 1)}
        accuracy = {(r.variant, r.seed): r.summary["test"]["accuracy"] for r in done}
    mean = (accuracy["grad_clip", 0] + accuracy["grad_clip", 1]) / 2
    assert summary.per_variant["grad_clip"]["accuracy"].mean == mean
    # a second call finds everything done and submits nothing
    again: list[str] = []
    run_ablation(plan, tmp_path / "abl", say=again.append, backend=InProcess())
    assert again == [f"4 of 4 runs already finished in {tmp_path / 'abl'}; running the other 0"]


def test_local_pool_runs_jobs_and_cancels_those_not_started(tmp_path: Path) -> None:
    plan = plan_ablation(load_base(None, TINY), [], [], [0, 1, 2, 3])
    store_path = tmp_path / "store.sqlite"
    recipe = plan.baseline
    jobs = [RunJob(str(store_path), run_key(recipe, s), "baseline", {**recipe.to_dict(), "seed": s, "progress": False},
                   s, str(tmp_path / "runs" / f"seed-{s}")) for s in range(4)]
    with LocalPool(jobs=1, threads=1) as pool:
        for job in jobs:
            pool.submit(job)
        pool.cancel()  # the pool hands at most max_workers + 1 jobs to its queue: the rest never start
        outcomes = list(pool.completed())
    assert 1 <= len(outcomes) <= 2 and all(o.status == "done" for o in outcomes)
    with Store(store_path) as store:
        assert sorted(r.seed for r in store.runs(status="done")) == sorted(o.seed for o in outcomes)
