"""Trainer overhead: tricklab's Trainer (progress + metrics log on) against a plain hand-written PyTorch loop.

Both do the same work: the paper CNN (``build_model('cnn', (40,), 10)``) on the real MNIST-1D training set
(``load_dataset('mnist1d')``, 4000 samples, generated once and then read from the cache), the same batches in
the same order (a fresh ``InMemoryLoader(seed=0)`` per run), Adam lr 1e-2, the same number of optimizer steps.
The trainer runs with ``Progress`` (plain lines to a real file, not a TTY) and ``MetricsLog`` (JSONL to a temp
file), ``log_every=50``, no evaluation. The plain loop is ``zero_grad(set_to_none=True)``, forward,
``cross_entropy``, ``backward``, ``step``. Runs alternate A/B/A/B in one process with ``torch.manual_seed``
reset before each run (model init), and the final weights of the two loops are checked with ``torch.equal``:
a timing of different work would mean nothing.

Timed: from building the loader (and, for the trainer, the Trainer and its techniques) to the end of the last
step; the model and optimizer are built before the clock starts in both.

    python benchmarks/trainer_overhead.py [--steps 1000] [--repeats 7] [--batch-size 100] [--threads 1]
        [--profile]

Prints a table and writes ``benchmarks/results/trainer_overhead.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.models import build_model
from tricklab.techniques import MetricsLog, Progress
from tricklab.train import Trainer

LR = 1e-2
SEED = 0  # model init
LOADER_SEED = 0  # batch order


def make_model_and_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(SEED)
    model = build_model("cnn", (40,), 10)
    return model, torch.optim.Adam(model.parameters(), lr=LR)


def run_trainer(
    x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, tmp: Path
) -> tuple[float, torch.nn.Module]:
    model, opt = make_model_and_opt()
    with open(tmp / "progress.txt", "w", encoding="utf-8") as stream:
        t0 = time.perf_counter()
        loader = InMemoryLoader(x, y, batch_size, seed=LOADER_SEED)
        techniques = [Progress(stream=stream, rich=False), MetricsLog(path=str(tmp / "metrics.jsonl"))]
        trainer = Trainer(model, opt, loader, techniques=techniques, max_steps=steps, log_every=50)
        trainer.fit()
        seconds = time.perf_counter() - t0
    return seconds, model


def run_plain(x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int) -> tuple[float, torch.nn.Module]:
    model, opt = make_model_and_opt()
    model.train()
    t0 = time.perf_counter()
    loader = InMemoryLoader(x, y, batch_size, seed=LOADER_SEED)
    step = 0
    while step < steps:
        for xb, yb in loader:  # one epoch, then the loader moves to the next epoch's permutation
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    seconds = time.perf_counter() - t0
    return seconds, model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def profile_trainer(x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int, tmp: Path) -> str:
    prof = cProfile.Profile()
    prof.enable()
    run_trainer(x, y, steps, batch_size, tmp)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: least noise on a shared box)")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of one trainer run")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_overhead.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_dataset("mnist1d")
    x, y = data.x_train, data.y_train
    assert tuple(x.shape[1:]) == (40,), x.shape

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        # warm-up (allocator, lazy imports, first-call dispatch), untimed; also the equal-work check
        _, wt = run_trainer(x, y, args.steps, args.batch_size, tmp)
        _, wp = run_plain(x, y, args.steps, args.batch_size)
        equal = same_weights(wt, wp)
        trainer_s: list[float] = []
        plain_s: list[float] = []
        for _ in range(args.repeats):
            s, wt = run_trainer(x, y, args.steps, args.batch_size, tmp)
            trainer_s.append(s)
            s, wp = run_plain(x, y, args.steps, args.batch_size)
            plain_s.append(s)
            equal = equal and same_weights(wt, wp)
        log_rows = sum(1 for _ in open(tmp / "metrics.jsonl", encoding="utf-8"))
        prof_text = profile_trainer(x, y, args.steps, args.batch_size, tmp) if args.profile else None

    ratios = [t / q for t, q in zip(trainer_s, plain_s)]  # paired: run i of A against run i of B
    med_t, med_p, med_r = statistics.median(trainer_s), statistics.median(plain_s), statistics.median(ratios)
    per_step_us = (med_t - med_p) / args.steps * 1e6

    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=max(Console().width, 110))
    table = Table(title=f"trainer overhead: {args.steps} steps, batch {args.batch_size}, {args.repeats} repeats "
                        f"each, {args.threads} thread(s)")
    table.add_column("loop")
    table.add_column("median s/run", justify="right")
    table.add_column("min", justify="right")
    table.add_column("max", justify="right")
    table.add_column("median ms/step", justify="right")
    for name, xs in (("tricklab Trainer (+Progress, +MetricsLog)", trainer_s), ("plain PyTorch loop", plain_s)):
        table.add_row(name, f"{statistics.median(xs):.3f}", f"{min(xs):.3f}", f"{max(xs):.3f}",
                      f"{statistics.median(xs) / args.steps * 1e3:.3f}")
    console.print(table)
    verdict = "OK" if med_r <= 1.05 else "ABOVE TARGET"
    console.print(f"median paired ratio trainer/plain: {med_r:.3f} (target <= 1.05: {verdict}); "
                  f"ratio of medians {med_t / med_p:.3f}; overhead {per_step_us:.1f} us/step")
    console.print(f"final weights equal (torch.equal, every repeat): {equal}; metrics rows per trainer run: {log_rows}")
    if prof_text:
        console.print(prof_text, markup=False, highlight=False)

    result = {
        "benchmark": "trainer_overhead",
        "data": "mnist1d train (4000 x 40), real data via tricklab.data.load_dataset",
        "model": "cnn (paper CNN), Adam lr 1e-2",
        "steps": args.steps, "batch_size": args.batch_size, "repeats": args.repeats, "threads": args.threads,
        "trainer_seconds": trainer_s, "plain_seconds": plain_s, "paired_ratios": ratios,
        "median_trainer_seconds": med_t, "median_plain_seconds": med_p,
        "median_ratio": med_r, "ratio_of_medians": med_t / med_p, "overhead_us_per_step": per_step_us,
        "target_ratio": 1.05, "meets_target": med_r <= 1.05, "weights_equal": equal,
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {out}")
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
