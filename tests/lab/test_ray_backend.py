"""The Ray backend: an ablation run as Ray tasks on a local Ray instance gives the same store rows as the same
ablation run here (reference: the in-process backend of test_backends.py; same seeds, so the same numbers:
every evaluation metric and every history row, timing fields aside), and the store stays the only record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from tricklab.cli import plan_ablation  # noqa: E402
from tricklab.errors import UserError  # noqa: E402
from tricklab.lab.ablate import load_base, run_ablation  # noqa: E402
from tricklab.lab.backends import LocalPool, RayBackend, make_backend  # noqa: E402
from tricklab.lab.noise import CONTROL  # noqa: E402
from tricklab.lab.store import Store  # noqa: E402

from tricklab.lab.backends import RunJob, RunOutcome, execute_run  # noqa: E402

TINY = ["budget.steps=4", "eval_every=2", "log_every=2", "threads=1", "eval_batch_size=200"]

TIMING = {"seconds", "train_seconds", "wall_seconds_this_process", "inference_latency", "convergence", "energy"}


class InProcess:
    """The reference backend: each job run here, in submission order (as in test_backends.py)."""

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


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _rows(folder: Path) -> dict[tuple[str, int], tuple[dict, list[dict], str]]:
    with Store(folder / "store.sqlite") as store:
        out = {}
        for r in store.runs():
            assert r.status == "done"
            summary = {k: v for k, v in r.summary.items() if k not in TIMING}
            history = [{k: v for k, v in row.items() if k != "seconds"} for row in store.steps(r.id)]
            out[(r.variant, r.seed)] = (summary, history, r.run_key)
        return out


@pytest.mark.slow  # starting Ray takes ~20 s on 2 cores
def test_a_ray_ablation_gives_the_same_store_rows_as_a_local_one(tmp_path: Path, local_ray: None) -> None:
    plan = plan_ablation(load_base(None, TINY), ["grad_clip"], [], [0, 1])
    run_ablation(plan, tmp_path / "here", say=lambda m: None, backend=InProcess())
    lines: list[str] = []
    with RayBackend(threads=1) as backend:
        summary = run_ablation(plan, tmp_path / "ray", say=lines.append, backend=backend)
    assert ray.is_initialized()  # the backend did not close the instance it did not open
    # one progress line per run: 2 variants x 2 seeds, and the baseline's control run per seed (the noise floor)
    assert len([line for line in lines if line.startswith("[")]) == 6 and summary.seeds["grad_clip"] == [0, 1]
    here, there = _rows(tmp_path / "here"), _rows(tmp_path / "ray")
    assert sorted(here) == sorted(there) == [("baseline", 0), ("baseline", 1), (CONTROL, 0), (CONTROL, 1),
                                             ("grad_clip", 0), ("grad_clip", 1)]
    for key in here:
        assert there[key] == here[key], key  # bit-identical metrics and histories, same run keys
    # the workers wrote the run folders where a local run writes them, and nothing else into the folder
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(p.name for p in (tmp_path / "here").iterdir())
    assert (tmp_path / "ray" / "runs" / "grad_clip" / "seed-1" / "summary.json").is_file()


def test_make_backend_names_and_refusals() -> None:
    pool = make_backend("local", 1, 1)
    assert isinstance(pool, LocalPool)
    pool.__exit__(None, None, None)
    with pytest.raises(UserError, match="--address names a Ray cluster"):
        make_backend("local", 1, 1, address="auto")
    with pytest.raises(UserError, match="--backend 'slurm'"):
        make_backend("slurm", 1, 1)
