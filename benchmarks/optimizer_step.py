"""Optimizer step time: every tricklab optimizer, under every option a user can set, against pytorch_optimizer's
version of the same algorithm (the test-only oracle), side by side in one process.

Model: ``--layers`` ``nn.Linear(W, W)`` layers (weight + bias each), float32 on the CPU. The default, 150 layers
of width 256, is 300 tensors and 9.87M parameters; ``--width 80`` gives 0.97M parameters (the size of the model
in which LARS with Nesterov momentum measured 1.42x pytorch_optimizer's before the fix). The gradients are random
and set once per round, outside the clock (pytorch_optimizer's LARS and every GC user rewrite ``.grad`` in place).

Each case pairs ours with their closest configuration (``CASES`` below; the oracle tests in tests/optim/ check
that the pairs marked "same arithmetic" give the same parameters). Options that do not change the work done
(lr, betas, eps, rho, alpha, trust coefficient) are still covered by a case each where they are a constructor
argument of ours, so the table shows every option at least once.

Per case three contenders: ours, a second identical instance of ours ("ours again") and theirs, each on its own
copy of the parameters. After ``--warmup`` steps each, ``--rounds`` rounds each time ``--steps`` consecutive
steps of every contender, the order rotated every round, so drift in machine load hits all three alike. The
table gives the median per-step times, ``ratio`` = median over rounds of ours/theirs (paired within a round)
and ``noise`` = median over rounds of ours/ours-again: what an identical optimizer measures against itself on
this machine at this moment. The verdict: ``<= 1`` when the ratio is at most 1; ``within noise`` when above 1
by less than the noise band (the 90th percentile over all cases of |ours/ours-again - 1|); ``slower``
otherwise.

    python benchmarks/optimizer_step.py [--rounds 7] [--steps 5] [--warmup 2] [--threads 1] [--width 256]
                                        [--layers 150] [--only NAME,NAME] [--out PATH]

Prints a table and writes ``benchmarks/results/optimizer_step.json`` (``optimizer_step_w<width>.json`` for a
width other than 256).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytorch_optimizer as po
import torch
from torch import nn

from tricklab.optim import LAMB, LARS, SAM, Lookahead, Ranger

Factory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Case:
    name: str
    ours: Factory
    theirs: Factory
    kind: str = "step"  # "sam": first_step + second_step
    note: str = ""  # how the pair differs, when it does


def _groups(ps: list[nn.Parameter], wd: float) -> list[dict]:
    """create_optimizer's default groups: weight decay on matrices, none on biases (ndim < 2)."""
    return [{"params": [p for p in ps if p.ndim >= 2], "weight_decay": wd},
            {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0}]


def _po_lamb_no_clamp(ps: list[nn.Parameter]) -> torch.optim.Optimizer:
    opt = po.Lamb(ps, lr=1e-3, weight_decay=0.01, weight_decouple=False, adam_debias=True)
    opt.clamp = float("inf")  # their phi(||x||) = min(||x||, clamp): no clamp, as our max_weight_norm=None
    return opt


