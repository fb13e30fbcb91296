"""Does the fairness penalty trade accuracy for smaller disparities? Baseline vs the ``fairness_penalty`` technique.

Two tasks with a group attribute (tricklab.data.datasets.fairness): ``fair-synthetic`` (code-made, label bias
0.8 against group 1, proxy feature 1.0) and ``breast-cancer-groups`` (scikit-learn's breast cancer, group =
mean texture above the median). Model: the MLP (hidden 32), Adam, the same batches for every variant of a seed.
Variants: the baseline and the penalty for demographic parity and for equalized odds at weights 0.5, 1, 2, 5
(the trade-off curve; large weights end at the constant classifier, whose disparities are trivially 0).
For each run: test accuracy, demographic-parity difference, equalized-odds difference, worst-group accuracy
(tricklab.explain.fairness; equal to fairlearn's MetricFrame, tested), for the synthetic task also the accuracy
against the unbiased labels, and the energy of the run (tricklab.evaluate.energy). Statistics over seeds:
mean and 95% t-interval (lab.stats.describe) and the paired difference to the baseline (lab.stats.paired).

    python benchmarks/explain_fairness.py [--seeds 3] [--threads 1]

Writes ``docs/cards/explain-fairness/fairness_penalty.{md,json,svg}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.evaluate.energy import EnergyMeter
from tricklab.explain import fairness_report
from tricklab.explain.report import _figure, _svg
from tricklab.lab.stats import describe, paired
from tricklab.models import build_model
from tricklab.techniques.fairness_penalty import FairnessPenalty
from tricklab.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
CARD = ROOT / "docs" / "cards" / "explain-fairness"

TASKS: dict[str, dict[str, Any]] = {
    "fair-synthetic": {"data": {"bias": 0.8}, "lr": 1e-2, "batch": 200, "steps": 600},
    "breast-cancer-groups": {"data": {}, "lr": 3e-3, "batch": 64, "steps": 600},
}
VARIANTS: dict[str, dict[str, Any] | None] = {"baseline": None}
for _kind, _short in (("demographic_parity", "dp"), ("equalized_odds", "eo")):
    for _w in (0.5, 1.0, 2.0, 5.0):
        VARIANTS[f"{_short}_w{_w:g}"] = {"kind": _kind, "weight": _w}
METRICS = (("accuracy", True), ("demographic_parity_difference", False), ("equalized_odds_difference", False),
           ("worst_group_accuracy", True), ("accuracy_unbiased", True), ("energy_wh", False))


def run_one(task: str, variant: str, seed: int) -> dict[str, Any]:
    cfg = TASKS[task]
    data = load_dataset(task, **cfg["data"])
    torch.manual_seed(seed)
    model = build_model("mlp", data.input_shape, 2, hidden=32)
    spec = VARIANTS[variant]
    techniques = [FairnessPenalty(**spec)] if spec else []
    meter = EnergyMeter().start()
    Trainer(model, torch.optim.Adam(model.parameters(), lr=cfg["lr"]),
            InMemoryLoader(data.x_train, data.y_train, cfg["batch"], seed=seed), techniques=techniques,
            max_steps=cfg["steps"]).fit()
    energy = meter.stop()
    model.eval()
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)
    rep = fairness_report(data.y_test, pred, data.x_test[:, -1].round().long())
    out = {k: rep[k] for k in ("accuracy", "demographic_parity_difference", "equalized_odds_difference",
                               "worst_group_accuracy", "tpr_difference", "fpr_difference")}
    out["by_group"] = rep["by_group"]
    if "y_test_unbiased" in data.meta:
        out["accuracy_unbiased"] = float((pred == data.meta["y_test_unbiased"]).double().mean())
    out["energy_wh"] = energy.wh
    out["energy"] = energy.to_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--render", action="store_true", help="only rewrite the markdown and the plot from the JSON")
    args = p.parse_args(argv)
    if args.render:
        saved = json.loads((CARD / "fairness_penalty.json").read_text(encoding="utf-8"))
        _plot(saved["stats"], CARD / "fairness_penalty.svg")
        (CARD / "fairness_penalty.md").write_text(_markdown(saved["meta"], saved["stats"]), encoding="utf-8")
        return 0
    torch.set_num_threads(args.threads)
    run_one(next(iter(TASKS)), "baseline", 0)  # warm-up (imports, first-call allocations), not recorded
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for task in TASKS:
        results[task] = {}
        for variant in VARIANTS:
            results[task][variant] = []
            for seed in range(args.seeds):
                r = run_one(task, variant, seed)
                results[task][variant].append(r)
                print(f"{task:22s} {variant:9s} seed {seed}: acc {r['accuracy']:.4f}  "
                      f"DP {r['demographic_parity_difference']:.4f}  EO {r['equalized_odds_difference']:.4f}  "
                      f"{r['energy_wh']:.4f} Wh", flush=True)
    stats: dict[str, Any] = {}
    for task, by_variant in results.items():
        stats[task] = {}
        base = by_variant["baseline"]
        for variant, runs in by_variant.items():
            s: dict[str, Any] = {}
            for key, higher in METRICS:
                if key not in runs[0]:
                    continue
                vals = [r[key] for r in runs]
                s[key] = describe(vals)
                if variant != "baseline":
                    s[key]["vs_baseline"] = paired(vals, [r[key] for r in base], higher)
            stats[task][variant] = s
    CARD.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/explain_fairness.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "seeds": list(range(args.seeds)), "tasks": TASKS, "variants": VARIANTS,
            "model": "mlp (hidden 32)", "optimizer": "adam", "machine": {"python": platform.python_version(),
                                                                          "torch": torch.__version__,
                                                                          "threads": args.threads}}
    (CARD / "fairness_penalty.json").write_text(json.dumps({"meta": meta, "stats": stats, "runs": results},
                                                           indent=1), encoding="utf-8")
    _plot(stats, CARD / "fairness_penalty.svg")
    (CARD / "fairness_penalty.md").write_text(_markdown(meta, stats), encoding="utf-8")
    print(f"wrote {CARD / 'fairness_penalty.md'}")
    return 0


def _ci(d: dict[str, Any]) -> tuple[float, float]:
    lo = d["mean"] - d["ci_low"] if d.get("ci_low") is not None else 0.0
    hi = d["ci_high"] - d["mean"] if d.get("ci_high") is not None else 0.0
    return lo, hi


def _plot(stats: dict[str, Any], path: Path) -> None:
    fig = _figure(10.0, 7.0)
    axes = fig.subplots(2, 2)
    for row, (task, by_variant) in enumerate(stats.items()):
        for col, key in enumerate(("demographic_parity_difference", "equalized_odds_difference")):
            ax = axes[row, col]
            for variant, s in by_variant.items():
                xl, xh = _ci(s[key])
                yl, yh = _ci(s["accuracy"])
                ax.errorbar([s[key]["mean"]], [s["accuracy"]["mean"]], xerr=[[xl], [xh]], yerr=[[yl], [yh]],
                            fmt="o", capsize=3, label=variant)
            ax.set(xlabel=key.replace("_", " "), ylabel="test accuracy", title=task)
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Accuracy against disparity (mean and 95% interval over seeds); up and to the left is better",
                 fontsize=10)
    path.write_text(_svg(fig), encoding="utf-8")


def _fmt(d: dict[str, Any]) -> str:
    if d.get("ci_low") is None:
        return f"{d['mean']:.4f}"
    return f"{d['mean']:.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


def _fmt_diff(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    if d.get("ci_low") is None:
        return f"{d['mean_diff']:+.4f} ({d['verdict']})"
    return f"{d['mean_diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] {d['verdict']}"


def _markdown(meta: dict[str, Any], stats: dict[str, Any]) -> str:
    lines = ["# Technique card: fairness_penalty (demographic parity / equalized odds)", "", "```", meta["command"],
             "```", "",
             f"Model {meta['model']}, {meta['optimizer']}; seeds {meta['seeds']} (the seed sets the initial weights "
             f"and the batch order; every variant of a seed sees the same batches). Disparities are measured on "
             f"the test split, group = the last input column. Intervals: 95% Student-t over seeds; differences "
             f"are paired by seed against the baseline. Energy: CPU time x 10 W per core + memory "
             f"(docs/explain/energy.md).", ""]
    for task, by_variant in stats.items():
        cfg = meta["tasks"][task]
        lines += [f"## {task}", "", f"Data arguments {cfg['data'] or '{}'}; lr {cfg['lr']}, batch {cfg['batch']}, "
                  f"{cfg['steps']} steps.", "",
                  "| variant | accuracy | DP difference | EO difference | worst-group accuracy"
                  + (" | accuracy on unbiased labels" if "accuracy_unbiased" in by_variant["baseline"] else "")
                  + " | energy per run (Wh) |",
                  "|---|---|---|---|---|" + ("---|" if "accuracy_unbiased" in by_variant["baseline"] else "") + "---|"]
        for variant, s in by_variant.items():
            cells = [_fmt(s["accuracy"]), _fmt(s["demographic_parity_difference"]),
                     _fmt(s["equalized_odds_difference"]), _fmt(s["worst_group_accuracy"])]
            if "accuracy_unbiased" in s:
                cells.append(_fmt(s["accuracy_unbiased"]))
            cells.append(_fmt(s["energy_wh"]))
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        keys = ["accuracy", "demographic_parity_difference", "equalized_odds_difference", "worst_group_accuracy"]
        if "accuracy_unbiased" in by_variant["baseline"]:
            keys.append("accuracy_unbiased")
        lines += ["", "Paired difference to the baseline (verdict: helps / hurts / no clear effect):", "",
                  "| variant | accuracy | DP difference | EO difference | worst-group accuracy"
                  + (" | accuracy on unbiased labels |" if len(keys) == 5 else " |"),
                  "|---|---|---|---|---|" + ("---|" if len(keys) == 5 else "")]
        for variant, s in by_variant.items():
            if variant == "baseline":
                continue
            lines.append(f"| {variant} | " + " | ".join(_fmt_diff(s[k].get("vs_baseline")) for k in keys) + " |")
        collapsed = [v for v, s in by_variant.items() if s["demographic_parity_difference"]["mean"] == 0.0
                     and s["equalized_odds_difference"]["mean"] == 0.0]
        lines += ["", "Verdict (paired over seeds): " + "; ".join(
            f"{v}: accuracy {by_variant[v]['accuracy']['vs_baseline']['verdict']}, DP difference "
            f"{by_variant[v]['demographic_parity_difference']['vs_baseline']['verdict']}, EO difference "
            f"{by_variant[v]['equalized_odds_difference']['vs_baseline']['verdict']}"
            for v in by_variant if v != "baseline") + "."]
        if collapsed:
            lines.append(f"Collapsed to a constant prediction in every seed (both disparities trivially 0): "
                         f"{', '.join(collapsed)}.")
        lines.append("")
    lines += ["![accuracy against disparity](fairness_penalty.svg)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
