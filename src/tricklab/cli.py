"""The ``tricklab`` command: every subcommand's parser, the command-line grammar (``name:key=value``
techniques, ``a+b`` combinations, ``NAME:key=value;...`` variants, budgets) and the terminal tables.

Exit status: 0 success; 2 bad input (the message says what and where, no traceback); 1 failure during
training (the message says why and where the log is); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from tricklab import __version__
from tricklab.data import DATASETS
from tricklab.errors import ConfigError, TrainingError, UserError
from tricklab.lab.ablate import (
    DEFAULT_TECHNIQUES,
    AblationPlan,
    load_base,
    make_plan,
    run_ablation,
    technique_label,
    write_outputs,
)
from tricklab.lab.format import format_value
from tricklab.lab.lr_find import SUGGESTIONS, lr_find
from tricklab.lab.recipe import Recipe, TechniqueSpec, load_recipe, parse_yaml, recipe_arguments
from tricklab.lab.runner import run
from tricklab.lab.store import Store
from tricklab.lab.summary import AblationSummary, RunSummary
from tricklab.lab.tasks import TASKS
from tricklab.layers.registry import LAYERS
from tricklab.losses import LOSSES
from tricklab.models import MODELS
from tricklab.optim import OPTIMIZERS
from tricklab.schedules import SCHEDULES
from tricklab.techniques import TECHNIQUES

__all__ = ["build_parser", "main", "parse_budget", "parse_combo", "parse_technique", "parse_variant",
           "plan_ablation", "verdict_table"]


# ------------------------------------------------------------------------------------------------ grammar
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


def parse_combo(text: str, listed: Sequence[TechniqueSpec]) -> list[TechniqueSpec]:
    """``a+b[+c...]``: each member is a listed technique (by name or label, e.g. ``ema(decay=0.99)``) or a
    technique of its own (``name:key=value``)."""
    members = [c.strip() for c in text.split("+") if c.strip()]
    if len(members) < 2:
        raise ConfigError(f"--combo {text!r}: a combination joins two or more techniques with '+'")
    group = []
    for m in members:
        found = [s for s in listed if s.name == m or technique_label(s) == m]
        group.append(found[0] if found else parse_technique(m))
    return group


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


def plan_ablation(base: Recipe, techniques: Sequence[str], combos: Sequence[str], seeds: list[int],
                  budget: str | None = None, variants: Sequence[str] = ()) -> AblationPlan:
    """The ablation plan of command-line strings: ``--techniques`` items, ``--combo``, ``--budget``,
    ``--variant`` (see :func:`tricklab.lab.ablate.make_plan`)."""
    specs = [parse_technique(t) for t in techniques]
    return make_plan(base, specs, [parse_combo(c, specs) for c in combos], seeds,
                     None if budget is None else parse_budget(budget), [parse_variant(v) for v in variants])


# ------------------------------------------------------------------------------------------------ tables
_MARK = {"helps": ("+", "green"), "hurts": ("-", "red"), "no clear effect": ("~", "")}
_SHORT = {"accuracy": "accuracy", "macro_f1": "macro-F1", "nll": "NLL", "ece": "ECE", "brier": "Brier",
          "train_seconds": "train time s", "latency_ms": "latency ms"}


def _verdict_text(summary: AblationSummary, variant: str, key: str) -> str:
    p = summary.difference(variant, key)
    if p is None or p.mean_diff is None:
        return "n/a"
    if p.half_width is None:
        return f"{p.mean_diff:+.3g} (no CI: 1 seed)"
    mark, colour = _MARK.get(p.verdict, (p.verdict, ""))
    text = f"{p.mean_diff:+.2g} ± {p.half_width:.2g} {mark}"
    return f"[{colour}]{text}[/{colour}]" if colour else text


def verdict_table(summary: AblationSummary,
                  keys: Sequence[str] = ("accuracy", "macro_f1", "nll", "ece", "train_seconds")) -> Table:
    """A rich table: technique x metric, the paired difference against the baseline as mean ± the half-width
    of its 95% interval (the paired-t interval is symmetric), with the verdict."""
    table = Table(title="technique - baseline, paired by seed: mean ± 95% CI half-width",
                  caption="+ helps, - hurts, ~ no clear effect (the interval includes 0)")
    table.add_column("technique", no_wrap=True)
    for k in keys:
        m = summary.metric(k)
        label = _SHORT.get(k, m.label if m else k)
        table.add_column(f"{label} {m.arrow if m else '↑'}", justify="right", no_wrap=True)
    for v in summary.techniques:
        table.add_row(v, *(_verdict_text(summary, v, k) for k in keys))
    return table


def _summary_rows(s: RunSummary) -> list[tuple[str, str]]:
    test, cost = s.test, s.cost
    latency = cost.inference_latency.median_ms if cost and cost.inference_latency else None
    conv = s.convergence
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
        (f"steps to {format_value(s.target_accuracy, '.0%')} eval accuracy",
         f"{conv.step} ({format_value(conv.seconds, '.1f')}s)" if conv else "not reached"),
    ]
    if s.stop_reason:
        rows.append(("stopped", s.stop_reason))
    return rows


def _print_summary(summary: RunSummary, run_dir: Path) -> None:
    table = Table(title=f"{summary.task} / {summary.model} / seed {summary.seed}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in _summary_rows(summary):
        table.add_row(k, v)
    console = Console()
    console.print(table)
    console.print(f"run folder: {run_dir}")


# ----------------------------------------------------------------------------------------------- commands
def cmd_run(args: argparse.Namespace) -> int:
    recipe = load_recipe(*recipe_arguments(args.recipe, args.overrides, args.data_dir))
    result = run(recipe, out=args.out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(result.summary, result.run_dir)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    base = load_base(*recipe_arguments(args.recipe, args.overrides, args.data_dir))
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
    console.print(f"ablation: {len(plan.variants)} variants ({', '.join(v.name for v in plan.variants)}) x "
                  f"{len(seeds)} seeds, {args.jobs} worker(s), into {out}")
    summary = run_ablation(plan, out, jobs=args.jobs, say=lambda m: print(m, flush=True))
    report, cards = write_outputs(out, out / "cards")
    console.print(verdict_table(summary))
    if len(seeds) < 2:
        console.print("one seed: the confidence intervals cannot be computed; use --seeds 2 or more")
    console.print(f"report: {report}")
    console.print(f"cards: {out / 'cards'} ({len(cards)} files)")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    path = args.dir / "store.sqlite"
    if not path.is_file():
        raise UserError(f"{args.dir} holds no ablation store (store.sqlite)")
    store = Store(path)
    try:
        rows = store.runs()
    finally:
        store.close()
    table = Table(title=f"runs in {path}")
    for col in ("variant", "seed", "status", "test accuracy", "training s", "recipe hash"):
        table.add_column(col)
    for r in rows:
        s = RunSummary.from_dict(r.summary) if r.summary else None
        acc = format_value(s.test.value("accuracy"), ".4f") if s else ""
        secs = format_value(s.train_seconds, ".1f") if s else ""
        table.add_row(r.variant, str(r.seed), r.status, acc, secs, r.recipe_hash)
    Console().print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    report, _ = write_outputs(args.dir)
    print(f"report: {report}")
    return 0


def cmd_cards(args: argparse.Namespace) -> int:
    _, cards = write_outputs(args.dir, args.to)
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
    print(f"plot: {args.out / 'lr_find.png'}  data: {args.out / 'lr_find.json'}")
    return 0


REGISTRIES: dict[str, Any] = {"tasks": TASKS, "datasets": DATASETS, "models": MODELS, "optimizers": OPTIMIZERS,
                              "schedules": SCHEDULES, "techniques": TECHNIQUES, "layers": LAYERS, "losses": LOSSES}


def cmd_list(args: argparse.Namespace) -> int:
    console = Console()
    for title, reg in REGISTRIES.items():
        if args.what and title != args.what:
            continue
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("summary")
        for name in reg.names():
            table.add_row(name, reg.summary(name))
        console.print(table)
    return 0


# ------------------------------------------------------------------------------------------------ parsers
Sub = Any  # argparse's _SubParsersAction


def _recipe_arguments(p: argparse.ArgumentParser, recipe_help: str, overrides_help: str) -> None:
    p.add_argument("recipe", nargs="?", help=recipe_help)
    p.add_argument("overrides", nargs="*", help=overrides_help)


def _add_run(sub: Sub) -> None:
    p = sub.add_parser("run", help="train one recipe (default: MNIST-1D with the paper's CNN)")
    _recipe_arguments(p, "recipe YAML file (omit for the embedded default)",
                      "key=value overrides, e.g. optimizer.lr=0.001 budget.steps=500")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<task>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest valid checkpoint")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the data set's files (e.g. Fashion-MNIST IDX files)")
    p.set_defaults(func=cmd_run)


def _add_ablate(sub: Sub) -> None:
    p = sub.add_parser("ablate",
                       help="baseline vs each technique added to it, over seeds, with statistics and a report")
    _recipe_arguments(p, "baseline recipe YAML (omit for MNIST-1D, the paper's CNN and setting)",
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
    p.set_defaults(func=cmd_ablate)


def _add_store_commands(sub: Sub) -> None:
    p = sub.add_parser("runs", help="list the runs in an ablation folder's store")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs/ablation"))
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("report", help="rebuild report.html from an ablation folder's store")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs/ablation"))
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("cards", help="write technique cards (markdown + JSON) from an ablation folder's store")
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs/ablation"))
    p.add_argument("--to", type=Path, default=Path("docs/cards"), help="folder for the cards (default docs/cards)")
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


def _add_list(sub: Sub) -> None:
    p = sub.add_parser("list", help="print what is registered: tasks, data sets, models, optimizers, schedules, "
                                    "techniques, layers, losses")
    p.add_argument("what", nargs="?", choices=list(REGISTRIES), help="one registry only")
    p.set_defaults(func=cmd_list)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tricklab", description="Deep-learning techniques, composed and measured.")
    parser.add_argument("--version", action="version", version=f"tricklab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    adders: tuple[Callable[[Sub], None], ...] = (_add_run, _add_ablate, _add_store_commands, _add_lr_find, _add_list)
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
    """Write the traceback next to the output (or into the current folder); returns where it went."""
    out = getattr(args, "out", None)
    log = Path(out) / "error.log" if out else Path("tricklab-error.log")
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc(), encoding="utf-8")
        return f"; the traceback is in {log}"
    except OSError:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as e:  # argparse already printed its message; its code is 2 for bad usage
        return int(e.code or 0)
    try:
        return int(args.func(args))
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


if __name__ == "__main__":
    raise SystemExit(main())
