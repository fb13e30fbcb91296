"""`tricklab search`: technique sets the trainer refuses are pruned before they run, the best compatible set is
found (an analytic objective written by a backend of this file: reference, the argmax over the compatible
sets, enumerated here by hand), and the winner is confirmed in a real ablation over fresh seeds."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("optuna")

from tricklab.errors import ConflictError, UserError  # noqa: E402
from tricklab.lab.ablate import load_base  # noqa: E402
from tricklab.lab.backends import RunJob, RunOutcome, execute_run  # noqa: E402
from tricklab.lab.build import validate  # noqa: E402
from tricklab.lab.metrics import METRICS  # noqa: E402
from tricklab.lab.noise import CONTROL  # noqa: E402
from tricklab.lab.recipe import TechniqueSpec, recipe_from_dict  # noqa: E402
from tricklab.lab.search import run_search, search_space  # noqa: E402
from tricklab.lab.space import parse_space  # noqa: E402
from tricklab.lab.store import Store  # noqa: E402
from tricklab.lab.tune import Objective, TuneConfig  # noqa: E402

NAMES = ["label_smoothing", "focal_loss", "ema", "grad_clip"]
GAIN = {"label_smoothing": 0.02, "focal_loss": 0.03, "ema": 0.04, "grad_clip": -0.01}
TINY = ["budget.steps=30", "eval_every=15", "log_every=15", "eval_batch_size=500", "threads=1"]
ACCURACY = next(m for m in METRICS if m.key == "accuracy")


def score(recipe: dict) -> float:
    return 0.8 + sum(GAIN[t["name"]] for t in recipe["techniques"] if t["name"] in GAIN)


class Scored:
    """A backend whose runs write :func:`score` of their recipe into the store."""

    def __init__(self) -> None:
        self.jobs: list[RunJob] = []
        self.ran: list[frozenset[str]] = []

    def submit(self, job: RunJob) -> None:
        self.jobs.append(job)

    def completed(self) -> Iterator[RunOutcome]:
        while self.jobs:
            job = self.jobs.pop(0)
            validate(recipe_from_dict(job.recipe))  # a conflicting set must never reach a worker
            with Store(job.store_path) as store:
                run_id = store.claim(job.run_key, job.variant, "h", job.seed, job.recipe)
                store.finish(run_id, {}, {"val": {"accuracy": score(job.recipe)}, "train_seconds": 0.0}, [])
            self.ran.append(frozenset(t["name"] for t in job.recipe["techniques"] if t["name"] in GAIN))
            yield RunOutcome(job.variant, job.seed, "done", score(job.recipe), 0.0)

    def cancel(self) -> None:
        self.jobs.clear()

    def __enter__(self) -> Scored:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class InProcess(Scored):
    """Real runs, here: the confirmation ablation trains."""

    def completed(self) -> Iterator[RunOutcome]:
        while self.jobs:
            yield execute_run(self.jobs.pop(0))


def _best_compatible_by_hand() -> frozenset[str]:
    best, best_score = frozenset(), 0.8
    for r in range(1, len(NAMES) + 1):
        for combo in itertools.combinations(NAMES, r):
            if {"label_smoothing", "focal_loss"} <= set(combo):
                continue  # both replace the loss (exclusive slot loss_fn)
            s = 0.8 + sum(GAIN[n] for n in combo)
            if s > best_score:
                best, best_score = frozenset(combo), s
    return best


def _search(tmp_path: Path, confirm_seeds: list[int], backends: Iterator[Scored]):
    base = load_base(None, TINY)
    trial_base = load_base(None, [*TINY, "data.val_fraction=0.2"])
    space = search_space(trial_base, [TechniqueSpec(n) for n in NAMES])
    cfg = TuneConfig(trials=16, sampler="grid", pruner="none", jobs=1)
    return run_search(base, trial_base, space, Objective(ACCURACY, "val"), cfg, tmp_path / "s", confirm_seeds,
                      lambda m: None, lambda: next(backends))


def test_search_prunes_conflicts_and_finds_the_best_compatible_set(tmp_path: Path) -> None:
    scored = Scored()
    result = _search(tmp_path, [], iter([scored]))
    # 16 on/off sets: the 4 with both loss replacers are pruned without running, the other 12 ran once each
    assert len(scored.ran) == 12 and len(set(scored.ran)) == 12
    assert not any({"label_smoothing", "focal_loss"} <= s for s in scored.ran)
    conflicts = [t for t in result.study.study.get_trials() if t.user_attrs.get("conflict")]
    assert len(conflicts) == 4 and all(t.state.name == "PRUNED" for t in conflicts)
    assert "'label_smoothing' and 'focal_loss' conflict" in conflicts[0].user_attrs["conflict"]
    assert frozenset(s.name for s in result.winner) == _best_compatible_by_hand() == {"focal_loss", "ema"}
    assert result.study.best_value == pytest.approx(0.87) and result.confirmation is None


@pytest.mark.slow  # four real training runs in this process
def test_the_winner_is_confirmed_in_an_ablation_over_fresh_seeds(tmp_path: Path) -> None:
    result = _search(tmp_path, [0, 1], iter([Scored(), InProcess()]))
    summary = result.confirmation
    assert summary is not None and summary.variants == ["baseline", "focal_loss+ema"]
    assert summary.seeds["focal_loss+ema"] == [0, 1]
    assert (result.confirm_dir / "report.html").is_file() and list((result.confirm_dir / "cards").glob("*.md"))
    with Store(result.confirm_dir / "store.sqlite") as store:
        rows = store.runs(status="done")
        # 2 variants x 2 seeds, and the baseline's control run per seed (the ablation's noise floor)
        assert sorted(r.variant for r in rows).count(CONTROL) == 2
        rows = [r for r in rows if r.variant != CONTROL]
        # the recipe as given (no validation split carved), the search's budget, the fresh seeds
        assert len(rows) == 4 and all(r.recipe["data"]["val_fraction"] == 0.0 for r in rows)
        assert all(r.recipe["budget"]["steps"] == 30 for r in rows) and {r.seed for r in rows} == {0, 1}


def test_search_refuses_bad_technique_lists() -> None:
    base = load_base(None, [])
    with pytest.raises(UserError, match="at least two techniques"):
        search_space(base, [TechniqueSpec("ema")])
    with pytest.raises(UserError, match="listed twice"):
        search_space(base, [TechniqueSpec("ema"), TechniqueSpec("ema")])
    with pytest.raises(UserError, match="already in the recipe"):
        search_space(load_base(None, ["techniques=[ema]"]), [TechniqueSpec("ema"), TechniqueSpec("mixup")])
    with pytest.raises(Exception, match="unknown technique 'emma'"):
        search_space(base, [TechniqueSpec("emma"), TechniqueSpec("mixup")])
    with pytest.raises(UserError, match="a search's space tunes arguments of the listed techniques"):
        search_space(base, [TechniqueSpec("ema"), TechniqueSpec("mixup")],
                     parse_space({"optimizer.lr": {"low": 1e-3, "high": 1e-2}}))
    space = search_space(base, [TechniqueSpec("ema", {"decay": 0.9}), TechniqueSpec("mixup")],
                         parse_space({"techniques.mixup.alpha": {"low": 0.1, "high": 0.4}}))
    d = space.apply(base.to_dict(), {"techniques.ema": True, "techniques.mixup": True, "techniques.mixup.alpha": 0.2})
    assert [(t["name"], t["args"]) for t in d["techniques"]] == [("ema", {"decay": 0.9}), ("mixup", {"alpha": 0.2})]


def test_confirmation_seeds_must_be_fresh(tmp_path: Path) -> None:
    base = load_base(None, TINY)
    space = search_space(base, [TechniqueSpec("ema"), TechniqueSpec("grad_clip")])
    with pytest.raises(UserError, match="must be fresh"):
        run_search(base, base, space, Objective(ACCURACY, "test"), TuneConfig(trials=2, seed=1), tmp_path, [0, 1])


def test_the_conflict_check_is_the_trainers() -> None:
    with pytest.raises(ConflictError):
        validate(load_base(None, ["techniques=[label_smoothing, focal_loss]"]))
