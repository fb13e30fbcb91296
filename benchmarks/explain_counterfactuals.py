"""Counterfactuals on a trained run: validity, proximity and sparsity of Wachter counterfactuals (L1 and L2),
with and without fixed features, and a diverse set (DiCE-style), on ``--examples`` test examples.

The target class of each example is the model's runner-up class (the second-largest logit). ``fixed`` freezes
the first half of every input (the first 20 samples of an MNIST-1D signal). Weights: Wachter's 1 / MAD per
feature from the training inputs. Statistics: mean and 95% t-interval over the examples (lab.stats.describe).

    python benchmarks/explain_counterfactuals.py RUN_DIR --name mnist1d [--examples 64] [--threads 1]

Writes ``docs/cards/explain-<name>/counterfactuals.{md,json,svg}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tricklab.evaluate.energy import EnergyMeter
from tricklab.explain import diverse_counterfactuals, wachter_counterfactual
from tricklab.explain.counterfactual import CounterfactualResult, mad_weights
from tricklab.explain.report import _figure, _svg, load_run
from tricklab.lab.stats import describe

ROOT = Path(__file__).resolve().parents[1]


def _stats(r: CounterfactualResult, seconds: float, fixed: torch.Tensor | None) -> dict[str, Any]:
    valid = r.valid.reshape(-1)
    out: dict[str, Any] = {"validity": float(valid.double().mean()), "seconds": seconds}
    for key in ("l1", "l2", "sparsity"):
        vals = getattr(r, key).reshape(-1)[valid].tolist()
        out[key] = describe(vals)
    if r.diversity is not None:
        out["diversity"] = describe(r.diversity.tolist())
    if fixed is not None:
        cf = r.counterfactuals if r.counterfactuals.dim() == r.inputs.dim() else r.counterfactuals[:, 0]
        out["fixed_respected"] = bool(torch.equal(cf[:, fixed], r.inputs[:, fixed]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    meter = EnergyMeter().start()
    run = load_run(args.run_dir)
    model, data = run.model, run.data
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(data.num_test, generator=g)[: args.examples].sort().values
    x = data.x_test[pick]
    with torch.no_grad():
        target = model(x).topk(2, dim=1).indices[:, 1]
    w = mad_weights(data.x_train)
    fixed = torch.zeros(x.shape[1:], dtype=torch.bool)
    fixed.view(-1)[: fixed.numel() // 2] = True
    results: dict[str, Any] = {}
    cfs: dict[str, CounterfactualResult] = {}
    for name, kw in (("wachter_l1", {"distance": "l1"}), ("wachter_l2", {"distance": "l2"}),
                     ("wachter_l1_fixed_first_half", {"distance": "l1", "fixed": fixed})):
        t0 = time.perf_counter()
        r = wachter_counterfactual(model, x, target, feature_weights=w, **kw)
        results[name] = _stats(r, time.perf_counter() - t0, kw.get("fixed"))
        cfs[name] = r
        print(name, {k: (v["mean"] if isinstance(v, dict) else v) for k, v in results[name].items()}, flush=True)
    t0 = time.perf_counter()
    d = diverse_counterfactuals(model, x, target, k=4, generator=torch.Generator().manual_seed(args.seed))
    results["diverse_k4"] = _stats(d, time.perf_counter() - t0, None)
    print("diverse_k4", {k: (v["mean"] if isinstance(v, dict) else v) for k, v in results["diverse_k4"].items()})
    energy = meter.stop()
    card = ROOT / "docs" / "cards" / f"explain-{args.name}"
    card.mkdir(parents=True, exist_ok=True)
    names = data.class_names or [str(c) for c in range(data.num_classes)]
    _plot(x, cfs["wachter_l1"], cfs["wachter_l2"], d, target, names, card / "counterfactuals.svg")
    command = "python benchmarks/explain_counterfactuals.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "run_dir": str(args.run_dir), "examples": len(pick), "seed": args.seed,
            "target": "runner-up class", "weights": "1 / MAD of the training inputs", "energy": energy.to_dict()}
    (card / "counterfactuals.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1),
                                               encoding="utf-8")
    (card / "counterfactuals.md").write_text(_markdown(meta, results, run.recipe.get("task")), encoding="utf-8")
    print(f"wrote {card / 'counterfactuals.md'}")
    return 0


def _plot(x: torch.Tensor, l1: CounterfactualResult, l2: CounterfactualResult, d: CounterfactualResult,
          target: torch.Tensor, names: list[str], path: Path) -> None:
    if x[0].squeeze().dim() != 1:
        return  # the figure is drawn for 1-D signals only
    fig = _figure(10.0, 6.0)
    axes = fig.subplots(3, 4)
    for i in range(4):
        sig = x[i].squeeze().numpy()
        t = np.arange(sig.shape[0])
        for row, (label, r) in enumerate((("L1", l1), ("L2", l2))):
            ax = axes[row, i]
            ax.plot(t, sig, color="black", label="input")
            ax.plot(t, r.counterfactuals[i].squeeze().numpy(), color="tab:red", label=f"{label} counterfactual")
            ax.set_title(f"{label} -> {names[int(target[i])]}", fontsize=8)
        ax = axes[2, i]
        ax.plot(t, sig, color="black")
        for j in range(d.counterfactuals.shape[1]):
            ax.plot(t, d.counterfactuals[i, j].squeeze().numpy(), alpha=0.7)
        ax.set_title(f"4 diverse -> {names[int(target[i])]}", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    path.write_text(_svg(fig), encoding="utf-8")


def _fmt(d: dict[str, Any]) -> str:
    if d.get("ci_low") is None:
        return f"{d['mean']:.3f}"
    return f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _markdown(meta: dict[str, Any], results: dict[str, Any], task: Any) -> str:
    lines = [f"# Counterfactuals: {task}", "", "```", meta["command"], "```", "",
             f"{meta['examples']} test examples (seed {meta['seed']}); target = each example's {meta['target']}; "
             f"feature weights {meta['weights']} (Wachter et al. 2018). Proximity and sparsity are over the valid "
             f"counterfactuals; intervals 95% Student-t over examples (over all 4 x examples for the diverse set).",
             "", "| method | validity | L1 distance | L2 distance | fraction of features changed | diversity "
             "(mean pairwise L1) | fixed features respected | seconds (all examples) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['validity']:.3f} | {_fmt(r['l1'])} | {_fmt(r['l2'])} | {_fmt(r['sparsity'])} | "
                     f"{_fmt(r['diversity']) if 'diversity' in r else ''} | {r.get('fixed_respected', '')} | "
                     f"{r['seconds']:.1f} |")
    e = meta["energy"]
    lines += ["", "![counterfactuals](counterfactuals.svg)", "",
              f"Energy of this evaluation: {e['energy_wh']:.4f} Wh [{e['energy_wh_low']:.4f}, "
              f"{e['energy_wh_high']:.4f}], {e['co2e_g']:.4f} g CO2e at {e['grid_g_per_kwh']:g} g/kWh. "
              f"Seconds measured on a shared machine.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
