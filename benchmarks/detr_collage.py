"""DETR on the Fashion-MNIST collages: train with the Trainer and report COCO-style mAP, a training curve and test
images with their predicted and true boxes.

The run function is ``tricklab.models.vision.detr_task.run_detr`` (the lab's loop-task signature, so the lab can
register it as the detection task kind); this script is the evidence command around it:

    PYTHONPATH=src python benchmarks/detr_collage.py --steps 20000 --out benchmarks/results/detr_collage

Writes ``<out>/detr_collage.json`` (config, metrics, history, timing), ``<out>/detr_curve.svg`` (train loss and
test mAP@0.5 against steps) and ``<out>/detr_boxes.svg`` (test collages, true boxes green, predictions with score
>= 0.5 red, matched by the Hungarian matcher). Checkpoints go to ``<out>/checkpoints``; ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


from tricklab.models.vision.detr_task import DetectionResult, DetrConfig, run_detr
from tricklab.models.vision.plots import plot_detections
from tricklab.train.checkpoint import atomic_write_text


def plot(result: DetectionResult, out: Path, class_names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result.history
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    tr = [r for r in rows if "train_loss" in r]
    ax[0].plot([r["step"] for r in tr], [r["train_loss"] for r in tr])
    ax[0].set(xlabel="step", ylabel="set loss (final + aux)", title="training loss", yscale="log")
    ev = [r for r in rows if "eval_map_50" in r]
    ax[1].plot([r["step"] for r in ev], [r["eval_map_50"] for r in ev], marker="o", label="mAP@0.5")
    ax[1].plot([r["step"] for r in ev], [r["eval_map"] for r in ev], marker="o", label="mAP@[.5:.95]")
    ax[1].axhline(0.5, color="grey", ls="--", lw=0.8)
    ax[1].set(xlabel="step", ylabel="test mAP (held-out images)", title="evaluation", ylim=(0, 1))
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "detr_curve.svg")
    plt.close(fig)
    plot_detections(result.extras["examples"], out / "detr_boxes.svg", class_names,
                    title="test collages: true boxes (green), predictions with score >= 0.5 (red)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=DetrConfig.steps)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=DetrConfig.num_train)
    parser.add_argument("--eval-every", type=int, default=DetrConfig.eval_every)
    parser.add_argument("--lr", type=float, default=DetrConfig.lr)
    parser.add_argument("--batch-size", type=int, default=DetrConfig.batch_size)
    parser.add_argument("--model", default="{}", help="JSON of detr() arguments, e.g. '{\"num_queries\": 8}'")
    parser.add_argument("--out", default="benchmarks/results/detr_collage")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    config = DetrConfig(steps=args.steps, num_train=args.num_train, eval_every=args.eval_every, lr=args.lr,
                        batch_size=args.batch_size, model=json.loads(args.model))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()

    def show(row: dict[str, Any]) -> None:
        keys = ("step", "seconds", "train_loss", "eval_map_50", "eval_map")
        print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                       for k in keys if k in row), flush=True)

    result = run_detr(config, seed=args.seed, run_dir=out, progress=show, resume=args.resume)
    wall = time.perf_counter() - wall0
    record = {"command": "PYTHONPATH=src python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
              "config": asdict(config), "seed": args.seed, "metrics": result.metrics,
              "train_seconds": result.extras["train_seconds"], "wall_seconds": wall,
              "parameters": result.extras["parameters"], "data": result.extras["data"],
              "history": result.history, "examples": result.extras["examples"],
              "note": "timings on a shared 2-core machine (other jobs running): read them as upper bounds"}
    atomic_write_text(out / "detr_collage.json", json.dumps(record, separators=(",", ":")))
    plot(result, out, [n for n in load_class_names()])
    print(json.dumps({"metrics": result.metrics, "train_seconds": round(result.extras["train_seconds"], 1),
                      "wall_seconds": round(wall, 1)}))
    return 0


def load_class_names() -> list[str]:
    from tricklab.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES

    return list(FASHION_MNIST_CLASSES)


if __name__ == "__main__":
    raise SystemExit(main())
