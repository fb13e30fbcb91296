"""Which attribution method is most faithful on a trained run, and does each pass the randomization sanity check?

For ``--examples`` test examples (seeded draw) of a run trained by ``tricklab run``, every registered attribution
method (tricklab.explain.methods, with the explain page's settings: the model's predicted class, zero reference,
``--background`` training inputs as the SHAP background) is scored by

* deletion and insertion AUC (RISE, Petsiuk et al. 2018; ``--steps`` fractions, zero reference, probability of
  the explained class): mean and 95% Student-t interval over the examples (lab.stats.describe), and the paired
  difference of each method against the random ranking and against the best method (lab.stats.paired);
* the model-parameter randomization test (Adebayo et al. 2018): the same method on a copy of the model with
  every layer re-initialised (``randomized_copy``), and the per-example Spearman rank correlation between the
  two maps, of absolute values (the paper's choice) and signed; near 1 means the method ignores the weights.

It also writes heat maps for docs/explain/: one figure per method (4 examples) and one with every method (6).

    python benchmarks/explain_faithfulness.py RUN_DIR --name mnist1d [--examples 128] [--steps 20] [--threads 1]

Writes ``docs/cards/explain-<name>/faithfulness.{md,json}``, ``faithfulness.svg`` (AUCs with intervals) and
``docs/explain/img/<method>-<name>.svg`` and ``all-<name>.svg``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tricklab.evaluate.energy import EnergyMeter, estimate_energy
from tricklab.explain import completeness_residual, faithfulness_scores, randomized_copy, spearman_per_example
from tricklab.explain.methods import ATTRIBUTIONS, DEFAULT_METHODS, attribute
from tricklab.explain.report import _figure, _svg, heatmap_figure, load_run
from tricklab.lab.stats import describe, paired

ROOT = Path(__file__).resolve().parents[1]
#: methods whose attributions should sum to S(x) - S(0) (zero reference): their completeness residual is reported
ZERO_REFERENCE = ("gradient_x_input", "integrated_gradients", "deeplift", "kernel_shap")


def _fmt(d: dict[str, Any], digits: int = 3) -> str:
    if d.get("ci_low") is None:
        return f"{d['mean']:.{digits}f}"
    return f"{d['mean']:.{digits}f} [{d['ci_low']:.{digits}f}, {d['ci_high']:.{digits}f}]"


def _fmt_diff(d: dict[str, Any]) -> str:
    if d.get("ci_low") is None:
        return "n/a"
    return f"{d['mean_diff']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--name", required=True, help="card folder suffix: docs/cards/explain-<name>/")
    p.add_argument("--examples", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--background", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    meter = EnergyMeter().start()
    run = load_run(args.run_dir)
    model, data = run.model, run.data
    g = torch.Generator().manual_seed(args.seed)
    pick = torch.randperm(data.num_test, generator=g)[: args.examples].sort().values
    x = data.x_test[pick]
    bg = data.x_train[torch.randperm(data.num_train, generator=g)[: args.background]]
    with torch.no_grad():
        pred = model(x).argmax(1)
    accuracy_on_examples = float((pred == data.y_test[pick]).double().mean())
    random_model = randomized_copy(model, seed=args.seed + 1000)
    methods = args.methods.split(",")
    per_example: dict[str, dict[str, list[float]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    maps: dict[str, torch.Tensor] = {}
    for k, name in enumerate(methods):
        t0 = time.perf_counter()
        a = attribute(name, model, x, pred, background=bg, generator=torch.Generator().manual_seed(args.seed + k))
        seconds = time.perf_counter() - t0
        sc = faithfulness_scores(model, x, a, pred, steps=args.steps)
        ar = attribute(name, random_model, x, pred, background=bg,
                       generator=torch.Generator().manual_seed(args.seed + k))
        rho_abs = spearman_per_example(a, ar, absolute=True)
        rho_signed = spearman_per_example(a, ar, absolute=False)
        maps[name] = a[:8]
        if name in ZERO_REFERENCE:
            # completeness against the zero reference: |sum_i A_i - (S(x) - S(0))| / |S(x) - S(0)|
            res = completeness_residual(model, x, torch.zeros_like(x), pred, a)
            with torch.no_grad():
                delta = (model(x) - model(torch.zeros_like(x))).gather(1, pred[:, None])[:, 0]
            rows.setdefault(name, {})["completeness"] = describe((res.abs() / delta.abs()).tolist())
        per_example[name] = {key: sc[key].tolist() for key in ("deletion_auc", "insertion_auc",
                                                                "insertion_minus_deletion")}
        per_example[name]["spearman_abs"] = rho_abs.tolist()
        per_example[name]["spearman_signed"] = rho_signed.tolist()
        curves[name] = {"deletion": sc["deletion_curve"].mean(0).tolist(),
                        "insertion": sc["insertion_curve"].mean(0).tolist()}
        rows[name] = {**rows.get(name, {}), "label": ATTRIBUTIONS.get(name).label,
                      "ms_per_example": 1000 * seconds / len(pick)}
        for key, vals in per_example[name].items():
            finite = [v for v in vals if np.isfinite(v)]
            rows[name][key] = describe(finite)
        print(f"{name:22s} deletion {_fmt(rows[name]['deletion_auc'])}  insertion {_fmt(rows[name]['insertion_auc'])}"
              f"  spearman|.| {_fmt(rows[name]['spearman_abs'])}  {rows[name]['ms_per_example']:.1f} ms/ex",
              flush=True)
    best_del = min((m for m in methods if m != "random"), key=lambda m: rows[m]["deletion_auc"]["mean"])
    best_ins = max((m for m in methods if m != "random"), key=lambda m: rows[m]["insertion_auc"]["mean"])
    for name in methods:
        pe = per_example[name]
        rows[name]["deletion_vs_random"] = paired(pe["deletion_auc"], per_example["random"]["deletion_auc"], False)
        rows[name]["insertion_vs_random"] = paired(pe["insertion_auc"], per_example["random"]["insertion_auc"], True)
        rows[name]["deletion_vs_best"] = paired(pe["deletion_auc"], per_example[best_del]["deletion_auc"], False)
        rows[name]["insertion_vs_best"] = paired(pe["insertion_auc"], per_example[best_ins]["insertion_auc"], True)
    energy = meter.stop()
    summary_path = args.run_dir / "summary.json"
    train_energy = None
    if summary_path.is_file():
        # the run's own training: wall seconds at one thread bound its CPU seconds from above
        s = json.loads(summary_path.read_text())
        train_energy = estimate_energy(float(s["train_seconds"])).to_dict()
        train_energy["test_accuracy"] = s.get("test", {}).get("accuracy")

    card = ROOT / "docs" / "cards" / f"explain-{args.name}"
    img = ROOT / "docs" / "explain" / "img"
    card.mkdir(parents=True, exist_ok=True)
    img.mkdir(parents=True, exist_ok=True)
    names = data.class_names or [str(c) for c in range(data.num_classes)]
    titles = [f"{names[int(data.y_test[i])]} -> {names[int(p)]}" for i, p in zip(pick[:8], pred[:8])]
    for name, a in maps.items():
        (img / f"{name}-{args.name}.svg").write_text(heatmap_figure(x[:4], {name: a[:4]}, titles[:4]),
                                                     encoding="utf-8")
    (img / f"all-{args.name}.svg").write_text(heatmap_figure(x[:6], {n: a[:6] for n, a in maps.items()}, titles[:6]),
                                              encoding="utf-8")
    _plot(rows, methods, card / "faithfulness.svg", args.name)
    command = "python benchmarks/explain_faithfulness.py " + " ".join(sys.argv[1:] if argv is None else argv)
    meta = {"command": command, "run_dir": str(args.run_dir), "task": run.recipe.get("task"),
            "model": run.recipe["model"], "weights": run.weights.name, "examples": len(pick), "steps": args.steps,
            "background": args.background, "seed": args.seed, "accuracy_on_examples": accuracy_on_examples,
            "best_deletion": best_del, "best_insertion": best_ins, "energy": energy.to_dict(),
            "training_energy": train_energy,
            "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads,
                        "cpu_count": __import__("os").cpu_count()}}
    (card / "faithfulness.json").write_text(json.dumps({"meta": meta, "methods": rows, "curves": curves,
                                                        "per_example": per_example}, indent=1), encoding="utf-8")
    (card / "faithfulness.md").write_text(_markdown(meta, rows, methods), encoding="utf-8")
    print(f"wrote {card}/faithfulness.md; most faithful: deletion {best_del}, insertion {best_ins}")
    return 0


def _plot(rows: dict[str, Any], methods: list[str], path: Path, name: str) -> None:
    fig = _figure(10.0, 3.6)
    axes = fig.subplots(1, 3)
    for ax, key, title in zip(axes, ("deletion_auc", "insertion_auc", "spearman_abs"),
                              ("deletion AUC (lower is better)", "insertion AUC (higher is better)",
                               "Spearman |trained| vs |random weights|")):
        ys = np.arange(len(methods))
        means = [rows[m][key]["mean"] for m in methods]
        lo = [rows[m][key]["mean"] - (rows[m][key]["ci_low"] if rows[m][key]["ci_low"] is not None
                                       else rows[m][key]["mean"]) for m in methods]
        hi = [(rows[m][key]["ci_high"] if rows[m][key]["ci_high"] is not None else rows[m][key]["mean"])
              - rows[m][key]["mean"] for m in methods]
        ax.errorbar(means, ys, xerr=[lo, hi], fmt="o", capsize=3)
        ax.set_yticks(ys)
        ax.set_yticklabels([m.replace("_", " ") for m in methods] if ax is axes[0] else [])
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
    fig.suptitle(f"{name}: faithfulness and sanity check (mean, 95% interval over examples)", fontsize=10)
    path.write_text(_svg(fig), encoding="utf-8")


def _markdown(meta: dict[str, Any], rows: dict[str, Any], methods: list[str]) -> str:
    lines = [f"# Attribution faithfulness and sanity check: {meta['task']} / {meta['model']['name']}", "",
             "```", meta["command"], "```", "",
             f"Run `{meta['run_dir']}` (weights `{meta['weights']}`), {meta['examples']} test examples (seed "
             f"{meta['seed']}; the model is right on {meta['accuracy_on_examples']:.1%} of them), explained class = "
             f"the prediction. Deletion / insertion: {meta['steps']} steps, zero reference, probability of the "
             f"class (RISE). Sanity check: Spearman correlation between the method's map on the trained model and "
             f"on a copy with every layer re-initialised (Adebayo et al. 2018); low is what a method that explains "
             f"the model should show. Intervals: 95% Student-t over the examples; paired differences per example.",
             "", "## Verdict", "",
             f"Most faithful by deletion: **{meta['best_deletion']}**; by insertion: **{meta['best_insertion']}** "
             f"(see the paired differences against them below: methods whose interval contains 0 are not "
             f"distinguishable from the best on these examples).", "",
             "## Faithfulness", "",
             "| method | deletion AUC (lower better) | vs random | vs best | insertion AUC (higher better) | vs random"
             " | vs best | ms / example |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        r = rows[m]
        lines.append(f"| {m} | {_fmt(r['deletion_auc'])} | {_fmt_diff(r['deletion_vs_random'])} "
                     f"({r['deletion_vs_random']['verdict']}) | {_fmt_diff(r['deletion_vs_best'])} | "
                     f"{_fmt(r['insertion_auc'])} | {_fmt_diff(r['insertion_vs_random'])} "
                     f"({r['insertion_vs_random']['verdict']}) | {_fmt_diff(r['insertion_vs_best'])} | "
                     f"{r['ms_per_example']:.1f} |")
    lines += ["", "Times were measured on a shared 2-core machine (other work running): read them as rough "
              "magnitudes, not as a benchmark.", "", "## Sanity check (model-parameter randomization)", "",
              "| method | Spearman of absolute maps | Spearman of signed maps |", "|---|---|---|"]
    for m in methods:
        if m == "random":
            continue
        lines.append(f"| {m} | {_fmt(rows[m]['spearman_abs'])} | {_fmt(rows[m]['spearman_signed'])} |")
    lines += ["", "## Completeness against the zero reference", "",
              "Relative residual |sum_i A_i - (S(x) - S(0))| / |S(x) - S(0)| on the explained logit (0 for a method "
              "that satisfies completeness; gradient x input is the first-order Taylor term, not complete).", "",
              "| method | mean relative residual [95% CI] |", "|---|---|"]
    for m in methods:
        if "completeness" in rows[m]:
            lines.append(f"| {m} | {_fmt(rows[m]['completeness'], 5)} |")
    e = meta["energy"]
    lines += ["", "![faithfulness](faithfulness.svg)", "",
              f"Energy of this evaluation: {e['energy_wh']:.3f} Wh [{e['energy_wh_low']:.3f}, "
              f"{e['energy_wh_high']:.3f}] ({e['method']}: {e['cpu_seconds']:.0f} CPU s x {e['watts_per_core']:g} W "
              f"per core; {e['co2e_g']:.3f} g CO2e at {e['grid_g_per_kwh']:g} g/kWh; see docs/explain/energy.md)."]
    t = meta.get("training_energy")
    if t:
        lines.append(f"Energy of training the explained model (its summary's {t['cpu_seconds']:.1f} s of training at "
                     f"one thread, an upper bound on its CPU time; test accuracy {t['test_accuracy']:.4f}): "
                     f"{t['energy_wh']:.4f} Wh [{t['energy_wh_low']:.4f}, {t['energy_wh_high']:.4f}], "
                     f"{t['co2e_g']:.4f} g CO2e.")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