def _sgd(ps: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(ps, lr=0.1, momentum=0.9)


CASES: list[Case] = [
    # ---------------------------------------------------------------------------------------------- LARS
    Case("lars default (momentum 0.9)", lambda p: LARS(p, lr=0.1), lambda p: po.LARS(p, lr=0.1)),
    Case("lars weight_decay", lambda p: LARS(p, lr=0.1, weight_decay=0.01),
         lambda p: po.LARS(p, lr=0.1, weight_decay=0.01)),
    Case("lars nesterov", lambda p: LARS(p, lr=0.1, nesterov=True), lambda p: po.LARS(p, lr=0.1, nesterov=True)),
    Case("lars nesterov + weight_decay", lambda p: LARS(p, lr=0.1, weight_decay=0.01, nesterov=True),
         lambda p: po.LARS(p, lr=0.1, weight_decay=0.01, nesterov=True)),
    Case("lars momentum 0", lambda p: LARS(p, lr=0.1, momentum=0.0),
         lambda p: po.LARS(p, lr=0.1, momentum=0.0)),
    Case("lars momentum 0 + weight_decay", lambda p: LARS(p, lr=0.1, momentum=0.0, weight_decay=0.01),
         lambda p: po.LARS(p, lr=0.1, momentum=0.0, weight_decay=0.01)),
    Case("lars dampening 0.1", lambda p: LARS(p, lr=0.1, weight_decay=0.01, dampening=0.1),
         lambda p: po.LARS(p, lr=0.1, weight_decay=0.01, dampening=0.1)),
    Case("lars trust_coefficient 0.02", lambda p: LARS(p, lr=0.1, weight_decay=0.01, trust_coefficient=0.02),
         lambda p: po.LARS(p, lr=0.1, weight_decay=0.01, trust_coefficient=0.02)),
    Case("lars exclude_bias_and_norm=False", lambda p: LARS(p, lr=0.1, weight_decay=0.01,
                                                             exclude_bias_and_norm=False),
         lambda p: po.LARS(p, lr=0.1, weight_decay=0.01),
         note="theirs always excludes ndim < 2; ours also trust-scales and decays the 150 biases"),
    Case("lars groups (biases undecayed)", lambda p: LARS(_groups(p, 0.01), lr=0.1, nesterov=True),
         lambda p: po.LARS(_groups(p, 0.01), lr=0.1, nesterov=True)),
    Case("lars nesterov + wd, foreach=False",
         lambda p: LARS(p, lr=0.1, weight_decay=0.01, nesterov=True, foreach=False),
         lambda p: po.LARS(p, lr=0.1, weight_decay=0.01, nesterov=True, foreach=False)),
    Case("lars momentum 0 + wd, foreach=False", lambda p: LARS(p, lr=0.1, momentum=0.0, weight_decay=0.01,
                                                              foreach=False),
         lambda p: po.LARS(p, lr=0.1, momentum=0.0, weight_decay=0.01, foreach=False)),
    # ---------------------------------------------------------------------------------------------- LAMB
    Case("lamb default (bias_correction)", lambda p: LAMB(p, lr=1e-3), lambda p: po.Lamb(p, lr=1e-3),
         note="theirs (default adam_debias=False) corrects the step by 1/(1-beta1^t) but not v; same work"),
    Case("lamb weight_decay, bias_correction=False",
         lambda p: LAMB(p, lr=1e-3, weight_decay=0.01, bias_correction=False),
         lambda p: po.Lamb(p, lr=1e-3, weight_decay=0.01, weight_decouple=False, adam_debias=True)),
    Case("lamb max_weight_norm=None", lambda p: LAMB(p, lr=1e-3, weight_decay=0.01, bias_correction=False,
                                                     max_weight_norm=None), _po_lamb_no_clamp),
    Case("lamb betas/eps", lambda p: LAMB(p, lr=1e-3, betas=(0.8, 0.99), eps=1e-8),
         lambda p: po.Lamb(p, lr=1e-3, betas=(0.8, 0.99), eps=1e-8)),
    Case("lamb weight_decay, foreach=False",
         lambda p: LAMB(p, lr=1e-3, weight_decay=0.01, bias_correction=False, foreach=False),
         lambda p: po.Lamb(p, lr=1e-3, weight_decay=0.01, weight_decouple=False, adam_debias=True,
                           foreach=False)),
    # ---------------------------------------------------------------------------------------------- Lookahead
    Case("lookahead(adam) k=5", lambda p: Lookahead(torch.optim.Adam(p, lr=1e-3), k=5, alpha=0.5),
         lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3), k=5, alpha=0.5)),
    Case("lookahead(sgd) k=5", lambda p: Lookahead(_sgd(p), k=5, alpha=0.5),
         lambda p: po.Lookahead(_sgd(p), k=5, alpha=0.5)),
    Case("lookahead(sgd) k=1, alpha=0.8", lambda p: Lookahead(_sgd(p), k=1, alpha=0.8),
         lambda p: po.Lookahead(_sgd(p), k=1, alpha=0.8)),
    Case("lookahead(sgd) k=1, foreach=False", lambda p: Lookahead(_sgd(p), k=1, alpha=0.5, foreach=False),
         lambda p: po.Lookahead(_sgd(p), k=1, alpha=0.5), note="theirs has no foreach switch"),
    Case("lookahead base='adam' by name", lambda p: Lookahead(p, base="adam", lr=1e-3, k=5),
         lambda p: po.Lookahead(torch.optim.Adam(p, lr=1e-3), k=5)),
    # ---------------------------------------------------------------------------------------------- Ranger
    Case("ranger default (GC on)", lambda p: Ranger(p, lr=1e-3),
         lambda p: po.Ranger(p, lr=1e-3, degenerated_to_sgd=True)),
    Case("ranger use_gc=False", lambda p: Ranger(p, lr=1e-3, use_gc=False),
         lambda p: po.Ranger(p, lr=1e-3, use_gc=False, degenerated_to_sgd=True)),
    Case("ranger weight_decay", lambda p: Ranger(p, lr=1e-3, weight_decay=0.01),
         lambda p: po.Ranger(p, lr=1e-3, weight_decay=0.01, degenerated_to_sgd=True)),
    Case("ranger k=1, alpha=0.8, betas/eps", lambda p: Ranger(p, lr=1e-3, k=1, alpha=0.8, betas=(0.9, 0.99),
                                                              eps=1e-8),
         lambda p: po.Ranger(p, lr=1e-3, k=1, alpha=0.8, betas=(0.9, 0.99), eps=1e-8, degenerated_to_sgd=True)),
    Case("ranger foreach=False", lambda p: Ranger(p, lr=1e-3, foreach=False),
         lambda p: po.Ranger(p, lr=1e-3, degenerated_to_sgd=True, foreach=False)),
    # ---------------------------------------------------------------------------------------------- SAM
    Case("sam(sgd)", lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9),
         lambda p: po.SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9), "sam",
         note="theirs' default on the CPU is its per-tensor loop"),
    Case("sam(sgd) vs theirs foreach=True", lambda p: SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9),
         lambda p: po.SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, foreach=True), "sam"),
    Case("sam(sgd) adaptive", lambda p: SAM(p, torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1, momentum=0.9),
         lambda p: po.SAM(p, torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1, momentum=0.9, foreach=True), "sam"),
    Case("sam(sgd) foreach=False", lambda p: SAM(p, torch.optim.SGD, rho=0.05, foreach=False, lr=0.1,
                                                 momentum=0.9),
         lambda p: po.SAM(p, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.9, foreach=False), "sam"),
    Case("sam(sgd) adaptive, foreach=False",
         lambda p: SAM(p, torch.optim.SGD, rho=0.5, adaptive=True, foreach=False, lr=0.1, momentum=0.9),
         lambda p: po.SAM(p, torch.optim.SGD, rho=0.5, adaptive=True, lr=0.1, momentum=0.9, foreach=False), "sam"),
    Case("sam base='adam' by name", lambda p: SAM(p, "adam", rho=0.05, lr=1e-3),
         lambda p: po.SAM(p, torch.optim.Adam, rho=0.05, lr=1e-3, foreach=True), "sam"),
]


