"""CPU inference latency and throughput of the vision models at batch 1 and 64, with parameters, size and
multiply-accumulate counts, as a table, JSON and a plot.

Models: the configuration of each ``recipes/fashion-mnist-<model>.yaml`` (ResNet, MobileNetV2, Xception, ConvNeXt,
ViT, Swin, hybrid), built for 1x28x28 Fashion-MNIST images and 10 classes, plus a second, identical ResNet
("resnet (repeat)") whose ratio to the first is the noise between identical runs. MACs per image are counted by
our own operator-level counter (tricklab.models.vision.macs), first checked here against a hand count for a small
conv net (the script stops if they differ).

Timing: eval mode under ``torch.inference_mode``, one warm-up call, then ``--repeats`` rounds; in every round the
models are visited in a rotated order and each is timed on ``--calls`` forward calls per batch size (median per
round); the reported latency is the median over rounds. Throughput = batch size / latency. Ratios to ResNet are
given per batch size; a difference smaller than the noise line earns no verdict.

Accuracy: with ``--accuracies FILE`` (JSON {model: test accuracy}, e.g. from the model-comparison cards), the plot
is accuracy against latency at batch 64; without it (no accuracies measured yet), latency against MACs.

    PYTHONPATH=src python benchmarks/vision_latency.py [--repeats 7] [--calls 5] [--threads 1]
        [--accuracies results.json]

Writes ``benchmarks/results/vision_latency.json`` and ``benchmarks/results/vision_latency.svg``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from tricklab.evaluate import model_size_bytes
from tricklab.models import build_model, count_parameters
from tricklab.models.vision.macs import count_macs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "vision_latency.json"
MODELS = ("resnet", "mobilenetv2", "xception", "convnext", "vit", "swin", "hybrid")
SHAPE = (1, 28, 28)


def check_mac_counter() -> dict[str, int]:
    """Our MAC counter against a hand count: conv(1->4, 3x3) on 8x8, conv(4->8, 3x3, stride 2), linear(128->10)."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                        nn.Flatten(), nn.Linear(128, 10))
    hand = 8 * 8 * 4 * (1 * 9) + 4 * 4 * 8 * (4 * 9) + 128 * 10
    counted = count_macs(net, torch.randn(2, 1, 8, 8))
    if counted != hand:
        raise SystemExit(f"MAC counter disagrees with the hand count: {counted} != {hand}")
    return {"hand": hand, "counted": counted}


def recipe_args(name: str) -> dict[str, Any]:
    path = ROOT / "recipes" / f"fashion-mnist-{name}.yaml"
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    return dict(recipe["model"].get("args") or {})


def time_calls(model: nn.Module, x: torch.Tensor, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--accuracies", default=None, help="JSON file {model: test accuracy}")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    mac_check = check_mac_counter()

    contenders: dict[str, nn.Module] = {}
    info: dict[str, dict[str, Any]] = {}
    for name in (*MODELS, "resnet (repeat)"):
        base = name.split(" ")[0]
        torch.manual_seed(0)
        model = build_model(base, SHAPE, 10, **recipe_args(base)).eval()
        contenders[name] = model
        info[name] = {"args": recipe_args(base), "parameters": count_parameters(model),
                      "size_bytes": model_size_bytes(model),
                      "macs_per_image": count_macs(model, torch.randn(2, *SHAPE))}
    inputs = {b: torch.randn(b, *SHAPE) for b in args.batch_sizes}
    names = list(contenders)
    rounds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in args.batch_sizes} for n in names}
    with torch.inference_mode():
        for n in names:
            for b in args.batch_sizes:
                contenders[n](inputs[b])  # warm-up: allocator, lazy initialisation
        for r in range(args.repeats):
            for n in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every round
                for b in args.batch_sizes:
                    rounds[n][b].append(time_calls(contenders[n], inputs[b], args.calls))
            print(f"round {r + 1}/{args.repeats} done", flush=True)
    rows = []
    for n in names:
        row: dict[str, Any] = {"model": n, **info[n]}
        for b in args.batch_sizes:
            lat = statistics.median(rounds[n][b])
            row[f"latency_ms_b{b}"] = lat * 1e3
            row[f"images_per_s_b{b}"] = b / lat
            row[f"rounds_ms_b{b}"] = [t * 1e3 for t in rounds[n][b]]
        rows.append(row)
    by = {r["model"]: r for r in rows}
    noise = {b: abs(by["resnet (repeat)"][f"latency_ms_b{b}"] / by["resnet"][f"latency_ms_b{b}"] - 1)
             for b in args.batch_sizes}
    for r in rows:
        for b in args.batch_sizes:
            r[f"ratio_to_resnet_b{b}"] = r[f"latency_ms_b{b}"] / by["resnet"][f"latency_ms_b{b}"]

    header = f"{'model':<16} {'params':>9} {'MACs/img':>11} " + " ".join(
        f"{'ms b' + str(b):>9} {'img/s b' + str(b):>10} {'x resnet':>8}" for b in args.batch_sizes)
    print(header)
    for r in rows:
        print(f"{r['model']:<16} {r['parameters']:>9,} {r['macs_per_image']:>11,} " + " ".join(
            f"{r[f'latency_ms_b{b}']:>9.2f} {r[f'images_per_s_b{b}']:>10.0f} {r[f'ratio_to_resnet_b{b}']:>8.2f}"
            for b in args.batch_sizes))
    print("noise between identical runs (resnet vs resnet (repeat)): "
          + ", ".join(f"batch {b}: {100 * v:.1f}%" for b, v in noise.items()))

    accuracies = json.loads(Path(args.accuracies).read_text()) if args.accuracies else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "PYTHONPATH=src python benchmarks/vision_latency.py " + " ".join(argv or []),
        "machine": {"cpu_count": __import__("os").cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "note": "shared machine: other jobs were running; read ratios, not absolute times"},
        "mac_counter_check": mac_check, "repeats": args.repeats, "calls": args.calls, "noise": noise,
        "rows": rows, "accuracies": accuracies,
    }
    out.write_text(json.dumps(record, indent=1), encoding="utf-8")
    plot(rows, noise, accuracies, out.with_suffix(".svg"), max(args.batch_sizes))
    print(f"wrote {out} and {out.with_suffix('.svg')}")
    return 0


def plot(rows: list[dict[str, Any]], noise: dict[int, float], accuracies: dict[str, float] | None, path: Path,
         batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["model"] != "resnet (repeat)"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [r[f"latency_ms_b{batch}"] / batch for r in rows]
    if accuracies:
        ys = [accuracies.get(r["model"], float("nan")) for r in rows]
        ax.set(ylabel="Fashion-MNIST test accuracy", title="accuracy against CPU latency")
    else:
        ys = [r["macs_per_image"] / 1e6 for r in rows]
        ax.set(ylabel="MACs per image (millions)", title="cost against CPU latency (accuracies not measured yet)")
    ax.scatter(xs, ys, s=[max(20, r["parameters"] / 4000) for r in rows], alpha=0.6)
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(f"{r['model']} ({r['parameters'] / 1e3:.0f}k)", (x, y), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xlabel(f"latency per image at batch {batch} (ms, 1 thread; noise {100 * noise[batch]:.0f}%)")
    ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
