"""`tricklab ablate`: plan a baseline and each technique added to it (and listed combinations and variants),
over seeds, at equal budget; drive the runs through a backend into a SQLite store that survives a kill; read
the store back into a summary, report and cards.

Re-running the same command skips finished runs (keyed by recipe hash and seed) and redoes unfinished ones.
The command-line grammar (``name:key=value``, ``a+b``, budgets) is parsed in :mod:`tricklab.cli`; this module
takes typed specs.

Beside the variants, an ablation with a step or epoch budget trains the baseline a second time per seed (the
control run, :data:`~tricklab.lab.noise.CONTROL`) and, after every run, times all trained models interleaved
(:mod:`tricklab.lab.latency`): the two give the noise floors that timing verdicts must exceed. The folder is
locked while the ablation runs (:mod:`tricklab.lab.lock`); Ctrl-C stops the workers at once and keeps every
finished run.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import ConfigError, UserError
from tricklab.lab.analysis import StoredRun, read_runs, summarize
from tricklab.lab.backends import Backend, LocalPool, RunJob, RunOutcome
from tricklab.lab.build import data_version, resolve_techniques, validate
from tricklab.lab.cards import write_cards
from tricklab.lab.differences import MISSING, describe_changes, recipe_changes, show
from tricklab.lab.format import safe_name
from tricklab.lab.latency import latency_pass
from tricklab.lab.lock import FolderLock
from tricklab.lab.noise import CONTROL, LATENCY_PASS
from tricklab.lab.recipe import PAPER_RECIPE, Recipe, TechniqueSpec, apply_override, load_recipe, recipe_from_dict
from tricklab.lab.report import write_report
from tricklab.lab.store import Store
from tricklab.lab.summary import AblationSetting, AblationSummary
from tricklab.lab.tasks import TASKS, LoopTask

__all__ = ["AblationPlan", "BASELINE_NAME", "BASELINE_RECIPE", "DEFAULT_TECHNIQUES", "Variant", "collect",
           "load_base", "make_plan", "run_ablation", "run_key", "technique_label", "write_outputs"]

#: The main job's technique list: those that exist and apply to any classifier.
DEFAULT_TECHNIQUES: tuple[str, ...] = ("label_smoothing", "mixup", "ema", "grad_clip")

#: The name of the main job's baseline: the MNIST-1D paper's setting, as recipes/mnist1d-cnn-paper.yaml.
BASELINE_NAME = "mnist1d-cnn-paper"

#: The main job's baseline: the MNIST-1D paper's setting (recipes/mnist1d-cnn-paper.yaml), one thread per run,
#: three seeds. ``tricklab run``'s default (mnist1d-cnn) adds a cosine schedule and label smoothing to it.
BASELINE_RECIPE: dict[str, Any] = {**copy.deepcopy(PAPER_RECIPE), "seeds": [0, 1, 2]}

# recipe keys a --variant may not change: the comparison is at equal budget over the same seeds
_FIXED_KEYS = ("seed", "seeds", "budget", "budget.steps", "budget.epochs", "budget.seconds")


@dataclass
class Variant:
    name: str
    recipe: Recipe
    #: digest of the user's data files the recipe reads (:func:`~tricklab.lab.build.data_version`), or None
    data_version: str | None = None


@dataclass
class AblationPlan:
    baseline: Recipe
    variants: list[Variant]  # baseline first
    seeds: list[int]
    #: also train the baseline a second time per seed, for the training-time noise floor
    control: bool = True

    def ablation_id(self) -> str:
        """Identifies the comparison (the variants' recipes), not the seeds: more seeds extend it."""
        keys = sorted(f"{v.name}:{v.recipe.hash()}" + (f":{v.data_version}" if v.data_version else "")
                      for v in self.variants)
        return hashlib.sha256("|".join(keys).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ planning
def technique_label(spec: TechniqueSpec) -> str:
    """A variant's name for a technique: ``ema`` or ``ema(decay=0.99)``."""
    if not spec.args:
        return spec.name
    return spec.name + "(" + ",".join(f"{k}={v}" for k, v in spec.args.items()) + ")"


def load_base(recipe_path: str | None, overrides: Sequence[str]) -> Recipe:
    """The baseline: a recipe file, or the main job's :data:`BASELINE_RECIPE`, with overrides applied."""
    if recipe_path is not None:
        return load_recipe(recipe_path, overrides)
    data = copy.deepcopy(BASELINE_RECIPE)
    for o in overrides:
        apply_override(data, o)
    return recipe_from_dict(data)


def _checked(name: str, recipe: Recipe, variants: list[Variant]) -> Variant:
    if any(v.name == name for v in variants):
        raise ConfigError(f"variant {name!r} is listed twice")
    if name == CONTROL:
        raise ConfigError(f"variant name {CONTROL!r} is reserved for the control run (the baseline run again)")
    try:
        validate(recipe)  # unknown names, bad arguments and conflicts are refused before any run
    except UserError as e:
        raise type(e)(f"variant {name!r}: {e}") from None
    return Variant(name, resolve_techniques(recipe))


def _with_techniques(base: dict[str, Any], baseline: Recipe, group: Sequence[TechniqueSpec]) -> Recipe:
    d = copy.deepcopy(base)
    d["techniques"] = [dataclasses.asdict(t) for t in [*baseline.techniques, *group]]
    return recipe_from_dict(d)


def _with_overrides(base: dict[str, Any], name: str, overrides: Sequence[str]) -> Recipe:
    d = copy.deepcopy(base)
    for o in overrides:
        if o.split("=", 1)[0].strip() in _FIXED_KEYS:
            text = f"{name}:{';'.join(overrides)}"
            raise ConfigError(f"--variant {text!r}: {o!r} would break the equal budget and seeds of the comparison")
        apply_override(d, o)
    return recipe_from_dict(d)


def make_plan(base: Recipe, techniques: Sequence[TechniqueSpec], combos: Sequence[Sequence[TechniqueSpec]],
              seeds: list[int], budget: dict[str, Any] | None = None,
              variants: Sequence[tuple[str, Sequence[str]]] = ()) -> AblationPlan:
    """Baseline = ``base`` as given (with ``budget`` and ``seeds``); each technique and each combination is
    appended to it, and each ``(name, overrides)`` variant changes the baseline's recipe keys."""
    if not seeds:
        raise ConfigError("--seeds must be at least 1")
    base_dict = base.to_dict()
    if budget is not None:
        base_dict["budget"] = dict(budget)
    base_dict["seeds"] = list(seeds)
    validate(recipe_from_dict(base_dict))
    baseline = resolve_techniques(recipe_from_dict(base_dict))
    base_dict = baseline.to_dict()
    planned = [Variant("baseline", baseline)]
    for group in [[s] for s in techniques] + [list(c) for c in combos]:
        name = "+".join(technique_label(s) for s in group)
        if any(v.name == name for v in planned):
            raise ConfigError(f"technique {name!r} is listed twice")
        planned.append(_checked(name, _with_techniques(base_dict, baseline, group), planned))
    for name, overrides in variants:
        planned.append(_checked(name, _with_overrides(base_dict, name, overrides), planned))
    for v in planned:  # the user's files are read (hashed) now: a missing file is refused before any run
        v.data_version = data_version(v.recipe)
    # with a wall-clock budget every run trains for the same seconds: no training-time floor to measure; with the
    # baseline alone (`--techniques ""`, several seeds of one recipe) there is no difference for a floor to judge
    return AblationPlan(baseline, planned, list(seeds),
                        control=baseline.budget.seconds is None and len(planned) > 1)


# ------------------------------------------------------------------------------------------------- driving
def run_key(recipe: Recipe, seed: int, data: str | None = None) -> str:
    """The store key of one run: the recipe hash and the seed, and the digest of the user's data files when
    the recipe reads some (a changed file is a new run, never a finished one to skip)."""
    return f"{recipe.hash()}:{seed}" if data is None else f"{recipe.hash()}:{data}:{seed}"


def _stored_difference(store: Store, plan: AblationPlan) -> str:
    """What differs between the ablation in ``store`` and ``plan``: the budget, the list of variants, the
    baseline recipe, or (the same names) a variant's recipe, e.g. technique defaults an old store lacks."""
    base = store.get_meta("baseline_recipe") or {}
    now = plan.baseline.to_dict()
    names, planned = store.get_meta("variants") or [], [v.name for v in plan.variants]
    parts = []
    if base.get("budget") != now["budget"]:
        parts.append(f"the budget ({show(base.get('budget'))} in the store, {show(now['budget'])} now)")
    if names != planned:
        parts.append(f"the techniques and variants ({', '.join(names) or 'none'} in the store; "
                     f"{', '.join(planned)} now)")
    other = [c for c in recipe_changes(base, now) if not c[0].startswith("budget")]
    if other:
        parts.append(f"the baseline recipe ({describe_changes(other, 'in the store', 'now')})")
    if parts:
        return "; ".join(parts)
    for v in plan.variants:
        rows = store.runs(variant=v.name)
        found = recipe_changes(rows[0].recipe, v.recipe.to_dict()) if rows else []
        if found:
            old = " (the store was written before technique defaults were recorded in recipes, which changed " \
                  "every recipe hash: its runs cannot be matched)" if all(c[1] == MISSING for c in found) else ""
            return f"variant {v.name!r}: {describe_changes(found, 'in the store', 'now')}{old}"
    return "the recipes hash differently (same budget, variants and baseline keys)"


def _with_controls(planned: list[tuple[Variant, int, str]], plan: AblationPlan) -> list[tuple[Variant, int, str]]:
    """The control runs spread evenly over the schedule (the k-th of n after about k/(n+1) of the runs), so
    that they see the machine's load at several moments of the ablation, not only at its end."""
    control = Variant(CONTROL, plan.baseline, plan.variants[0].data_version)
    out = list(planned)
    n, total = len(plan.seeds), len(planned)
    for k, seed in reversed(list(enumerate(plan.seeds))):
        key = f"{run_key(plan.baseline, seed, control.data_version)}:repeat"
        out.insert(round((k + 1) * total / (n + 1)), (control, seed, key))
    return out


def _todo(plan: AblationPlan, out: Path, store_path: Path) -> list[tuple[Variant, int, str]]:
    """Record the plan in the store (refusing another ablation's store) and list the runs not yet done."""
    store = Store(store_path)
    try:
        existing = store.get_meta("ablation_id")
        version = plan.variants[0].data_version
        if existing is not None and existing != plan.ablation_id():
            before = store.get_meta("data_version")
            if before is not None and before != version:
                raise UserError(f"{out} holds an ablation on other data: the data files changed since (digest "
                                f"{before} then, {version} now); choose another --out to measure the new data")
            raise UserError(f"{out} holds the store of another ablation; what differs: "
                            f"{_stored_difference(store, plan)}. Choose another --out, or give the same recipe, "
                            f"techniques and budget to continue it (more seeds extend it)")
        store.set_meta("ablation_id", plan.ablation_id())
        if version is not None:
            store.set_meta("data_version", version)
        store.set_meta("variants", [v.name for v in plan.variants])
        store.set_meta("baseline_recipe", plan.baseline.to_dict())
        store.set_meta("seeds", sorted(set(store.get_meta("seeds") or []) | set(plan.seeds)))
        planned = [(v, seed, run_key(v.recipe, seed, v.data_version))
                   for v in plan.variants for seed in plan.seeds]
        if plan.control:
            planned = _with_controls(planned, plan)
        todo = []
        for v, seed, key in planned:
            row = store.get(key)
            if row is None or row.status != "done":
                todo.append((v, seed, key))
        return todo
    finally:
        store.close()


def _progress(outcome: RunOutcome, finished: int, total: int, elapsed: float) -> str:
    where = f"[{finished}/{total}] {outcome.variant} seed {outcome.seed}"
    if outcome.status != "done":
        return f"{where}: FAILED {outcome.error}"
    seconds = "?" if outcome.seconds is None else f"{outcome.seconds:.1f}"
    if outcome.metric is None or outcome.metric == "Test accuracy":
        shown = "n/a" if outcome.accuracy is None else f"{outcome.accuracy:.4f}"
        return f"{where}: test accuracy {shown} ({seconds}s training; {elapsed:.0f}s elapsed)"
    shown = "n/a" if outcome.value is None else f"{outcome.value:.4g}"
    return f"{where}: {outcome.metric.lower()} {shown} ({seconds}s training; {elapsed:.0f}s elapsed)"


def run_ablation(plan: AblationPlan, out: Path, jobs: int = 1, say: Callable[[str], Any] = print,
                 backend: Backend | None = None) -> AblationSummary:
    """Run every (variant, seed) not yet done in ``out``'s store (on ``backend``, default a local pool of
    ``jobs`` processes), then the latency pass; returns the ablation summary. The folder is locked
    meanwhile; Ctrl-C stops the workers at once, says which finished runs were kept, and re-raises."""
    with FolderLock(out, "ablation folder"):
        store_path = out / "store.sqlite"
        todo = _todo(plan, out, store_path)
        total = len(plan.variants) * len(plan.seeds) + (len(plan.seeds) if plan.control else 0)
        finished = total - len(todo)
        if finished:
            say(f"{finished} of {total} runs already finished in {out}; running the other {len(todo)}")
        threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
        started = time.perf_counter()
        try:
            if todo:
                with backend if backend is not None else LocalPool(jobs, threads) as pool:
                    for v, seed, key in todo:
                        recipe = dataclasses.replace(v.recipe, seed=seed, progress=False,
                                                     threads=v.recipe.threads or threads)
                        run_dir = out / "runs" / safe_name(v.name) / f"seed-{seed}"
                        pool.submit(RunJob(str(store_path), key, v.name, recipe.to_dict(), seed, str(run_dir)))
                    for outcome in pool.completed():
                        finished += 1
                        say(_progress(outcome, finished, total, time.perf_counter() - started))
        except KeyboardInterrupt:
            say(_kept(store_path, total))
            raise
        try:
            _measure_latency(out, store_path, say)
        except (UserError, OSError, RuntimeError, ValueError, KeyError, TypeError) as e:
            # the pass adds the latency numbers; the runs are done and kept whatever happens to it
            say(f"latency pass failed ({type(e).__name__}: {e}); inference latency gets no verdict")
    return collect(out)[0]


def _kept(store_path: Path, total: int) -> str:
    """What an interrupted ablation kept."""
    store = Store(store_path)
    try:
        done = store.runs(status="done")
    finally:
        store.close()
    by_variant: dict[str, list[int]] = {}
    for r in done:
        by_variant.setdefault(r.variant, []).append(r.seed)
    kept = "; ".join(f"{v} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))}"
                     for v, s in by_variant.items())
    return (f"interrupted: the runs in flight were stopped; the {len(done)} finished runs (of {total}) are kept in "
            f"{store_path}" + (f" ({kept})" if kept else "") + "; rerun the same command to run the rest")


def _measure_latency(out: Path, store_path: Path, say: Callable[[str], Any]) -> None:
    """Run the latency pass unless the store already has one covering every finished run."""
    store = Store(store_path)
    try:
        runs: dict[int, dict[str, dict[str, Any]]] = {}
        for r in store.runs(status="done"):
            # a loop task's run saves no recipe model to time: its own loop measured what it declares
            task = (r.recipe or {}).get("task")
            if r.variant != CONTROL and not (task in TASKS and isinstance(TASKS.get(task), LoopTask)):
                runs.setdefault(r.seed, {})[r.variant] = r.recipe
        existing = (store.get_meta(LATENCY_PASS) or {}).get("median_ms") or {}
        if runs and not all(v in existing.get(str(s), {}) for s, row in runs.items() for v in row):
            store.set_meta(LATENCY_PASS, latency_pass(out, runs, say=say))
    finally:
        store.close()


# ------------------------------------------------------------------------------------------------- reading
def contention(envs: Sequence[dict[str, Any]], latency: dict[str, Any] | None) -> dict[str, Any]:
    """How the runs shared the machine, from their env.json: runs at a time, threads per run, CPUs, the
    1-minute load average at the start and end of each run, and the latency pass's threads and load."""
    loads = [e[k][0] for e in envs for k in ("load_average_start", "load_average_end") if e.get(k)]
    out: dict[str, Any] = {
        "concurrent_runs": max((e.get("concurrent_runs") or 1 for e in envs), default=None) if envs else None,
        "threads_per_run": max((e.get("torch_threads") or 1 for e in envs), default=None) if envs else None,
        "cpu_count": max((e.get("cpu_count") or 0 for e in envs), default=None) if envs else None,
        "load_average_min": min(loads, default=None), "load_average_max": max(loads, default=None),
    }
    known = "concurrent_runs" in (envs[0] if envs else {})
    threads = out["threads_per_run"] or 1
    out["shared"] = None if not known else bool((out["concurrent_runs"] or 1) > 1 or (
        out["load_average_max"] is not None and out["load_average_max"] > threads + 0.5))
    if latency:
        out["latency_pass"] = {"threads": latency.get("threads"), "load_average": latency.get("load_average"),
                               "repeats": latency.get("repeats")}
    return out


#: A loop's config fields that say how long it trains (shown as the setting's budget).
_LOOP_LENGTH_KEYS = ("steps", "epochs", "episodes", "rounds", "total_steps", "timesteps", "iterations")


def _loop_length(task: LoopTask, base: dict[str, Any]) -> tuple[dict[str, Any] | None, int | None]:
    """(budget, eval_every) of a loop task's runs, read from the config its loop gets (``task_args`` with the
    config's defaults): the recipe's own ``budget`` and ``eval_every`` do not reach such a loop."""
    try:
        config = task.make_config(recipe_from_dict(base))
    except (UserError, ValueError, TypeError):
        return None, None  # an old store whose task_args no longer build: say nothing rather than guess
    if task.config is None:  # the loop takes the recipe itself, budget included
        return base.get("budget"), base.get("eval_every")
    length = {k: getattr(config, k) for k in _LOOP_LENGTH_KEYS if isinstance(getattr(config, k, None), int)}
    every = getattr(config, "eval_every", None)
    return (length or None), (every if isinstance(every, int) else None)


def _setting(store: Store, runs: Sequence[StoredRun]) -> AblationSetting:
    base = store.get_meta("baseline_recipe") or {}
    env = runs[0].env if runs and runs[0].env else {}
    model = (base.get("model") or {}).get("name")
    budget, eval_every = base.get("budget"), base.get("eval_every")
    task = TASKS.get(base["task"]) if base.get("task") in TASKS else None
    if isinstance(task, LoopTask):
        model = None  # a loop task trains no recipe model
        budget, eval_every = _loop_length(task, base)
    return AblationSetting(
        task=base.get("task"), model=model, budget=budget,
        seeds=store.get_meta("seeds") or [],
        machine={k: env.get(k) for k in ("cpu", "cpu_count", "torch_threads", "torch", "python", "gpu")},
        recipe_hash=recipe_from_dict(base).hash() if base else None, baseline_recipe=base,
        runs_done=len(runs), runs_total=len(store.runs()),
        contention=contention([r.env for r in runs if r.env], store.get_meta(LATENCY_PASS)),
        eval_every=eval_every,
    )


def collect(folder: Path) -> tuple[AblationSummary, dict[str, list[list[dict[str, Any]]]], AblationSetting]:
    """(summary, learning curves per variant and seed, setting) read from ``folder``'s store."""
    path = Path(folder) / "store.sqlite"
    if not path.is_file():
        raise UserError(f"{folder} holds no ablation store (store.sqlite); run `tricklab ablate --out {folder}` first")
    store = Store(path)
    try:
        runs = read_runs(store)
        summary = summarize(runs, store.get_meta("variants") or [], latency=store.get_meta(LATENCY_PASS))
        curves: dict[str, list[list[dict[str, Any]]]] = {}
        for r in runs:
            if r.variant != CONTROL:
                curves.setdefault(r.variant, []).append(r.history)
        setting = _setting(store, runs)
    finally:
        store.close()
    return summary, curves, setting


def write_outputs(folder: Path, cards_dir: Path | None = None) -> tuple[Path, list[Path]]:
    """Rebuild report.html (and the cards, when ``cards_dir`` is given: ``folder/cards`` by default on the
    command line) from the store."""
    summary, curves, setting = collect(folder)
    report = write_report(Path(folder), summary, curves, setting)
    cards = write_cards(summary, setting, Path(cards_dir)) if cards_dir is not None else []
    return report, cards
