"""The ``tricklab`` command: every subcommand's parser, the command-line grammar (``name:key=value``
techniques, ``a+b`` combinations, ``NAME:key=value;...`` variants, budgets) and the terminal tables.

Exit status: 0 success; 2 bad input (the message says what and where, no traceback); 1 failure during
training (the message says why and where the log is); 130 interrupted.

Output goes through :class:`tricklab.io.PipeSafeStream`: ``tricklab run ... | head`` closing the pipe
silences the output, never the training. Text that comes from users or registries (variant names, technique
summaries) is escaped before rich prints it, so brackets in it are shown, not read as markup.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tricklab import __version__
from tricklab.data import DATASETS
from tricklab.errors import TrainingError, UserError
from tricklab.io import PipeSafeStream
from tricklab.lab.ablate import (
    BASELINE_NAME,
    DEFAULT_TECHNIQUES,
    load_base,
    run_ablation,
    technique_label,  # noqa: F401  (the search command of the tune branch uses it)
    write_outputs,
)
from tricklab.lab.backends import BACKENDS, Backend, make_backend
from tricklab.lab.format import format_value
from tricklab.lab.grammar import parse_budget, parse_combo, parse_technique, parse_variant, plan_ablation
from tricklab.lab.kinds import KIND_OF_TARGET, KINDS
from tricklab.lab.lr_find import SUGGESTIONS, lr_find
from tricklab.lab.metrics import METRICS, MetricInfo, primary_metric
from tricklab.lab.recipe import (
    DEFAULT_NAME,
    EMBEDDED,
    Recipe,  # noqa: F401  (the tune branch's commands use it)
    describe_embedded,
    load_recipe,
    parse_yaml,  # noqa: F401  (the tune branch's commands use it)
    recipe_arguments,
    recipe_from_dict,
)
from tricklab.lab.runner import resume_recipe, run
from tricklab.lab.salvage import damage_message, salvage
from tricklab.lab.search import run_search, search_space
from tricklab.lab.space import load_space, overrides_of, parse_space
from tricklab.lab.store import Store, StoreDamaged
from tricklab.lab.summary import AblationSummary, RunSummary
from tricklab.lab.tasks import TASKS, LoopTask
from tricklab.lab.tune import TuneConfig, optimize, resolve_objective, write_best
from tricklab.lab.tune_report import write_study_page
from tricklab.layers.registry import LAYERS
from tricklab.losses import LOSSES
from tricklab.models import MODELS
from tricklab.optim import OPTIMIZERS
from tricklab.schedules import SCHEDULES
from tricklab.techniques import TECHNIQUES

__all__ = ["build_parser", "main", "parse_budget", "parse_combo", "parse_technique", "parse_variant",
           "plan_ablation", "table_keys", "task_rows", "verdict_table"]


# ------------------------------------------------------------------------------------------------ tables
_MARK = {"helps": ("+", "green"), "hurts": ("-", "red"), "no clear effect": ("~", ""),
         "within noise": ("~ noise", ""), "not judged": ("", "")}
_SHORT = {"accuracy": "accuracy", "macro_f1": "macro-F1", "nll": "NLL", "ece": "ECE", "brier": "Brier",
          "train_seconds": "train time s", "latency_ms": "latency ms"}


def _short_robust(key: str) -> str | None:
    """``robust:pgd_accuracy`` -> ``PGD``, ``robust:noise_accuracy_0.1`` -> ``σ=0.1`` (accuracies)."""
    if not key.startswith("robust:"):
        return None
    name = key[len("robust:"):]
    if name.startswith("noise_accuracy_"):
        return f"σ={name[len('noise_accuracy_'):]}"
    return name.replace("_accuracy", "").upper()


def _verdict_text(summary: AblationSummary, variant: str, key: str) -> str:
    p = summary.difference(variant, key)
    if p is None or p.mean_diff is None:
        return "n/a"
    if p.identical:
        return "= identical"
    if p.half_width is None:
        return f"{p.mean_diff:+.3g} (no CI: 1 seed)"
    mark, colour = _MARK.get(p.verdict, (p.verdict, ""))
    text = f"{p.mean_diff:+.2g} ± {p.half_width:.2g} {mark}".rstrip()
    return f"[{colour}]{escape(text)}[/{colour}]" if colour else escape(text)


_CLASSIFICATION_KEYS = ("accuracy", "macro_f1", "nll", "ece", "train_seconds")


def table_keys(summary: AblationSummary) -> tuple[str, ...]:
    """The metrics the terminal shows: a classifier's usual five (three when robustness metrics follow); for
    another kind its first four quality metrics and the training time; then the robustness metrics."""
    primary, robust = summary.primary, [m.key for m in summary.robust_metrics]
    if primary is None or (primary.key == "accuracy" and summary.metric("macro_f1") is not None):
        # with robustness metrics, room for them: accuracy, NLL and time of the usual five
        keys: list[str] = list(_CLASSIFICATION_KEYS) if not robust else ["accuracy", "nll", "train_seconds"]
    else:
        quality = [m.key for m in summary.metrics if m.kind == "quality" and m.source == "test"][:4]
        keys = quality + [m.key for m in summary.metrics if m.key == "train_seconds"]
    return tuple(keys + robust)


def verdict_table(summary: AblationSummary, keys: Sequence[str] | None = None) -> Table:
    """A rich table: technique x metric, the paired difference against the baseline as mean ± the half-width
    of its 95% interval (the paired-t interval is symmetric), with the verdict (Holm-adjusted; a timing
    difference needs to exceed the noise floor). Default metrics: :func:`table_keys`."""
    keys = table_keys(summary) if keys is None else keys
    table = Table(title="technique - baseline, paired by seed: mean ± 95% CI half-width",
                  caption=f"+ helps, - hurts, ~ no clear effect, = identical in every run, ~ noise: a timing "
                          f"difference within the noise between identical runs. Verdicts use Holm-adjusted "
                          f"p-values over the {summary.family_size} comparisons of the report's verdict table.")
    table.add_column("technique", no_wrap=True)
    for k in keys:
        m = summary.metric(k)
        label = _SHORT.get(k) or _short_robust(k) or (m.label if m else k)
        table.add_column(f"{label} {m.arrow if m else '↑'}", justify="right", no_wrap=True)
    for v in summary.techniques:
        table.add_row(escape(v), *(_verdict_text(summary, v, k) for k in keys))
    return table


def _steps_text(s: RunSummary) -> str:
    conv = s.convergence
    if conv is None:
        return "not reached"
    secs = f" ({format_value(conv.seconds, '.1f')}s)"
    if conv.interpolated:
        return (f"{conv.step:,.0f}{secs}, interpolated between evaluations {conv.resolution} steps apart "
                f"(first evaluation at the target: step {conv.step_evaluated})")
    if conv.resolution:
        return f"{conv.step}{secs}, at or before this evaluation (evaluated every {conv.resolution} steps)"
    return f"{conv.step}{secs}"
def _declared_rows(s: RunSummary) -> list[tuple[str, str]]:
    """A run of another kind than classification (or a loop task): its declared metrics, then the run's."""
    rows = [(m.label, format_value(s.value(m), m.fmt)) for m in (s.metrics or ()) if m.source != "run"]
    cost = s.cost
    rows += [("optimizer steps" if s.task_kind != "loop" else "steps", str(s.steps)),
             ("training time (s)", format_value(s.train_seconds, ".1f"))]
    if cost is not None:
        rows += [("parameters", format_value(cost.parameters, ",")),
                 ("model size (bytes)", format_value(cost.model_size_bytes, ","))]
    return rows + _energy_rows(s)


