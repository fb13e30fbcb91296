"""Training step time of a vectorised 5-member deep ensemble against 5 sequential models.

Contenders, each doing the same work per step (forward, cross-entropy, backward, Adam step for all 5 members on
the same MNIST-1D batch), for each ``model:batch`` configuration (the MNIST-1D paper's ``cnn`` and ``mlp``; batch
100 is the cards' training setting, 32 a smaller one where per-call overhead weighs more):

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

    python benchmarks/ensemble_vmap.py [--configs cnn:100 mlp:100 cnn:32 mlp:32] [--members 5] [--steps 30]
        [--repeats 15] [--threads 1]

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


def bench_config(model: str, batch_size: int, members: int, steps: int, warmup: int, repeats: int,
                 ds: object) -> dict[str, object]:
    seeds = list(range(members))
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, ds.num_train, (steps + warmup, batch_size), generator=g)  # type: ignore[attr-defined]
    batches = [(ds.x_train[i], ds.y_train[i]) for i in idx]  # type: ignore[attr-defined]
    diff = check_same_work(model, seeds, batches[0][0])
    contenders = {"vmap": make_vmap, "sequential": make_sequential, "modulelist": make_modulelist,
                  "vmap (again)": make_vmap}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, make in contenders.items():  # interleaved: every contender sees the same load pattern
            step = make(model, seeds)  # fresh models and optimizers each block: the same work every repeat
            times[name].append(time_block(step, batches, warmup))
    med = {k: statistics.median(v) for k, v in times.items()}
    noise = [a / b for a, b in zip(times["vmap (again)"], times["vmap"])]
    return {
        "model": model, "batch_size": batch_size, "members": members,
        "ms_per_step_median": {k: v * 1e3 for k, v in med.items()},
        "ms_per_step_all": {k: [x * 1e3 for x in v] for k, v in times.items()},
        "ratio_vmap_to_sequential": med["vmap"] / med["sequential"],
        "ratio_modulelist_to_sequential": med["modulelist"] / med["sequential"],
        "per_repeat_ratio_range": [min(a / b for a, b in zip(times["vmap"], times["sequential"])),
                                   max(a / b for a, b in zip(times["vmap"], times["sequential"]))],
        "noise_ratio_identical_runs": med["vmap (again)"] / med["vmap"],
        "noise_max_per_repeat": max(abs(x - 1.0) for x in noise),
        "output_difference_before_training": diff,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["cnn:100", "mlp:100", "cnn:32", "mlp:32"],
                    help="model:batch_size pairs; the first is the headline (the cards' training setting)")
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(RESULTS / "ensemble_vmap.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("mnist1d")
    rows = []
    for cfg in args.configs:
        model, bs = cfg.split(":")
        if model not in ("cnn", "mlp"):
            raise SystemExit(f"unknown model {model!r} in --configs (cnn or mlp)")
        r = bench_config(model, int(bs), args.members, args.steps, args.warmup, args.repeats, ds)
        rows.append(r)
        print(f"{cfg}: vmap {r['ms_per_step_median']['vmap']:.2f} ms, sequential "
              f"{r['ms_per_step_median']['sequential']:.2f} ms, ratio {r['ratio_vmap_to_sequential']:.3f}", flush=True)
    print()
    print(f"{args.members}-member ensembles on MNIST-1D, {args.threads} thread(s), medians of {args.repeats} "
          f"interleaved repeats x {args.steps} steps (shared machine)")
    print(f"{'model:batch':<12} {'vmap ms':>8} {'seq ms':>8} {'list ms':>8} {'vmap/seq':>9} {'range':>14} "
          f"{'list/seq':>9} {'noise (vmap again/vmap)':>24}")
    for r in rows:
        m = r["ms_per_step_median"]
        lo, hi = r["per_repeat_ratio_range"]
        noise = f"{r['noise_ratio_identical_runs']:.3f} (+-{r['noise_max_per_repeat']:.0%})"
        print(f"{r['model'] + ':' + str(r['batch_size']):<12} {m['vmap']:>8.2f} {m['sequential']:>8.2f} "
              f"{m['modulelist']:>8.2f} {r['ratio_vmap_to_sequential']:>9.3f} {f'{lo:.2f}-{hi:.2f}':>14} "
              f"{r['ratio_modulelist_to_sequential']:>9.3f} "
              f"{noise:>24}")
    head = rows[0]
    goal = head["ratio_vmap_to_sequential"] <= 0.5
    print(f"headline {args.configs[0]}: vmap / sequential = {head['ratio_vmap_to_sequential']:.3f}: goal <= 0.5 "
          f"{'met' if goal else 'MISSED'}")
    out = {
        "benchmark": "ensemble_vmap", "configs": rows, "headline": args.configs[0],
        "goal": "vmap / sequential <= 0.5 (issue 16)", "goal_met_headline": goal,
        "goal_met": {f"{r['model']}:{r['batch_size']}": r["ratio_vmap_to_sequential"] <= 0.5 for r in rows},
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
                    "threads": args.threads, "shared": True},
        "command": "python benchmarks/ensemble_vmap.py --configs " + " ".join(args.configs)
                   + f" --members {args.members} --steps {args.steps} --repeats {args.repeats}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(args.out).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
