"""CPU inference latency and throughput of the vision models at batch 1 and 64, with parameters, size and
multiply-accumulate counts, as a table, JSON and a plot.

Models: the configuration of each ``recipes/fashion-mnist-<model>.yaml`` (ResNet, MobileNetV2, Xception, ConvNeXt,
ViT, Swin, hybrid), built for 1x28x28 Fashion-MNIST images and 10 classes, plus a second, identical ResNet
("resnet (repeat)") whose ratio to the first is the noise between identical runs. MACs per image are counted by
our own operator-level counter (tricklab.models.vision.macs), first checked here against a hand count for a small
conv net (the script stops if they differ).

Timing: eval mode under ``torch.inference_mode``, one warm-up call, then ``--repeats`` rounds; in every round the
models are visited in a rotated order and each is timed on ``--calls`` forward calls per batch size (median per
round); the reported latency is the median over rounds. Every call is read on two clocks: the process's CPU clock
(``time.process_time``; with 1 thread, the time the forward pass computed, which other jobs on a shared machine do
not inflate) and the wall clock (``time.perf_counter``; what a user waits, inflated when other jobs take the core).
Throughput = batch size / latency. Ratios to ResNet are given per batch size on the CPU clock; a difference smaller
than the noise (the ratio of the two identical ResNets, and the spread over rounds) earns no verdict.

Accuracy: with ``--accuracies FILE`` (JSON {model: test accuracy}, or the model-comparison card's JSON,
docs/cards/vision-compare/compare.json, whose mean accuracies are read), the plot is accuracy against latency at
batch 64; without it (no accuracies measured yet), MACs against latency.

    PYTHONPATH=src python benchmarks/vision_latency.py [--repeats 7] [--calls 5] [--threads 1]
        [--accuracies docs/cards/vision-compare/compare.json] [--card docs/cards/vision-latency]

Writes ``benchmarks/results/vision_latency.json`` and ``.svg`` (``--out``); with ``--card DIR`` also a markdown
card ``DIR/README.md`` with the table, and the JSON and SVG beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
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


def time_calls(model: nn.Module, x: torch.Tensor, calls: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) of one forward call over ``calls`` calls."""
    wall, cpu = [], []
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.process_time()
        model(x)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def read_accuracies(path: str) -> dict[str, float]:
    """{model: accuracy} from a plain mapping or from the comparison card's JSON (its ``summary`` means)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "summary" in data:
        return {m: float(s["accuracy"]["mean"]) for m, s in data["summary"].items()}
    return {str(k): float(v) for k, v in data.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--accuracies", default=None, help="JSON file {model: test accuracy}")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--card", default=None, help="folder for a markdown card with the table, JSON and plot")
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
    cpu_rounds: dict[str, dict[int, list[float]]] = {n: {b: [] for b in args.batch_sizes} for n in names}
    with torch.inference_mode():
        for n in names:
            for b in args.batch_sizes:
                contenders[n](inputs[b])  # warm-up: allocator, lazy initialisation
        for r in range(args.repeats):
            for n in names[r % len(names):] + names[:r % len(names)]:  # rotate the order every round
                for b in args.batch_sizes:
                    wall, cpu = time_calls(contenders[n], inputs[b], args.calls)
                    rounds[n][b].append(wall)
                    cpu_rounds[n][b].append(cpu)
            print(f"round {r + 1}/{args.repeats} done", flush=True)
    rows = []
    for n in names:
        row: dict[str, Any] = {"model": n, **info[n]}
        for b in args.batch_sizes:
            lat, cpu = statistics.median(rounds[n][b]), statistics.median(cpu_rounds[n][b])
            row[f"latency_ms_b{b}"] = lat * 1e3  # wall clock
            row[f"images_per_s_b{b}"] = b / lat
            row[f"cpu_ms_b{b}"] = cpu * 1e3  # CPU clock
            row[f"cpu_images_per_s_b{b}"] = b / cpu if cpu > 0 else None
            row[f"rounds_ms_b{b}"] = [t * 1e3 for t in rounds[n][b]]
            row[f"cpu_rounds_ms_b{b}"] = [t * 1e3 for t in cpu_rounds[n][b]]
            # spread between rounds of the same model: (max - min) / median, on the CPU clock
            row[f"cpu_spread_b{b}"] = (max(cpu_rounds[n][b]) - min(cpu_rounds[n][b])) / cpu if cpu > 0 else None
        rows.append(row)
    by = {r["model"]: r for r in rows}
    # noise between identical runs: the two identical ResNets, on each clock
    noise = {b: abs(by["resnet (repeat)"][f"cpu_ms_b{b}"] / by["resnet"][f"cpu_ms_b{b}"] - 1)
             for b in args.batch_sizes}
    wall_noise = {b: abs(by["resnet (repeat)"][f"latency_ms_b{b}"] / by["resnet"][f"latency_ms_b{b}"] - 1)
                  for b in args.batch_sizes}
    for r in rows:
        for b in args.batch_sizes:
            r[f"ratio_to_resnet_b{b}"] = r[f"cpu_ms_b{b}"] / by["resnet"][f"cpu_ms_b{b}"]
            r[f"wall_ratio_to_resnet_b{b}"] = r[f"latency_ms_b{b}"] / by["resnet"][f"latency_ms_b{b}"]

    header = f"{'model':<16} {'params':>9} {'MACs/img':>11} " + " ".join(
        f"{'CPU ms b' + str(b):>10} {'wall ms':>9} {'img/s':>8} {'x resnet':>8}" for b in args.batch_sizes)
    print(header)
    for r in rows:
        print(f"{r['model']:<16} {r['parameters']:>9,} {r['macs_per_image']:>11,} " + " ".join(
            f"{r[f'cpu_ms_b{b}']:>10.2f} {r[f'latency_ms_b{b}']:>9.2f} {r[f'images_per_s_b{b}']:>8.0f} "
            f"{r[f'ratio_to_resnet_b{b}']:>8.2f}" for b in args.batch_sizes))
    print("noise between identical runs (resnet vs resnet (repeat)): CPU clock "
          + ", ".join(f"batch {b}: {100 * v:.1f}%" for b, v in noise.items()) + "; wall clock "
          + ", ".join(f"batch {b}: {100 * v:.1f}%" for b, v in wall_noise.items()))

    accuracies = read_accuracies(args.accuracies) if args.accuracies else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        # the arguments as given (argv is None when run as a script: then the command line's)
        "command": "PYTHONPATH=src python benchmarks/vision_latency.py "
                   + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"cpu_count": __import__("os").cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "python": platform.python_version(),
                    "note": "shared machine: other jobs were running; read ratios, not absolute times"},
        "mac_counter_check": mac_check, "repeats": args.repeats, "calls": args.calls, "noise": noise,
        "wall_noise": wall_noise, "rows": rows, "accuracies": accuracies, "accuracies_from": args.accuracies,
    }
    _write(out, json.dumps(record, indent=1) + "\n")
    plot(rows, noise, accuracies, out.with_suffix(".svg"), max(args.batch_sizes))
    print(f"wrote {out} and {out.with_suffix('.svg')}")
    if args.card:
        card = Path(args.card)
        _write(card / "vision_latency.json", json.dumps(record, indent=1) + "\n")
        plot(rows, noise, accuracies, card / "vision_latency.svg", max(args.batch_sizes))
        _write(card / "README.md", card_text(record, args.batch_sizes))
        print(f"card written under {card}/")
    return 0


def _write(path: Path, text: str) -> None:
    """Atomic: a killed run leaves the previous file, never half of a new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def card_text(record: dict[str, Any], batches: list[int]) -> str:
    rows, acc = record["rows"], record["accuracies"] or {}
    noise, wall_noise = record["noise"], record["wall_noise"]
    spread = {b: max(r[f"cpu_spread_b{b}"] or 0.0 for r in rows) for b in batches}
    lines = [
        "# CPU inference latency and throughput of the vision models",
        "",
        f"The configuration of each `recipes/fashion-mnist-<model>.yaml`, 1x28x28 inputs, 10 classes, eval mode "
        f"under `torch.inference_mode`, **{record['machine']['threads']} thread**. The models were interleaved: "
        f"{record['repeats']} rounds, the order rotated every round, {record['calls']} calls per model and batch "
        f"size per round (median per round), then the median over rounds. Each call is read on the process's CPU "
        f"clock (the time the forward pass computed; other jobs on the machine do not inflate it) and on the wall "
        f"clock (inflated by other jobs). **The machine was shared** with other helpers' jobs (2 cores, load "
        f"average well above 2), so the wall-clock columns are stretched and noisy; compare the CPU columns and "
        f"their ratios. MACs per image from our counter (`tricklab.models.vision.macs`), checked first against a "
        f"hand count for a small conv net ({record['mac_counter_check']['counted']:,} = "
        f"{record['mac_counter_check']['hand']:,}).",
        "",
        "| model | parameters | size (KiB) | MACs / image | accuracy | "
        + " | ".join(f"CPU ms b={b} | x ResNet b={b} | images/s b={b} (CPU) | wall ms b={b}" for b in batches) + " |",
        "|---" * (5 + 4 * len(batches)) + "|",
    ]
    for r in rows:
        a = acc.get(r["model"].split(" ")[0]) if r["model"] != "resnet (repeat)" else None
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['size_bytes'] / 1024:,.0f} | {r['macs_per_image']:,} | "
            + (f"{a:.4f}" if a is not None else "—") + " | "
            + " | ".join(f"{r[f'cpu_ms_b{b}']:.2f} | {r[f'ratio_to_resnet_b{b}']:.2f} | "
                         f"{r[f'cpu_images_per_s_b{b}']:,.0f} | {r[f'latency_ms_b{b}']:.2f}" for b in batches) + " |")
    lines += [
        "",
        "Noise between identical runs (the two identical ResNets, `resnet` and `resnet (repeat)`): CPU clock "
        + ", ".join(f"{100 * noise[b]:.1f}% at batch {b}" for b in batches) + "; wall clock "
        + ", ".join(f"{100 * wall_noise[b]:.1f}% at batch {b}" for b in batches)
        + ". Largest spread between rounds of one model (CPU clock, (max - min) / median): "
        + ", ".join(f"{100 * spread[b]:.0f}% at batch {b}" for b in batches)
        + ". A latency ratio closer to 1 than these earns no verdict.",
        "",
        ("Accuracy: mean test accuracy of the equal-budget comparison (`" + str(record["accuracies_from"])
         + "`), plotted against the CPU time per image at the largest batch." if acc else
         "Accuracy: not given (`--accuracies`); the plot shows MACs against latency."),
        "",
        "![accuracy against latency](vision_latency.svg)",
        "",
        f"Command: `{record['command']}`",
        "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], noise: dict[int, float], accuracies: dict[str, float] | None, path: Path,
         batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["model"] != "resnet (repeat)"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    xs = [r[f"cpu_ms_b{batch}"] / batch for r in rows]
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
    ax.set_xlabel(f"CPU time per image at batch {batch} (ms, 1 thread; noise {100 * noise[batch]:.0f}%)")
    ax.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
