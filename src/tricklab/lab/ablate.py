"""`tricklab ablate`: a baseline and each technique added to it (and listed combinations), over seeds, at
equal budget, in worker processes, into a SQLite store that survives a kill; then statistics, report, cards.

Re-running the same command skips finished runs (keyed by recipe hash and seed) and redoes unfinished ones.
Workers die with the driver (Linux parent-death signal), so a killed driver leaves no orphan that could
finish a run the next invocation is redoing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import ConfigError, UserError
from tricklab.lab.recipe import Recipe, TechniqueSpec, parse_yaml, recipe_from_dict

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


# ----------------------------------------------------------------------------------------- parsing
def parse_technique(text: str) -> TechniqueSpec:
    """``name`` or ``name:key=value:key=value`` (values parsed as YAML)."""
    parts = [p.strip() for p in text.split(":")]
    if not parts[0]:
        raise ConfigError(f"--techniques: empty technique name in {text!r}")
    args: dict[str, Any] = {}
    for p in parts[1:]:
        if "=" not in p:
            raise ConfigError(f"--techniques: {text!r}: arguments look like name:key=value, got {p!r}")
        k, v = p.split("=", 1)
        args[k.strip()] = parse_yaml(v, f"--techniques {text!r}")
    return TechniqueSpec(parts[0], args)


def _label(spec: TechniqueSpec) -> str:
    if not spec.args:
        return spec.name
    return spec.name + "(" + ",".join(f"{k}={v}" for k, v in spec.args.items()) + ")"


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*(steps?|epochs?|s|sec|seconds?|)\s*$")


def parse_budget(text: str) -> dict[str, Any]:
    """``6000`` / ``6000steps`` -> steps; ``10epochs`` -> epochs; ``90s`` -> wall-clock seconds."""
    m = _BUDGET.match(str(text).lower())
    if not m:
        raise ConfigError(f"--budget {text!r}: write a positive number of steps (6000 or 6000steps), "
                          f"epochs (10epochs) or seconds (90s)")
    value, unit = float(m.group(1)), m.group(2)
    if value <= 0:
        raise ConfigError(f"--budget {text!r}: the budget must be positive")
    if unit.startswith("epoch"):
        if not value.is_integer():
            raise ConfigError(f"--budget {text!r}: epochs must be a whole number")
        return {"epochs": int(value)}
    if unit in ("s", "sec", "second", "seconds"):
        return {"seconds": value}
    if not value.is_integer():
        raise ConfigError(f"--budget {text!r}: steps must be a whole number")
    return {"steps": int(value)}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:key=value;key=value`` -> (NAME, overrides): a variant that changes recipe keys (a schedule, an
    optimizer, a batch size) instead of adding a technique."""
    name, sep, rest = text.partition(":")
    overrides = [o.strip() for o in rest.split(";") if o.strip()]
    if not name.strip() or not sep or not overrides:
        raise ConfigError(f"--variant {text!r}: write NAME:key=value[;key=value...], "
                          f"e.g. one_cycle:schedule.name=one_cycle")
    return name.strip(), overrides


def make_plan(base: Recipe, techniques: Sequence[str], combos: Sequence[str], seeds: list[int],
              budget: str | None = None, variants_spec: Sequence[str] = ()) -> AblationPlan:
    """Baseline = ``base`` as given; each technique (and each ``a+b`` combination) is appended to it, and each
    ``--variant NAME:overrides`` changes the baseline's recipe keys."""
    from tricklab.lab.recipe import apply_override
    from tricklab.lab.runner import validate

    base_dict = base.to_dict()
    if budget is not None:
        base_dict["budget"] = parse_budget(budget)
    base_dict["seeds"] = list(seeds)
    baseline = recipe_from_dict(base_dict)
    specs = [parse_technique(t) for t in techniques]
    names = {s.name for s in specs}
    groups: list[list[TechniqueSpec]] = [[s] for s in specs]
    for combo in combos:
        members = [c.strip() for c in combo.split("+") if c.strip()]
        if len(members) < 2:
            raise ConfigError(f"--combo {combo!r}: a combination joins two or more techniques with '+'")
        group = []
        for m in members:
            found = [s for s in specs if s.name == m or _label(s) == m]
            group.append(found[0] if found else parse_technique(m))
            if not found and m not in names:
                names.add(m)
        groups.append(group)
    variants = [Variant("baseline", baseline)]
    for group in groups:
        d = copy.deepcopy(base_dict)
        d["techniques"] = [dataclasses.asdict(t) for t in baseline.techniques] + [dataclasses.asdict(s) for s in group]
        recipe = recipe_from_dict(d)
        name = "+".join(_label(s) for s in group)
        if any(v.name == name for v in variants):
            raise ConfigError(f"technique {name!r} is listed twice")
        try:
            validate(recipe)  # unknown names, bad arguments and conflicts are refused before any run
        except UserError as e:
            raise type(e)(f"variant {name!r}: {e}") from None
        variants.append(Variant(name, recipe))
    for text in variants_spec:
        name, overrides = parse_variant(text)
        d = copy.deepcopy(base_dict)
        for o in overrides:
            if o.split("=", 1)[0].strip() in ("seed", "seeds", "budget", "budget.steps", "budget.epochs",
                                              "budget.seconds"):
                raise ConfigError(f"--variant {text!r}: {o!r} would break the equal budget and seeds of the comparison")
            apply_override(d, o)
        recipe = recipe_from_dict(d)
        if any(v.name == name for v in variants):
            raise ConfigError(f"variant {name!r} is listed twice")
        try:
            validate(recipe)
        except UserError as e:
            raise type(e)(f"variant {name!r}: {e}") from None
        variants.append(Variant(name, recipe))
    if not seeds:
        raise ConfigError("--seeds must be at least 1")
    validate(baseline)
    return AblationPlan(baseline, variants, list(seeds))