def make_model(layers: int, width: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def one_step(opt: torch.optim.Optimizer, kind: str) -> None:
    if kind == "sam":
        opt.first_step()  # type: ignore[attr-defined]
        opt.second_step()  # type: ignore[attr-defined]
    else:
        opt.step()


def time_steps(opt: torch.optim.Optimizer, params: list[nn.Parameter], grads: list[torch.Tensor], kind: str,
               n: int) -> float:
    for p, g in zip(params, grads):
        p.grad = g.clone()
    t0 = time.perf_counter()
    for _ in range(n):
        one_step(opt, kind)
    return (time.perf_counter() - t0) / n


def run_case(case: Case, layers: int, width: int, grads: list[torch.Tensor], args: argparse.Namespace) -> dict:
    contenders = []
    for who, factory in (("ours", case.ours), ("ours_again", case.ours), ("theirs", case.theirs)):
        ps = list(make_model(layers, width).parameters())
        contenders.append((who, factory(ps), ps))
    for _, opt, ps in contenders:
        time_steps(opt, ps, grads, case.kind, args.warmup)
    times: dict[str, list[float]] = {who: [] for who, _, _ in contenders}
    for r in range(args.rounds):
        k = r % 3
        order = contenders[k:] + contenders[:k]  # rotate: each contender goes first, second, third in turn
        for who, opt, ps in order:
            times[who].append(time_steps(opt, ps, grads, case.kind, args.steps))
    ratio = statistics.median(a / b for a, b in zip(times["ours"], times["theirs"]))
    noise = statistics.median(a / b for a, b in zip(times["ours"], times["ours_again"]))
    row = {"case": case.name, "ours_ms": statistics.median(times["ours"]) * 1e3,
           "ours_again_ms": statistics.median(times["ours_again"]) * 1e3,
           "theirs_ms": statistics.median(times["theirs"]) * 1e3, "ratio": ratio, "noise": noise,
           "note": case.note}
    row.update({f"{who}_rounds_ms": [round(t * 1e3, 3) for t in ts] for who, ts in times.items()})
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=150)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--only", default=None, help="comma-separated substrings of case names")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    suffix = "" if args.width == 256 and args.layers == 150 else f"_w{args.width}_l{args.layers}"
    out = Path(args.out or Path(__file__).parent / "results" / f"optimizer_step{suffix}.json")
    g = torch.Generator().manual_seed(1)
    shapes = [p.shape for p in make_model(args.layers, args.width).parameters()]
    grads = [torch.randn(s, generator=g) * 0.01 for s in shapes]
    n_params = sum(s.numel() for s in shapes)
    print(f"{len(shapes)} tensors, {n_params / 1e6:.2f}M parameters, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.steps} steps, torch {torch.__version__}, "
          f"pytorch_optimizer {importlib.metadata.version('pytorch_optimizer')}", flush=True)
    rows = []
    for case in CASES:
        if args.only and not any(s in case.name for s in args.only.split(",")):
            continue
        row = run_case(case, args.layers, args.width, grads, args)
        rows.append(row)
        print(f"{row['case']:40s} ours {row['ours_ms']:8.2f} ms  again {row['ours_again_ms']:8.2f}  theirs "
              f"{row['theirs_ms']:8.2f}  ratio {row['ratio']:5.3f}  noise {row['noise']:5.3f}", flush=True)
    devs = sorted(abs(r["noise"] - 1.0) for r in rows)
    band = devs[min(len(devs) - 1, int(0.9 * len(devs)))] if devs else 0.0
    for r in rows:
        r["verdict"] = ("<= 1" if r["ratio"] <= 1.0 else "within noise" if r["ratio"] - 1.0 <= band else "slower")
    print(f"\nnoise between identical optimizers (ours / ours again): median |1 - ratio| "
          f"{statistics.median(devs) if devs else 0:.3f}, 90th percentile {band:.3f}, max {max(devs, default=0):.3f}")
    print(f"{'case':40s} {'ours ms':>9s} {'theirs ms':>10s} {'ratio':>6s} {'noise':>6s}  verdict")
    for r in rows:
        print(f"{r['case']:40s} {r['ours_ms']:9.2f} {r['theirs_ms']:10.2f} {r['ratio']:6.3f} {r['noise']:6.3f}  "
              f"{r['verdict']}{'  (' + r['note'] + ')' if r['note'] else ''}")
    result = {
        "benchmark": "optimizer_step", "tensors": len(shapes), "parameters": n_params, "layers": args.layers,
        "width": args.width, "rounds": args.rounds, "steps_per_round": args.steps, "warmup": args.warmup,
        "threads": args.threads, "noise_band_p90": band, "torch": torch.__version__,
        "pytorch_optimizer": importlib.metadata.version("pytorch_optimizer"),
        "python": platform.python_version(), "machine": platform.machine(), "device": "cpu", "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
