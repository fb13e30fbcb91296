"""Training step time of a vectorised 5-member deep ensemble against 5 sequential models.

Contenders, each doing the same work per step (forward, cross-entropy, backward, Adam step for all 5 members on
the same MNIST-1D batch of 100):

* ``vmap``: :class:`tricklab.uncertainty.ensemble.VmapEnsemble` (stack_module_state + vmap + functional_call),
  one forward, one backward, one Adam step over (5, ...)-stacked parameters;
* ``sequential``: 5 separate models, each with its own Adam: 5 x (zero_grad, forward, loss, backward, step);
* ``modulelist``: the 5 models in one ``ModuleList`` with one Adam and one backward of the summed losses
  (:class:`SequentialEnsemble`), for reference;
* ``vmap (again)``: the vmap contender a second time, to measure the noise between identical runs.

The machine is shared (other jobs run), so contenders are interleaved (vmap, sequential, modulelist, vmap again)
within each repeat, every timing is the median over repeats of the mean step time of a block of ``--steps``
steps after ``--warmup`` untimed steps, and the ratio of the two identical vmap runs states the noise: a ratio
earns a verdict only when it is further from 1 than that.

    python benchmarks/ensemble_vmap.py [--model cnn] [--members 5] [--batch-size 100] [--steps 50]
        [--repeats 9] [--threads 1]

Prints a table and writes ``benchmarks/results/ensemble_vmap.json``. Goal (issue 16): vmap / sequential <= 0.5.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from tricklab.data import load_dataset
from tricklab.models import build_model
from tricklab.uncertainty.ensemble import SequentialEnsemble, VmapEnsemble, ensemble_loss, make_members

RESULTS = Path(__file__).resolve().parent / "results"


def _factory(model: str) -> Callable[[], torch.nn.Module]:
    return lambda: build_model(model, (40,), 10)


def make_vmap(model: str, seeds: list[int]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    ens = VmapEnsemble(make_members(_factory(model), seeds)).train()
    opt = torch.optim.Adam(ens.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        ensemble_loss(ens(x), y).backward()
        opt.step()

    return step


def make_sequential(model: str, seeds: list[int]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    models = [m.train() for m in make_members(_factory(model), seeds)]
    opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        for m, opt in zip(models, opts):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(m(x), y).backward()
            opt.step()

    return step


def make_modulelist(model: str, seeds: list[int]) -> Callable[[torch.Tensor, torch.Tensor], None]:
    ens = SequentialEnsemble(make_members(_factory(model), seeds)).train()
    opt = torch.optim.Adam(ens.parameters(), lr=1e-3)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        ensemble_loss(ens(x), y).backward()
        opt.step()

    return step


def check_same_work(model: str, seeds: list[int], x: torch.Tensor) -> float:
    """Largest difference between the vmapped and the separate models' outputs before training."""
    ens = VmapEnsemble(make_members(_factory(model), seeds))
    singles = make_members(_factory(model), seeds)
    with torch.no_grad():
        return float((ens(x) - torch.stack([m(x) for m in singles])).abs().max())


def time_block(step: Callable[[torch.Tensor, torch.Tensor], None], batches: list[tuple[torch.Tensor, torch.Tensor]],
               warmup: int) -> float:
    for x, y in batches[:warmup]:
        step(x, y)
    t0 = time.perf_counter()
    for x, y in batches[warmup:]:
        step(x, y)
    return (time.perf_counter() - t0) / (len(batches) - warmup)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "ensemble_vmap.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seeds = list(range(args.members))
    ds = load_dataset("mnist1d")
    g = torch.Generator().manual_seed(0)
    n = args.steps + args.warmup
    idx = torch.randint(0, ds.num_train, (n, args.batch_size), generator=g)
    batches = [(ds.x_train[i], ds.y_train[i]) for i in idx]
    diff = check_same_work(args.model, seeds, batches[0][0])
    print(f"same work: largest output difference vmap vs separate models before training = {diff:.2e}")

    contenders = {"vmap": make_vmap, "sequential": make_sequential, "modulelist": make_modulelist,
                  "vmap (again)": make_vmap}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.repeats):
        for name, make in contenders.items():
            step = make(args.model, seeds)  # fresh models and optimizers each block: same work every repeat
            times[name].append(time_block(step, batches, args.warmup))
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1] * 1e3:.2f} ms" for k, v in times.items()),
              flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    per_repeat = {k: [a / b for a, b in zip(times[k], times["sequential"])] for k in times}
    noise = [a / b for a, b in zip(times["vmap (again)"], times["vmap"])]
    ratio = med["vmap"] / med["sequential"]
    noise_ratio = med["vmap (again)"] / med["vmap"]
    noise_spread = max(abs(x - 1.0) for x in noise)
    print()
    print(f"{args.members}-member ensemble of '{args.model}' on MNIST-1D, batch {args.batch_size}, "
          f"{args.threads} thread(s), median of {args.repeats} repeats x {args.steps} steps")
    print(f"{'contender':<14} {'ms/step':>9} {'ratio to sequential':>20} {'per-repeat ratio range':>24}")
    for k in contenders:
        lo, hi = min(per_repeat[k]), max(per_repeat[k])
        print(f"{k:<14} {med[k] * 1e3:>9.2f} {med[k] / med['sequential']:>20.3f} {f'{lo:.3f} - {hi:.3f}':>24}")
    print(f"noise between identical runs: vmap again / vmap = {noise_ratio:.3f} (median), per repeat within "
          f"+-{noise_spread:.1%}")
    goal = ratio <= 0.5
    print(f"vmap / sequential = {ratio:.3f}: goal <= 0.5 {'met' if goal else 'MISSED'}")
    out = {
        "benchmark": "ensemble_vmap", "model": args.model, "members": args.members, "batch_size": args.batch_size,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
        "ms_per_step_median": {k: v * 1e3 for k, v in med.items()},
        "ms_per_step_all": {k: [x * 1e3 for x in v] for k, v in times.items()},
        "ratio_vmap_to_sequential": ratio, "ratio_modulelist_to_sequential": med["modulelist"] / med["sequential"],
        "noise_ratio_identical_runs": noise_ratio, "noise_max_per_repeat": noise_spread,
        "goal": "vmap / sequential <= 0.5", "goal_met": goal, "output_difference_before_training": diff,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
                    "threads": args.threads, "shared": True},
        "command": "python benchmarks/ensemble_vmap.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
