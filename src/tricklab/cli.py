"""The ``tricklab`` command.

Exit status: 0 success; 2 bad input (the message says what and where, no traceback); 1 failure during
training (the message says why and where the log is); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tricklab.errors import TrainingError, UserError


def _print_summary(summary: dict[str, Any], run_dir: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    test = summary["test"]
    table = Table(title=f"{summary['task']} / {summary['model']} / seed {summary['seed']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("test accuracy", f"{test['accuracy']:.4f}"),
        ("test macro-F1", f"{test['macro_f1']:.4f}"),
        ("test NLL", f"{test['nll']:.4f}"),
        ("test ECE (15 bins)", f"{test['ece']:.4f}"),
        ("test Brier", f"{test['brier']:.4f}"),
        ("optimizer steps", str(summary["steps"])),
        ("training time (s)", f"{summary['train_seconds']:.1f}"),
        ("inference latency, median (ms/batch)", f"{summary['inference_latency']['median_ms']:.2f}"),
        ("parameters", f"{summary['parameters']:,}"),
        ("model size (bytes)", f"{summary['model_size_bytes']:,}"),
    ]
    conv = summary.get("convergence")
    rows.append((f"steps to {summary['target_accuracy']:.0%} eval accuracy",
                 f"{conv['step']} ({conv['seconds']:.1f}s)" if conv else "not reached"))
    if summary.get("stop_reason"):
        rows.append(("stopped", summary["stop_reason"]))
    for k, v in rows:
        table.add_row(k, v)
    console = Console()
    console.print(table)
    console.print(f"run folder: {run_dir}")


def cmd_run(args: argparse.Namespace) -> int:
    from tricklab.lab.recipe import load_recipe, recipe_arguments
    from tricklab.lab.runner import run

    recipe = load_recipe(*recipe_arguments(args.recipe, args.overrides, args.data_dir))
    result = run(recipe, out=args.out, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_summary(result.summary, result.run_dir)
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from tricklab.lab.ablate import (
        DEFAULT_TECHNIQUES,
        load_base,
        make_plan,
        run_ablation,
        verdict_table,
        write_outputs,
    )

    from tricklab.lab.recipe import recipe_arguments

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
    plan = make_plan(base, techniques, args.combo or [], seeds, args.budget, args.variant or [])
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
    from rich.console import Console
    from rich.table import Table

    from tricklab.lab.store import Store

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
        acc = f"{r.summary['test']['accuracy']:.4f}" if r.summary else ""
        secs = f"{r.summary['train_seconds']:.1f}" if r.summary else ""
        table.add_row(r.variant, str(r.seed), r.status, acc, secs, r.recipe_hash)
    Console().print(table)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from tricklab.lab.ablate import write_outputs

    report, _ = write_outputs(args.dir)
    print(f"report: {report}")
    return 0


def cmd_cards(args: argparse.Namespace) -> int:
    from tricklab.lab.ablate import write_outputs

    _, cards = write_outputs(args.dir, args.to)
    for c in cards:
        print(c)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from tricklab.data import DATASETS
    from tricklab.lab.tasks import TASKS
    from tricklab.layers.registry import LAYERS
    from tricklab.losses import LOSSES
    from tricklab.models import MODELS
    from tricklab.optim import OPTIMIZERS
    from tricklab.schedules import SCHEDULES
    from tricklab.techniques import TECHNIQUES

    console = Console()
    for title, reg in (("tasks", TASKS), ("datasets", DATASETS), ("models", MODELS), ("optimizers", OPTIMIZERS),
                       ("schedules", SCHEDULES), ("techniques", TECHNIQUES), ("layers", LAYERS),
                       ("losses", LOSSES)):
        if args.what and title != args.what:
            continue
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column("name", style="bold")
        table.add_column("summary")
        for name in reg.names():
            table.add_row(name, reg.summary(name))
        console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from tricklab import __version__

    parser = argparse.ArgumentParser(prog="tricklab", description="Deep-learning techniques, composed and measured.")
    parser.add_argument("--version", action="version", version=f"tricklab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train one recipe (default: MNIST-1D with the paper's CNN)")
    p.add_argument("recipe", nargs="?", help="recipe YAML file (omit for the embedded default)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optimizer.lr=0.001 budget.steps=500")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<task>-<model>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest valid checkpoint")
    p.add_argument("--data-dir", default=None, help="folder holding the data set's files (e.g. Fashion-MNIST IDX files)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("ablate", help="baseline vs each technique added to it, over seeds, with statistics and a report")
    p.add_argument("recipe", nargs="?", help="baseline recipe YAML (omit for MNIST-1D, the paper's CNN and setting)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the baseline recipe")
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
    from tricklab.lab import lr_find

    lr_find.add_parser(sub)
    p = sub.add_parser("list", help="print what is registered: tasks, data sets, models, optimizers, schedules, "
                                    "techniques, layers, losses")
    p.add_argument("what", nargs="?", choices=["tasks", "datasets", "models", "optimizers", "schedules", "techniques",
                                               "layers", "losses"], help="one registry only")
    p.set_defaults(func=cmd_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        # key=value overrides may come after options (`run --out d a=1`), which argparse cannot
        # interleave with optional positionals: collect the leftovers that look like overrides
        args, extra = parser.parse_known_args(argv)
        bad = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        if extra:
            args.overrides = list(args.overrides) + extra
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
        out = getattr(args, "out", None)
        log = Path(out) / "error.log" if out else Path("tricklab-error.log")
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc(), encoding="utf-8")
            where = f"; the traceback is in {log}"
        except OSError:
            where = ""
        print(f"tricklab: training failed: {type(e).__name__}: {e}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