def _energy_rows(s: RunSummary) -> list[tuple[str, str]]:
    e = s.energy
    if not e:
        return []
    low, high = format_value(e.get("energy_wh_low"), ".3g"), format_value(e.get("energy_wh_high"), ".3g")
    return [("training energy (Wh, estimate)", f"{format_value(e.get('energy_wh'), '.3g')} [{low}, {high}]"),
            (f"carbon (g CO2e at {format_value(e.get('grid_g_per_kwh'), '.0f')} g/kWh)",
             format_value(e.get("co2e_g"), ".3g"))]


def _summary_rows(s: RunSummary) -> list[tuple[str, str]]:
    if s.task_kind not in (None, "classification", "token"):
        return _declared_rows(s)
    test, cost = s.test, s.cost
    latency = cost.inference_latency.median_ms if cost and cost.inference_latency else None
    rows = [
        ("test accuracy", format_value(test.value("accuracy"), ".4f")),
        ("test macro-F1", format_value(test.value("macro_f1"), ".4f")),
        ("test NLL", format_value(test.value("nll"), ".4f")),
        ("test ECE (15 bins)", format_value(test.value("ece"), ".4f")),
        ("test Brier", format_value(test.value("brier"), ".4f")),
        ("optimizer steps", str(s.steps)),
        ("training time (s)", format_value(s.train_seconds, ".1f")),
        ("inference latency, median (ms/batch)", format_value(latency, ".2f")),
        ("parameters", format_value(cost.parameters if cost else None, ",")),
        ("model size (bytes)", format_value(cost.model_size_bytes if cost else None, ",")),
        (f"steps to {format_value(s.target_accuracy, '.0%')} eval accuracy", _steps_text(s)),
        *_energy_rows(s),
    ]
    if s.stop_reason:
        rows.append(("stopped", s.stop_reason))
    rows += [(m.label, format_value(s.value(m), m.fmt)) for m in (s.metrics or ()) if m.source in ("robust", "explain")]
    return rows


