"""Optimizer step time: tricklab's optimizers against pytorch_optimizer's version of the same algorithm.

Model: 150 ``nn.Linear(256, 256)`` layers (weight + bias = 300 parameter tensors, 9.87M parameters), float32
on the CPU; the gradients are random and set once per round (outside the clock: pytorch_optimizer's LARS and
every GC user rewrite ``.grad`` in place). Each pair is configured to do the same arithmetic (the oracle
tests in tests/optim/ check that the two give the same parameters):

* lamb: ``LAMB(bias_correction=False, weight_decay=0.01)`` vs ``Lamb(weight_decouple=False, adam_debias=True)``
* lars: ``LARS(weight_decay=0.01)`` vs ``LARS(weight_decay=0.01)``
* lookahead: ``Lookahead(torch.optim.Adam)`` vs ``pytorch_optimizer.Lookahead(torch.optim.Adam)``, k=5
* ranger: ``Ranger()`` vs ``Ranger(degenerated_to_sgd=True)`` (GC on, k=6)
* sam: ``first_step() + second_step()`` over ``torch.optim.SGD(momentum=0.9)`` for both (the gradient
  recomputation between them is not timed); pytorch_optimizer's SAM uses its per-tensor loop on the CPU by
  default, so a second row gives it ``foreach=True``.

Ours run with their default ``foreach=True``; theirs with their defaults. Per pair: warm-up steps, then R
rounds alternating A/B/A/B (same process), each timing N consecutive steps; the table reports the median
per-step time of each side and ours/theirs.

    python benchmarks/optimizer_step.py [--rounds 5] [--steps 5] [--warmup 2] [--threads 1]

Prints a table and writes ``benchmarks/results/optimizer_step.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_optimizer as po
import torch
from torch import nn

from tricklab.optim import LAMB, LARS, SAM, Lookahead, Ranger

LAYERS, WIDTH = 150, 256


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])


Case = tuple[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer],
             Callable[[list[nn.Parameter]], torch.optim.Optimizer], str]

CASES: list[Case] = [
    ("lamb", lambda p: LAMB(p, lr=1e-3, weight_decay=0.01, bias_correction=False),
     lambda p: po.Lamb(p, lr=1e-3, weight_decay=0.01, weight_decouple=False, adam_debias=True), "step"),
    ("lars", lambda p: LARS(p, lr=0.1, weight_decay=0.01), lambda p: po.LARS(p, lr=0.1, weight_decay=0.01), "step"),
    ("lookahead(adam)", lambda p: Lookahead(torch.optim.Adam(p, lr=1e-3), k=5, alpha=0.5),
     lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3), k=5, alpha=0.5), "step"),
    ("ranger", lambda p: Ranger(p, lr=1e-3), lambda p: po.Ranger(p, lr=1e-3, degenerated_to_sgd=True), "step"),
    ("sam(sgd)", lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9),
     lambda p: po.SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9), "sam"),
    ("sam(sgd) vs theirs foreach=True", lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9),
     lambda p: po.SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, foreach=True), "sam"),
]


def one_step(opt: torch.optim.Optimizer, kind: str) -> None:
    if kind == "sam":
        opt.first_step()  # type: ignore[attr-defined]
        opt.second_step()  # type: ignore[attr-defined]
    else:
        opt.step()


def set_grads(params: list[nn.Parameter], grads: list[torch.Tensor]) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()


def time_steps(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[torch.Tensor], kind: str,
               n: int) -> float:
    set_grads(params, grads)
    t0 = time.perf_counter()
    for _ in range(n):
        one_step(opt, kind)
    return (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "optimizer_step.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    shapes = [p.shape for p in make_model().parameters()]
    grads = [torch.randn(s, generator=g) * 0.01 for s in shapes]
    rows = []
    for name, ours_fn, theirs_fn, kind in CASES:
        if args.only and name not in args.only.split(","):
            continue
        pa, pb = list(make_model().parameters()), list(make_model().parameters())
        a, b = ours_fn(pa), theirs_fn(pb)
        for opt, ps in ((a, pa), (b, pb)):
            time_steps(opt, ps, grads, kind, args.warmup)
        ta, tb = [], []
        for _ in range(args.rounds):  # alternate A/B so drift in machine load hits both sides alike
            ta.append(time_steps(a, pa, grads, kind, args.steps))
            tb.append(time_steps(b, pb, grads, kind, args.steps))
        ma, mb = statistics.median(ta), statistics.median(tb)
        rows.append({"optimizer": name, "ours_ms": round(ma * 1e3, 3), "theirs_ms": round(mb * 1e3, 3),
                     "ratio": round(ma / mb, 3), "ours_rounds_ms": [round(t * 1e3, 3) for t in ta],
                     "theirs_rounds_ms": [round(t * 1e3, 3) for t in tb]})
        print(f"{name:34s} ours {ma * 1e3:8.2f} ms   theirs {mb * 1e3:8.2f} ms   ratio {ma / mb:5.2f}", flush=True)
    n_params = sum(p.numel() for p in make_model().parameters())
    print(f"\n{len(shapes)} tensors, {n_params / 1e6:.2f}M parameters, {args.threads} thread(s), "
          f"median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'optimizer':34s} {'ours ms':>9s} {'theirs ms':>10s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['optimizer']:34s} {r['ours_ms']:9.2f} {r['theirs_ms']:10.2f} {r['ratio']:6.2f}")
    result = {
        "benchmark": "optimizer_step", "tensors": len(shapes), "parameters": n_params,
        "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup, "threads": args.threads,
        "torch": torch.__version__, "pytorch_optimizer": __import__("importlib.metadata").metadata.version("pytorch_optimizer"), "python": platform.python_version(),
        "machine": platform.machine(), "device": "cpu", "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
