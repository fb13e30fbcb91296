"""`tricklab ablate`: plan a baseline and each technique added to it (and listed combinations and variants),
over seeds, at equal budget; drive the runs through a backend into a SQLite store that survives a kill; read
the store back into a summary, report and cards.

Re-running the same command skips finished runs (keyed by recipe hash and seed) and redoes unfinished ones.
The command-line grammar (``name:key=value``, ``a+b``, budgets) is parsed in :mod:`tricklab.cli`; this module
takes typed specs.
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
from tricklab.lab.analysis import read_runs, summarize
from tricklab.lab.backends import Backend, LocalPool, RunJob, RunOutcome
from tricklab.lab.build import validate
from tricklab.lab.cards import write_cards
from tricklab.lab.format import safe_name
from tricklab.lab.recipe import Recipe, TechniqueSpec, apply_override, load_recipe, recipe_from_dict
from tricklab.lab.report import write_report
from tricklab.lab.store import Store
from tricklab.lab.summary import AblationSetting, AblationSummary

__all__ = ["AblationPlan", "BASELINE_RECIPE", "DEFAULT_TECHNIQUES", "Variant", "collect", "load_base", "make_plan",
           "run_ablation", "run_key", "technique_label", "write_outputs"]

#: The main job's technique list: those that exist and apply to any classifier.
DEFAULT_TECHNIQUES: tuple[str, ...] = ("label_smoothing", "mixup", "ema", "grad_clip")

#: The main job's baseline: the MNIST-1D paper's setting (recipes/mnist1d-cnn-paper.yaml), one thread per run.
BASELINE_RECIPE: dict[str, Any] = {
    "task": "mnist1d",
    "model": {"name": "cnn"},
    "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
    "schedule": {"name": "constant"},
    "techniques": [],
    "budget": {"steps": 6000},
    "batch_size": 100,
    "eval_every": 500,
    "threads": 1,
    "seeds": [0, 1, 2],
}

# recipe keys a --variant may not change: the comparison is at equal budget over the same seeds
_FIXED_KEYS = ("seed", "seeds", "budget", "budget.steps", "budget.epochs", "budget.seconds")


@dataclass
class Variant:
    name: str
    recipe: Recipe


@dataclass
class AblationPlan:
    baseline: Recipe
    variants: list[Variant]  # baseline first
    seeds: list[int]

    def ablation_id(self) -> str:
        """Identifies the comparison (the variants' recipes), not the seeds: more seeds extend it."""
        keys = sorted(f"{v.name}:{v.recipe.hash()}" for v in self.variants)
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
    try:
        validate(recipe)  # unknown names, bad arguments and conflicts are refused before any run
    except UserError as e:
        raise type(e)(f"variant {name!r}: {e}") from None
    return Variant(name, recipe)


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
    baseline = recipe_from_dict(base_dict)
    planned = [Variant("baseline", baseline)]
    for group in [[s] for s in techniques] + [list(c) for c in combos]:
        name = "+".join(technique_label(s) for s in group)
        if any(v.name == name for v in planned):
            raise ConfigError(f"technique {name!r} is listed twice")
        planned.append(_checked(name, _with_techniques(base_dict, baseline, group), planned))
    for name, overrides in variants:
        planned.append(_checked(name, _with_overrides(base_dict, name, overrides), planned))
    validate(baseline)
    return AblationPlan(baseline, planned, list(seeds))


# ------------------------------------------------------------------------------------------------- driving
def run_key(recipe: Recipe, seed: int) -> str:
    return f"{recipe.hash()}:{seed}"


def _todo(plan: AblationPlan, out: Path, store_path: Path) -> list[tuple[Variant, int, str]]:
    """Record the plan in the store (refusing another ablation's store) and list the runs not yet done."""
    store = Store(store_path)
    try:
        existing = store.get_meta("ablation_id")
        if existing is not None and existing != plan.ablation_id():
            raise UserError(
                f"{out} holds the store of another ablation (different baseline or techniques: "
                f"{', '.join(store.get_meta('variants') or [])}); choose another --out or the same recipe"
            )
        store.set_meta("ablation_id", plan.ablation_id())
        store.set_meta("variants", [v.name for v in plan.variants])
        store.set_meta("baseline_recipe", plan.baseline.to_dict())
        store.set_meta("seeds", sorted(set(store.get_meta("seeds") or []) | set(plan.seeds)))
        todo = []
        for v in plan.variants:
            for seed in plan.seeds:
                row = store.get(run_key(v.recipe, seed))
                if row is None or row.status != "done":
                    todo.append((v, seed, run_key(v.recipe, seed)))
        return todo
    finally:
        store.close()


def _progress(outcome: RunOutcome, finished: int, total: int, elapsed: float) -> str:
    where = f"[{finished}/{total}] {outcome.variant} seed {outcome.seed}"
    if outcome.status != "done":
        return f"{where}: FAILED {outcome.error}"
    return (f"{where}: test accuracy {outcome.accuracy:.4f} ({outcome.seconds:.1f}s training; "
            f"{elapsed:.0f}s elapsed)")


def run_ablation(plan: AblationPlan, out: Path, jobs: int = 1, say: Callable[[str], Any] = print,
                 backend: Backend | None = None) -> AblationSummary:
    """Run every (variant, seed) not yet done in ``out``'s store (on ``backend``, default a local pool of
    ``jobs`` processes); returns the ablation summary."""
    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "store.sqlite"
    todo = _todo(plan, out, store_path)
    total = len(plan.variants) * len(plan.seeds)
    finished = total - len(todo)
    if finished:
        say(f"{finished} of {total} runs already finished in {out}; running the other {len(todo)}")
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    started = time.perf_counter()
    if todo:
        with backend if backend is not None else LocalPool(jobs, threads) as pool:
            for v, seed, key in todo:
                recipe = dataclasses.replace(v.recipe, seed=seed, progress=False, threads=v.recipe.threads or threads)
                run_dir = out / "runs" / safe_name(v.name) / f"seed-{seed}"
                pool.submit(RunJob(str(store_path), key, v.name, recipe.to_dict(), seed, str(run_dir)))
            for outcome in pool.completed():
                finished += 1
                say(_progress(outcome, finished, total, time.perf_counter() - started))
    return collect(out)[0]


# ------------------------------------------------------------------------------------------------- reading
def _setting(store: Store, runs_done: int, env: dict[str, Any]) -> AblationSetting:
    base = store.get_meta("baseline_recipe") or {}
    return AblationSetting(
        task=base.get("task"), model=(base.get("model") or {}).get("name"), budget=base.get("budget"),
        seeds=store.get_meta("seeds") or [],
        machine={k: env.get(k) for k in ("cpu", "cpu_count", "torch_threads", "torch", "python", "gpu")},
        recipe_hash=recipe_from_dict(base).hash() if base else None, baseline_recipe=base,
        runs_done=runs_done, runs_total=len(store.runs()),
    )


def collect(folder: Path) -> tuple[AblationSummary, dict[str, list[list[dict[str, Any]]]], AblationSetting]:
    """(summary, learning curves per variant and seed, setting) read from ``folder``'s store."""
    path = Path(folder) / "store.sqlite"
    if not path.is_file():
        raise UserError(f"{folder} holds no ablation store (store.sqlite); run `tricklab ablate --out {folder}` first")
    store = Store(path)
    try:
        runs = read_runs(store)
        summary = summarize(runs, store.get_meta("variants") or [])
        curves: dict[str, list[list[dict[str, Any]]]] = {}
        for r in runs:
            curves.setdefault(r.variant, []).append(r.history)
        setting = _setting(store, len(runs), runs[0].env if runs and runs[0].env else {})
    finally:
        store.close()
    return summary, curves, setting


def write_outputs(folder: Path, cards_dir: Path | None = None) -> tuple[Path, list[Path]]:
    """Rebuild report.html (and the cards, when ``cards_dir`` is given) from the store."""
    summary, curves, setting = collect(folder)
    report = write_report(Path(folder), summary, curves, setting)
    cards = write_cards(summary, setting, Path(cards_dir)) if cards_dir is not None else []
    return report, cards