# ------------------------------------------------------------------------------------------ worker
def _worker_init(threads: int) -> None:
    # die with the driver: an orphan finishing a run while a re-run redoes it would write it twice
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _run_one(store_path: str, run_key: str, variant: str, recipe_dict: dict[str, Any], seed: int,
             run_dir: str) -> dict[str, Any]:
    """Train one (variant, seed) and record it in the store; returns a short result for progress lines."""
    from tricklab.lab.runner import run
    from tricklab.lab.store import Store

    recipe = recipe_from_dict(recipe_dict)
    store = Store(store_path)
    try:
        run_id = store.claim(run_key, variant, recipe.hash(), seed, recipe.to_dict())
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished attempt is redone from scratch
        try:
            result = run(recipe, out=run_dir)
        except Exception as e:  # noqa: BLE001 - recorded in the store; the ablation goes on
            store.fail(run_id, f"{type(e).__name__}: {e}")
            return {"variant": variant, "seed": seed, "status": "failed", "error": f"{type(e).__name__}: {e}"}
        env = json.loads((Path(run_dir) / "env.json").read_text())
        store.finish(run_id, env, result.summary, result.trainer.state.history)
        return {"variant": variant, "seed": seed, "status": "done",
                "accuracy": result.summary["test"]["accuracy"], "seconds": result.summary["train_seconds"]}
    finally:
        store.close()


# ------------------------------------------------------------------------------------------ driver
def run_key(recipe: Recipe, seed: int) -> str:
    return f"{recipe.hash()}:{seed}"


def run_ablation(plan: AblationPlan, out: Path, jobs: int = 1, say: Any = print) -> dict[str, Any]:
    """Run every (variant, seed) not yet done in ``out``'s store; returns the ablation summary."""
    from tricklab.lab.stats import ablation_summary
    from tricklab.lab.store import Store

    out.mkdir(parents=True, exist_ok=True)
    store_path = out / "store.sqlite"
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
        seeds_before = set(store.get_meta("seeds") or [])
        store.set_meta("seeds", sorted(seeds_before | set(plan.seeds)))
        todo = []
        for v in plan.variants:
            for seed in plan.seeds:
                key = run_key(v.recipe, seed)
                row = store.get(key)
                if row is not None and row.status == "done":
                    continue
                todo.append((v, seed, key))
    finally:
        store.close()
    total = len(plan.variants) * len(plan.seeds)
    done_before = total - len(todo)
    if done_before:
        say(f"{done_before} of {total} runs already finished in {out}; running the other {len(todo)}")
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    started = time.perf_counter()
    if todo:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                 initargs=(threads,)) as pool:
            pending: dict[Future[dict[str, Any]], tuple[str, int]] = {}
            for v, seed, key in todo:
                rd = dataclasses.replace(v.recipe, seed=seed, progress=False, threads=v.recipe.threads or threads)
                run_dir = out / "runs" / _safe(v.name) / f"seed-{seed}"
                fut = pool.submit(_run_one, str(store_path), key, v.name, rd.to_dict(), seed, str(run_dir))
                pending[fut] = (v.name, seed)
            finished = done_before
            while pending:
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in ready:
                    name, seed = pending.pop(fut)
                    finished += 1
                    res = fut.result()
                    elapsed = time.perf_counter() - started
                    if res["status"] == "done":
                        say(f"[{finished}/{total}] {name} seed {seed}: test accuracy {res['accuracy']:.4f} "
                            f"({res['seconds']:.1f}s training; {elapsed:.0f}s elapsed)")
                    else:
                        say(f"[{finished}/{total}] {name} seed {seed}: FAILED {res['error']}")
    store = Store(store_path)
    try:
        return ablation_summary(store)
    finally:
        store.close()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)


