"""The DETR card from a finished lab ablation of ``recipes/fashion-mnist-collage-detr.yaml`` (the baseline alone,
several seeds): per-seed COCO-style mAP on the test collages, mean and 95% Student-t interval over seeds, the
mAP@0.5 curve of every seed, and the lab's own report (curves, the test collages with true and predicted boxes)
copied beside the card.

    tricklab ablate recipes/fashion-mnist-collage-detr.yaml --techniques "" --seeds 3 --jobs 3 --out runs/detr
    PYTHONPATH=src python benchmarks/detr_card.py runs/detr [--to docs/cards/detr-collage]

Reads ``<out>/runs/baseline/seed-*/summary.json`` and ``metrics.jsonl`` (what every lab run writes); writes
``README.md``, ``card.json``, ``curve.svg`` and ``report.html`` into ``--to``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from tricklab.lab import stats  # noqa: E402
from tricklab.train.checkpoint import atomic_write_text  # noqa: E402

TARGET = 0.5  # issue 15: mAP@0.5 >= 0.5 on the collages
METRICS = (("map_50", "mAP@0.5"), ("map", "mAP@[.5:.95]"), ("map_75", "mAP@0.75"))


def load_runs(out: Path) -> dict[int, dict[str, Any]]:
    """seed -> {"summary": summary.json, "history": the metrics.jsonl rows}; refuses a folder without runs."""
    runs: dict[int, dict[str, Any]] = {}
    for folder in sorted((out / "runs" / "baseline").glob("seed-*")):
        summary = folder / "summary.json"
        if not summary.is_file():
            continue  # a run that has not finished
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
        runs[int(folder.name.split("-", 1)[1])] = {"summary": json.loads(summary.read_text(encoding="utf-8")),
                                                   "history": rows}
    if not runs:
        raise SystemExit(f"no finished run under {out}/runs/baseline/seed-*/summary.json: run the ablation first "
                         f"(see this script's docstring)")
    return runs


def plot(runs: dict[int, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for seed, run in sorted(runs.items()):
        rows = [r for r in run["history"] if "eval_map_50" in r]
        ax.plot([r["step"] for r in rows], [r["eval_map_50"] for r in rows], marker="o", ms=3, label=f"seed {seed}")
    ax.axhline(TARGET, color="grey", ls="--", lw=1, label=f"target {TARGET}")
    ax.set(xlabel="step", ylabel="mAP@0.5 (500 test collages)", title="DETR on the Fashion-MNIST collages")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="the ablation's --out folder")
    ap.add_argument("--to", type=Path, default=ROOT / "docs" / "cards" / "detr-collage")
    args = ap.parse_args(argv)
    runs = load_runs(args.out)
    seeds = sorted(runs)
    first = runs[seeds[0]]["summary"]
    summary = {key: dataclass_dict(stats.describe([runs[s]["summary"]["test"][key] for s in seeds]))
               for key, _ in METRICS}
    args.to.mkdir(parents=True, exist_ok=True)
    plot(runs, args.to / "curve.svg")
    report = args.out / "report.html"
    if report.is_file():
        shutil.copyfile(report, args.to / "report.html")
    m = summary["map_50"]
    low = m["ci_low"]
    verdict = (f"**met**: mean {m['mean']:.3f} >= {TARGET}" + (f", and the interval's lower end {low:.3f} too"
                                                                 if low is not None and low >= TARGET else
                                                                 "; the interval reaches below it")
               if m["mean"] >= TARGET else f"**MISSED**: mean {m['mean']:.3f} < {TARGET}")
    lines = [f"# DETR on the Fashion-MNIST collages, {len(seeds)} seeds through the lab", "",
             "Command: `tricklab ablate recipes/fashion-mnist-collage-detr.yaml --techniques \"\" --seeds "
             f"{len(seeds)} --jobs {len(seeds)} --out {args.out}` then `PYTHONPATH=src python "
             f"benchmarks/detr_card.py {args.out}`.", "",
             f"Setting: the recipe (task `{first['task']}`, {first['steps']} steps, 1 thread per run, the runs side by "
             "side on a 2-core machine); the scores are on all 1,000 test collages at the end of training, the "
             "curve on 500 of them every 1,000 steps. Details of data, model and loss: "
             "[detection.md](../../detection.md).", "",
             "| seed | steps | " + " | ".join(label for _, label in METRICS) + " | training time (s) |",
             "|---|---|" + "---|" * len(METRICS) + "---|"]
    for s in seeds:
        sm = runs[s]["summary"]
        lines.append(f"| {s} | {sm['steps']} | " + " | ".join(f"{sm['test'][k]:.4f}" for k, _ in METRICS)
                     + f" | {sm['train_seconds']:.0f} |")
    lines.append("| mean [95% CI] | | " + " | ".join(
        f"{summary[k]['mean']:.4f} [{_f(summary[k]['ci_low'])}, {_f(summary[k]['ci_high'])}]" for k, _ in METRICS)
        + " | |")
    lines += ["", f"Target mAP@0.5 >= {TARGET} (issue 15): {verdict}.", "", "![mAP@0.5 curve](curve.svg)", "",
              "The lab's report of this ablation ([report.html](report.html)) has each seed's curves and the test "
              "collages with their true (green) and predicted (red) boxes. Training times were measured with "
              f"{len(seeds)} runs sharing two cores and carry no verdict.", ""]
    atomic_write_text(args.to / "README.md", "\n".join(lines))
    atomic_write_text(args.to / "card.json", json.dumps(
        {"command": lines[2], "seeds": seeds, "target_map_50": TARGET, "summary": summary,
         "runs": {str(s): {"steps": runs[s]["summary"]["steps"], "test": runs[s]["summary"]["test"],
                           "train_seconds": runs[s]["summary"]["train_seconds"]} for s in seeds}}, indent=1))
    print(args.to / "README.md")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def dataclass_dict(d: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(d)


if __name__ == "__main__":
    main()