def _print_summary(summary: RunSummary, run_dir: Path, recipe: str) -> None:
    where = summary.task if summary.model is None else f"{summary.task} / {summary.model}"
    table = Table(title=f"{where} / seed {summary.seed}", show_header=True, caption=f"recipe: {escape(recipe)}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in _summary_rows(summary):
        table.add_row(k, escape(v))
    console = Console()
    console.print(table)
    console.print(f"run folder: {escape(str(run_dir))}")


def _recipe_label(path: str | None) -> str:
    """Which recipe a command uses, in words: the embedded default by name, or the file."""
    if path is None:
        return describe_embedded(DEFAULT_NAME)
    if path in EMBEDDED and not Path(path).exists():
        return describe_embedded(path)
    return str(path)


# ----------------------------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    recipe_path, overrides = recipe_arguments(args.recipe, args.overrides, args.data_dir)
    if args.resume:
        if args.out is None:
            raise UserError("--resume needs --out: the run folder to continue")
        recipe = resume_recipe(args.out, recipe_path, overrides)
        label = f"the run's own, {args.out / 'recipe.yaml'}" + (f", with {' '.join(overrides)}" if overrides else "")
    else:
        recipe = load_recipe(recipe_path, overrides)
        label = _recipe_label(recipe_path) + (f", with {' '.join(overrides)}" if overrides else "")
    main_process = int(os.environ.get("RANK", "0")) == 0
    if main_process:
        print(f"recipe: {label}", file=sys.stderr, flush=True)
    result = run(recipe, out=args.out, resume=args.resume)
    if main_process:
        _print_summary(result.summary, result.run_dir, label)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    recipe_path, overrides = recipe_arguments(args.recipe, args.overrides, args.data_dir)
    base = load_base(recipe_path, overrides)
    if args.techniques is not None:
        techniques = [t for t in args.techniques.split(",") if t.strip()]
    else:
        techniques = [] if args.variant else list(DEFAULT_TECHNIQUES)
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {args.seeds}")
    seeds = list(range(args.seeds)) if args.seeds is not None else list(base.seeds)
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    plan = plan_ablation(base, techniques, args.combo or [], seeds, args.budget, args.variant or [])
    out = args.out
    # a log or a pipe gets a wide table instead of rich's 80-column default, which would truncate cells
    console = Console(width=None if sys.stdout.isatty() else 150)
    baseline = describe_embedded(BASELINE_NAME) if recipe_path is None else _recipe_label(recipe_path)
    console.print(f"ablation: {len(plan.variants)} variants ({escape(', '.join(v.name for v in plan.variants))}) x "
                  f"{len(seeds)} seeds, {args.jobs} worker(s), into {escape(str(out))}")
    console.print(f"baseline: {escape(baseline)}" + (f", with {escape(' '.join(overrides))}" if overrides else ""))
    if plan.control:
        console.print("control: the baseline runs a second time per seed, for the training-time noise floor")
    summary = run_ablation(plan, out, jobs=args.jobs, say=lambda m: print(m, flush=True),
                           backend=_backend(args, args.jobs))
    report, cards = write_outputs(out, out / "cards")
    console.print(verdict_table(summary))
    if len(seeds) < 2:
        console.print("one seed: the confidence intervals cannot be computed; use --seeds 2 or more")
    console.print(f"report: {escape(str(report))}")
    console.print(f"cards: {escape(str(out / 'cards'))} ({len(cards)} files)")
    return 0


def _stored_runs(folder: Path, recipe_hash: str | None, data: str | None, salvage_first: bool = False) -> list[Any]:
    path = folder / "store.sqlite"
    if not path.is_file():
        raise UserError(f"{folder} holds no ablation store (store.sqlite)")
    if salvage_first:
        salvage(folder)
    store = Store(path)
    try:
        return store.runs(recipe_hash=recipe_hash, data_fingerprint=data)
    finally:
        store.close()


def cmd_runs(args: argparse.Namespace) -> int:
    folders = list(args.dir) or [Path("runs/ablation")]
    found = [(folder, r) for folder in folders
             for r in _stored_runs(folder, args.recipe_hash, args.data_fingerprint, args.salvage)]
    chosen = [f"{k} {v}*" for k, v in (("recipe hash", args.recipe_hash), ("data", args.data_fingerprint)) if v]
    where = str(folders[0] / "store.sqlite") if len(folders) == 1 else f"{len(folders)} stores"
    table = Table(title=f"runs in {where}" + (f" with {' and '.join(chosen)}" if chosen else ""))
    columns = ("variant", "seed", "status", "headline metric", "training s", "recipe hash", "data fingerprint")
    for col in (("store",) if len(folders) > 1 else ()) + columns:
        table.add_column(col, overflow="fold")
    for folder, r in found:
        cells = (escape(r.variant), str(r.seed), r.status, *_run_cells(r.summary), r.recipe_hash,
                 (r.data_fingerprint or "")[: args.width])
        table.add_row(*((str(folder),) if len(folders) > 1 else ()), *cells)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if not found:
        print("no run matches" if chosen else "the store holds no run")
    return 0


def _run_cells(summary: dict[str, Any] | None) -> tuple[str, str]:
    """(headline metric as 'name value', training seconds) of a stored run summary."""
    if not summary:
        return "", ""
    s = RunSummary.from_dict(summary)
    p = primary_metric(s.metrics or METRICS)
    value = "" if p is None else f"{p.name} {format_value(s.value(p), p.fmt)}"
    return value, format_value(s.train_seconds, ".1f")


def cmd_report(args: argparse.Namespace) -> int:
    report, _ = write_outputs(args.dir)
    print(f"report: {report}")
    return 0


def cmd_cards(args: argparse.Namespace) -> int:
    _, cards = write_outputs(args.dir, args.to if args.to is not None else args.dir / "cards")
    for c in cards:
        print(c)
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    recipe = load_recipe(*recipe_arguments(args.recipe, args.overrides, args.data_dir))
    if args.steps < 3:
        raise UserError(f"--steps must be at least 3, got {args.steps}")
    result = lr_find(recipe, args.out, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps)
    print(f"lr range test: {len(result['lrs'])} steps from {args.start_lr:g} to {result['lrs'][-1]:.3g}"
          + (" (stopped: the loss diverged)" if result["stopped_early"] else ""))
    for key, label in SUGGESTIONS.items():
        lr = result["suggestions"][key]
        print(f"  {label:>16}: {'n/a' if lr is None else f'{lr:.3g}'}")
    print(_lr_advice(result["suggestions"]))
    print(f"plot: {args.out / 'lr_find.png'}  data: {args.out / 'lr_find.json'}")
    return 0


def _backend(args: argparse.Namespace, jobs: int) -> Backend | None:
    """The backend of ``--backend`` (None: the default local pool); one torch thread share per job."""
    if args.backend == "local" and args.address is None:
        return None
    return make_backend(args.backend, jobs, max(1, (os.cpu_count() or 1) // max(jobs, 1)), args.address)


def _tuning_inputs(args: argparse.Namespace) -> tuple[Recipe, Recipe, TuneConfig]:
    """(the recipe as given, the recipe the trials run: with the budget and the validation split, the
    tuner's configuration) of a tune or search command line."""
    base = load_base(*recipe_arguments(args.recipe, args.overrides, args.data_dir))
    budget = getattr(args, "budget", None)
    if budget is not None:
        base = recipe_from_dict({**base.to_dict(), "budget": parse_budget(budget)})
    trial_base = base
    if args.val_fraction is not None:
        if not 0.0 < args.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in (0, 1), got {args.val_fraction}")
        trial_base = recipe_from_dict({**base.to_dict(), "data": {**base.to_dict()["data"],
                                                                  "val_fraction": args.val_fraction}})
    cfg = TuneConfig(trials=args.trials, sampler=args.sampler, pruner=args.pruner, storage=args.storage,
                     study_name=args.study_name, jobs=args.jobs, seed=args.seed)
    cfg.check()
    return base, trial_base, cfg


def _confirm_command(args: argparse.Namespace, overrides: list[str]) -> str:
    parts = ["tricklab ablate"] + ([args.recipe] if args.recipe else []) + list(args.overrides)
    variant = "tuned:" + ";".join(overrides)
    return " ".join(parts + ['--techniques ""', f"--variant '{variant}'", "--seeds 5",
                             f"--out {args.out / 'confirm'}"])


def cmd_tune(args: argparse.Namespace) -> int:
    base, trial_base, cfg = _tuning_inputs(args)
    space = load_space(args.space, trial_base)
    say = lambda m: print(m, flush=True)  # noqa: E731
    objective = resolve_objective(trial_base, args.metric, say)
    say(f"tuning {len(space.params)} keys ({'; '.join(p.describe() for p in space.params)}) for "
        f"{objective.describe()} ({objective.direction}): {cfg.trials} trials, {cfg.sampler} sampler, "
        f"{cfg.pruner} pruner, {cfg.jobs} worker(s), into {args.out}")
    result = optimize(trial_base, space, objective, cfg, args.out, say, _backend(args, cfg.jobs))
    sections = []
    if result.best_values is not None:
        best = write_best(args.out / "best.yaml", base, space, result.best_values)
        command = _confirm_command(args, overrides_of(base.to_dict(), result.best_values, space))
        say(f"best: trial {result.best_trial}, {objective.describe()} {result.best_value:.4f}, "
            f"{result.best_values}\nbest recipe: {best}\nconfirm over fresh seeds: {command}")
        sections = [("Best recipe", best.read_text(encoding="utf-8")), ("Confirm over fresh seeds", command)]
    else:
        say("no trial completed: no best recipe")
    page = write_study_page(args.out / "report.html", result.study, f"tricklab tune: {base.task}/{base.model.name}",
                            objective.describe(), objective.metric.higher_is_better, space.keys(), sections)
    say(f"report: {page}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    base, trial_base, cfg = _tuning_inputs(args)
    specs = [parse_technique(t) for t in args.techniques.split(",") if t.strip()]
    if args.space and not Path(args.space).is_file():
        raise UserError(f"--space {args.space!r} does not exist")
    extra = parse_space(parse_yaml(Path(args.space).read_text(encoding="utf-8"), args.space), args.space) \
        if args.space else []
    space = search_space(trial_base, specs, extra)
    if args.seeds_confirm < 0:
        raise UserError(f"--seeds-confirm must be 0 or more, got {args.seeds_confirm}")
    say = lambda m: print(m, flush=True)  # noqa: E731
    objective = resolve_objective(trial_base, args.metric, say)
    say(f"searching {len(specs)} techniques ({', '.join(s.name for s in specs)}) at budget {base.budget}, for "
        f"{objective.describe()}: {cfg.trials} trials, {cfg.sampler} sampler, {cfg.pruner} pruner, into {args.out}")
    result = run_search(base, trial_base, space, objective, cfg, args.out, list(range(args.seeds_confirm)), say,
                        lambda: _backend(args, cfg.jobs))
    label = "+".join(technique_label(s) for s in result.winner) or "the baseline"
    sections = [("Winner", label)]
    page = write_study_page(args.out / "report.html", result.study.study, f"tricklab search: {base.task}/"
                            f"{base.model.name}", objective.describe(), objective.metric.higher_is_better,
                            space.keys(), sections)
    say(f"winner: {label} ({objective.describe()} {result.study.best_value})\nsearch page: {page}")
    if result.confirmation is not None:
        Console(width=None if sys.stdout.isatty() else 150).print(verdict_table(result.confirmation))
        say(f"confirmation report: {result.confirm_dir / 'report.html'}; cards: {result.confirm_dir / 'cards'}")
    return 0


def _lr_advice(suggestions: dict[str, float | None]) -> str:
    """Which of the suggestions to use: the valley (the middle of the descent, docs/lr_find.md), else the
    steepest point, else the min-loss rule."""
    for key, why in (("valley", "the middle of the descent into the lowest loss"),
                     ("steepest", "the steepest descent (no clear valley)"),
                     ("min_div10", "the lowest loss / 10 (the curve has no clear descent)")):
        lr = suggestions.get(key)
        if lr is not None:
            return (f"use: optimizer.lr={lr:.3g} ({why}); for one_cycle, whose lr is the peak, take a value near "
                    f"the steepest point or a little above")
    return "no suggestion: the loss never fell; widen --start-lr / --end-lr or check the recipe"


REGISTRIES: dict[str, Any] = {"tasks": TASKS, "datasets": DATASETS, "models": MODELS, "optimizers": OPTIMIZERS,
                              "schedules": SCHEDULES, "techniques": TECHNIQUES, "layers": LAYERS, "losses": LOSSES}


def _metric_names(metrics: Sequence[MetricInfo], kind: str = "") -> str:
    # run-level metrics (time, size) are every trained run's; bits per token is measured for token tasks only
    return ", ".join(f"{m.key} {m.arrow}" + ("" if m.judged else " (shown)") for m in metrics
                     if m.source != "run" and (not m.optional or kind == "token"))


def task_rows() -> list[tuple[str, str, str, str]]:
    """(name, kind, metrics, summary) of every registered task, for ``tricklab list tasks``."""
    rows = []
    for name, task in TASKS.items():
        if task.kind == "auto":
            kind = "auto: " + " | ".join(KIND_OF_TARGET.values())
            metrics = "those of the kind the data call for (table below)"
        else:
            kind = task.kind
            metrics = _metric_names(task.metrics if isinstance(task, LoopTask) else task.declared_metrics(), kind)
        rows.append((name, kind, metrics, TASKS.summary(name)))
    return rows


def _tasks_table() -> Table:
    table = Table(title="tasks", title_justify="left")
    for col in ("name", "kind", "metrics (↑ higher / ↓ lower is better)", "summary"):
        table.add_column(col, overflow="fold")
    for row in task_rows():
        table.add_row(*(escape(c) for c in row))
    kinds = Table(title="task kinds (task_args.kind; every trained run also reports time, latency and size)",
                  title_justify="left")
    for col in ("kind", "what", "metrics", "options (task_args)"):
        kinds.add_column(col, overflow="fold")
    for k in KINDS.values():
        opts = ", ".join(f"{o}={d!r}" for o, (d, _) in k.options.items()) or "—"
        kinds.add_row(k.name, escape(k.summary), escape(_metric_names(k.metrics, k.name)), escape(opts))
    grid = Table.grid()
    grid.add_row(table)
    grid.add_row(kinds)
    return grid


def cmd_explain(args: argparse.Namespace) -> int:
    # imported here: the explanation page needs matplotlib (the `plots` extra), which other commands do not
    from tricklab.explain.report import explain_run, recipe_task

    task = recipe_task(args.run_dir)  # a UserError when RUN_DIR holds no recipe.yaml
    dataset = TASKS.get(task).dataset if task in TASKS and not isinstance(TASKS.get(task), LoopTask) else None
    page = explain_run(args.run_dir, args.method, args.examples, args.out, dataset=dataset, seed=args.seed,
                       progress=lambda line: print(line, file=sys.stderr))
    print(page)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    console = Console(width=None if sys.stdout.isatty() else 160)
    for title, reg in REGISTRIES.items():
        if args.what and title != args.what:
            continue
        if title == "tasks":
            console.print(_tasks_table())
            continue
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("summary")
        for name in reg.names():
            table.add_row(escape(name), escape(reg.summary(name)))
        console.print(table)
    return 0


# ------------------------------------------------------------------------------------------------ parsers
Sub = Any  # argparse's _SubParsersAction


def _recipe_arguments(p: argparse.ArgumentParser, recipe_help: str, overrides_help: str) -> None:
    p.add_argument("recipe", nargs="?", help=recipe_help)
    p.add_argument("overrides", nargs="*", help=overrides_help)


def _add_run(sub: Sub) -> None:
    p = sub.add_parser("run", help="train one recipe (default: mnist1d-cnn, the paper's CNN and Adam plus a cosine "
                                   "schedule and label smoothing)")
    _recipe_arguments(p, "recipe YAML file, or an embedded recipe by name: mnist1d-cnn (the default), "
                         "mnist1d-cnn-paper",
                      "key=value overrides, e.g. optimizer.lr=0.001 budget.steps=500")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<task>-<model>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest valid checkpoint, with the recipe saved there "
                        "(overrides are accepted only when they leave it unchanged)")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the data set's files (e.g. Fashion-MNIST IDX files)")
    p.set_defaults(func=cmd_run)


def _add_ablate(sub: Sub) -> None:
    p = sub.add_parser("ablate",
                       help="baseline vs each technique added to it, over seeds, with statistics and a report")
    _recipe_arguments(p, "baseline recipe YAML (omit for mnist1d-cnn-paper: MNIST-1D, the paper's CNN and setting)",
                      "key=value overrides of the baseline recipe")
    p.add_argument("--techniques", default=None,
                   help="comma-separated techniques, each name or name:key=value:... "
                        "(default: label_smoothing,mixup,ema,grad_clip)")
    p.add_argument("--combo", action="append", help="a combination to run too, e.g. ema+label_smoothing (repeatable)")
    p.add_argument("--variant", action="append",
                   help="a variant that changes recipe keys: NAME:key=value[;key=value] (repeatable), "
                        "e.g. one_cycle:schedule.name=one_cycle")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1; default: the recipe's seeds)")
    p.add_argument("--budget", default=None, help="equal budget for every run: 6000 (steps), 10epochs or 90s")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default 2)")
    p.add_argument("--out", type=Path, default=Path("runs/ablation"), help="output folder (default runs/ablation)")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    _backend_arguments(p)
    p.set_defaults(func=cmd_ablate)


def _backend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=list(BACKENDS), default="local",
                   help="where the runs train: local worker processes (default) or a Ray cluster")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the cluster address (default: start a local Ray instance; "
                        "'auto': a running local cluster)")


def _tuning_arguments(p: argparse.ArgumentParser, trials: int) -> None:
    _recipe_arguments(p, "recipe YAML (omit for MNIST-1D, the paper's CNN and setting)",
                      "key=value overrides of the recipe")
    p.add_argument("--trials", type=int, default=trials, help=f"trials in the study (default {trials})")
    p.add_argument("--sampler", choices=["tpe", "gp", "random", "grid"], default="tpe",
                   help="TPE (default), a Gaussian process, random or grid search")
    p.add_argument("--pruner", choices=["hyperband", "median", "none"], default="hyperband",
                   help="stop trials early from their evaluations during training (default hyperband)")
    p.add_argument("--metric", default="accuracy", help="the objective: a metric of the lab (default accuracy)")
    p.add_argument("--val-fraction", type=float, default=None,
                   help="carve this fraction of the training set as the validation split the objective reads")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///OUT/study.sqlite)")
    p.add_argument("--study-name", default=None, help="the study's name in the storage (default: derived)")
    p.add_argument("--seed", type=int, default=1000,
                   help="the trials' seed (default 1000: ablations with seeds 0..N-1 then confirm on fresh seeds)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="trials at once (default 2)")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    _backend_arguments(p)


def _add_tune(sub: Sub) -> None:
    p = sub.add_parser("tune", help="tune recipe keys with Optuna (TPE, GP, random, grid; Hyperband pruning)")
    _tuning_arguments(p, trials=20)
    p.add_argument("--space", required=True, help="YAML file: recipe keys -> ranges (see docs/lab-tuning.md)")
    p.add_argument("--out", type=Path, default=Path("runs/tune"), help="output folder (default runs/tune)")
    p.set_defaults(func=cmd_tune)


def _add_search(sub: Sub) -> None:
    p = sub.add_parser("search", help="the best set of compatible techniques at a fixed budget, confirmed over "
                                      "fresh seeds")
    _tuning_arguments(p, trials=24)
    p.add_argument("--techniques", required=True, help="comma-separated techniques to switch on or off")
    p.add_argument("--budget", required=True, help="the budget of every run: 2000 (steps), 10epochs or 90s")
    p.add_argument("--space", default=None, help="YAML: ranges of the techniques' arguments "
                                                 "(techniques.<name>.<arg>)")
    p.add_argument("--seeds-confirm", type=int, default=5,
                   help="fresh seeds (0..K-1) of the confirmation ablation (default 5; 0: none)")
    p.add_argument("--out", type=Path, default=Path("runs/search"), help="output folder (default runs/search)")
    p.set_defaults(func=cmd_search)


def _add_store_commands(sub: Sub) -> None:
    p = sub.add_parser("runs", help="list the runs in an ablation folder's store (which data and which settings "
                                    "produced each)")
    p.add_argument("dir", type=Path, nargs="*", help="ablation folders (default runs/ablation)")
    p.add_argument("--recipe-hash", default=None, help="only runs whose resolved-recipe hash starts with this")
    p.add_argument("--data-fingerprint", default=None, help="only runs whose data fingerprint starts with this")
    p.add_argument("--width", type=int, default=16, help="characters of the data fingerprint shown (default 16)")
    p.add_argument("--salvage", action="store_true",
                   help="rebuild a damaged store from every run it or the run folders still give (the damaged "
                        "file is kept as store.sqlite.damaged)")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("report", help="rebuild report.html from an ablation folder's store")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs/ablation"))
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("cards", help="write technique cards (markdown + JSON) from an ablation folder's store")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs/ablation"))
    p.add_argument("--to", type=Path, default=None, help="folder for the cards (default DIR/cards)")
    p.set_defaults(func=cmd_cards)


def _add_lr_find(sub: Sub) -> None:
    p = sub.add_parser("lr-find", help="learning-rate range test (Smith 2017): plot loss vs lr, suggest an lr")
    _recipe_arguments(p, "recipe YAML file (omit for the embedded default)",
                      "key=value overrides, e.g. optimizer.name=sgd")
    p.add_argument("--out", type=Path, default=Path("runs/lr-find"), help="output folder (default runs/lr-find)")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first lr of the sweep (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last lr of the sweep (default 10)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps in the sweep (default 100)")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files")
    p.set_defaults(func=cmd_lr_find)


def cmd_export(args: argparse.Namespace) -> int:
    # imported here: ONNX export needs the `export` extra (onnx, onnxscript, onnxruntime)
    from tricklab.compress.export import export_run

    written = export_run(args.run_dir, args.format, args.quantize, args.out)
    for key, value in written.items():
        print(f"{key}: {value}")
    return 0


def _add_export(sub: Sub) -> None:
    p = sub.add_parser("export", help="export a trained run's model: ONNX (checked against PyTorch with ONNX Runtime) "
                                      "or safetensors, optionally int8")
    p.add_argument("run_dir", type=Path, help="a run folder written by `tricklab run`")
    p.add_argument("--format", choices=("onnx", "torch"), default="onnx", help="output format (default onnx)")
    p.add_argument("--quantize", choices=("int8",), default=None,
                   help="static int8 weights calibrated on training examples (with --format torch)")
    p.add_argument("--out", type=Path, default=None, help="output file (default inside RUN_DIR)")
    p.set_defaults(func=cmd_export)


def _add_explain(sub: Sub) -> None:
    p = sub.add_parser("explain", help="attributions of a trained run's test examples as heat maps, with deletion "
                                       "and insertion scores per method (an HTML page)")
    p.add_argument("run_dir", type=Path,
                   help="a run folder written by `tricklab run` (recipe.yaml + model.safetensors)")
    p.add_argument("--method", action="append", default=None,
                   help="an attribution method (repeatable; default: all). One of: gradient, gradient_x_input, "
                        "smoothgrad, integrated_gradients, grad_cam, grad_cam_plus_plus, gradient_shap, deeplift, "
                        "deeplift_shap, kernel_shap, random")
    p.add_argument("--examples", type=int, default=8, help="test examples to explain (default 8)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/explain)")
    p.add_argument("--seed", type=int, default=0, help="picks the examples and the random draws (default 0)")
    p.set_defaults(func=cmd_explain)


def _add_list(sub: Sub) -> None:
    p = sub.add_parser("list", help="print what is registered: tasks, data sets, models, optimizers, schedules, "
                                    "techniques, layers, losses")
    p.add_argument("what", nargs="?", choices=list(REGISTRIES), help="one registry only")
    p.set_defaults(func=cmd_list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tricklab", description="Deep-learning techniques, composed and measured.")
    parser.add_argument("--version", action="version", version=f"tricklab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    adders: tuple[Callable[[Sub], None], ...] = (_add_run, _add_ablate, _add_tune, _add_search, _add_store_commands,
                                                 _add_lr_find, _add_explain, _add_export, _add_list)
    for add in adders:
        add(sub)
    return parser


# --------------------------------------------------------------------------------------------------- main
def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    # key=value overrides may come after options (`run --out d a=1`), which argparse cannot
    # interleave with optional positionals: collect the leftovers that look like overrides
    args, extra = parser.parse_known_args(argv)
    bad = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if bad:
        parser.error(f"unrecognized arguments: {' '.join(bad)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def _log_failure(args: argparse.Namespace, e: Exception) -> str:
    """Write the traceback next to the output, or, for a command without one (the read-only commands, a run
    without --out), into the temporary folder: never into the current folder. Returns where it went."""
    out = getattr(args, "out", None) if getattr(args, "func", None) in (cmd_run, cmd_ablate, cmd_lr_find) else None
    log = Path(out) / "error.log" if out else Path(tempfile.gettempdir()) / f"tricklab-error-{os.getpid()}.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc(), encoding="utf-8")
        return f"; the traceback is in {log}"
    except OSError:
        return ""


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args))
    except StoreDamaged as e:
        print(f"tricklab: error: {damage_message(e.path, e.detail)}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"tricklab: error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"tricklab: training failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tricklab: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: log the traceback, say where
        print(f"tricklab: training failed: {type(e).__name__}: {e}{_log_failure(args, e)}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    # a closed pipe (`tricklab run | head`) silences the output instead of stopping the command
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafeStream(stdout), PipeSafeStream(stderr)  # type: ignore[assignment]
    try:
        parser = build_parser()
        try:
            args = _parse(parser, argv)
        except SystemExit as e:  # argparse already printed its message; its code is 2 for bad usage
            return int(e.code or 0)
        return _dispatch(args)
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        sys.stdout, sys.stderr = stdout, stderr


if __name__ == "__main__":
    raise SystemExit(main())