def load_base(recipe_path: str | None, overrides: Sequence[str]) -> Recipe:
    from tricklab.lab.recipe import apply_override, load_recipe

    if recipe_path is not None:
        return load_recipe(recipe_path, overrides)
    data = copy.deepcopy(BASELINE_RECIPE)
    for o in overrides:
        apply_override(data, o)
    return recipe_from_dict(data)


def collect(folder: Path) -> tuple[dict[str, Any], dict[str, list[list[dict[str, Any]]]], dict[str, Any]]:
    """(statistics summary, learning curves per variant and seed, setting) read from ``folder``'s store."""
    from tricklab.lab.stats import ablation_summary
    from tricklab.lab.store import Store

    path = Path(folder) / "store.sqlite"
    if not path.is_file():
        raise UserError(f"{folder} holds no ablation store (store.sqlite); run `tricklab ablate --out {folder}` first")
    store = Store(path)
    try:
        summary = ablation_summary(store)
        done = store.runs(status="done")
        curves: dict[str, list[list[dict[str, Any]]]] = {}
        for r in done:
            curves.setdefault(r.variant, []).append(store.steps(r.id))
        base = store.get_meta("baseline_recipe") or {}
        env = done[0].env if done and done[0].env else {}
        setting = {
            "task": base.get("task"), "model": (base.get("model") or {}).get("name"),
            "budget": base.get("budget"), "seeds": store.get_meta("seeds") or [],
            "machine": {k: env.get(k) for k in ("cpu", "cpu_count", "torch_threads", "torch", "python", "gpu")},
            "recipe_hash": recipe_from_dict(base).hash() if base else None, "baseline_recipe": base,
            "runs_done": len(done), "runs_total": len(store.runs()),
        }
    finally:
        store.close()
    return summary, curves, setting


def write_outputs(folder: Path, cards_dir: Path | None = None) -> tuple[Path, list[Path]]:
    """Rebuild report.html (and the cards, when ``cards_dir`` is given) from the store."""
    from tricklab.lab.cards import write_cards
    from tricklab.lab.report import write_report

    summary, curves, setting = collect(folder)
    report = write_report(Path(folder), summary, curves, setting)
    cards = write_cards(summary, setting, Path(cards_dir)) if cards_dir is not None else []
    return report, cards


_MARK = {"helps": ("+", "green"), "hurts": ("-", "red"), "no clear effect": ("~", "")}
_SHORT = {"accuracy": "accuracy", "macro_f1": "macro-F1", "nll": "NLL", "ece": "ECE", "brier": "Brier",
          "train_seconds": "train time s", "latency_ms": "latency ms"}


def verdict_table(summary: dict[str, Any], keys: Sequence[str] = ("accuracy", "macro_f1", "nll", "ece",
                                                                    "train_seconds")) -> Any:
    """A rich table: technique x metric, the paired difference against the baseline as mean ± the half-width
    of its 95% interval (the paired-t interval is symmetric), with the verdict."""
    from rich.table import Table

    metrics = {m["key"]: m for m in summary["metrics"]}
    table = Table(title="technique - baseline, paired by seed: mean ± 95% CI half-width",
                  caption="+ helps, - hurts, ~ no clear effect (the interval includes 0)")
    table.add_column("technique", no_wrap=True)
    for k in keys:
        m = metrics.get(k, {"label": k, "higher_is_better": True})
        table.add_column(f"{_SHORT.get(k, m['label'])} {'↑' if m['higher_is_better'] else '↓'}", justify="right", no_wrap=True)
    for v in summary["variants"][1:]:
        cells = []
        for k in keys:
            p = summary["paired"].get(v, {}).get(k)
            if not p or p.get("mean_diff") is None:
                cells.append("n/a")
                continue
            if p.get("ci_low") is None:
                cells.append(f"{p['mean_diff']:+.3g} (no CI: 1 seed)")
                continue
            half = (p["ci_high"] - p["ci_low"]) / 2
            mark, colour = _MARK.get(p["verdict"], (p["verdict"], ""))
            text = f"{p['mean_diff']:+.2g} ± {half:.2g} {mark}"
            cells.append(f"[{colour}]{text}[/{colour}]" if colour else text)
        table.add_row(v, *cells)
    return table


__all__ = ["AblationPlan", "BASELINE_RECIPE", "DEFAULT_TECHNIQUES", "Variant", "collect", "load_base", "make_plan",
           "parse_budget", "parse_technique", "parse_variant", "run_ablation", "run_key", "verdict_table", "write_outputs"]
