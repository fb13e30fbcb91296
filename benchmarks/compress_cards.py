"""Compression cards on MNIST-1D: int8 quantization, structured channel pruning and distillation, several seeds.

Per seed (the seed sets the initialisation and the batch order; the data set is the fixed MNIST-1D split):

* teacher: the MNIST-1D paper ConvNet with 64 channels (``cnn``, channels=64), ``--steps`` Adam steps (lr 1e-2,
  batch 100, the paper's settings);
* quantization of the teacher: static int8 (calibrated on 10 training batches), QAT (the trained fp32 model
  prepared and fine-tuned ``--finetune`` steps at lr 1e-3, then converted) and torchao dynamic int8 (its linear
  layer only); test accuracy and size (safetensors bytes) against fp32;
* structured pruning of the teacher: half the channels of every conv removed (``prune_channels``), accuracy right
  after removal and after ``--finetune`` steps at lr 1e-3; latency at batch 64 against the fp32 teacher, timed
  side by side (median of interleaved repeats, with the noise of timing fp32 twice);
* distillation: a student MLP with hidden width 32 (about a tenth of the teacher's parameters), trained
  ``--steps`` steps alone and with the ``distillation`` technique (T = 4, alpha = 0.9) from the teacher.

Paired differences over seeds with 95% t-intervals (``tricklab.lab.stats.paired``). Writes
``docs/cards/compress-mnist1d/{quantization,structured_pruning,distillation}.{md,json}``.

    PYTHONPATH=src python benchmarks/compress_cards.py --seeds 0 1 2 [--steps 3000] [--finetune 500]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.compress.channels import prune_channels
from tricklab.compress.quantize import convert, prepare, quantize_dynamic, quantize_static
from tricklab.data import InMemoryLoader, load_dataset
from tricklab.evaluate.cost import count_parameters, model_size_bytes
from tricklab.io import atomic_write_text
from tricklab.lab.stats import describe, paired
from tricklab.models import build_model
from tricklab.techniques import Distillation
from tricklab.train import Trainer

OUT = Path(__file__).resolve().parents[1] / "docs" / "cards" / "compress-mnist1d"


def _train(model: nn.Module, data: Any, seed: int, steps: int, lr: float, techniques: list = ()) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    Trainer(model, opt, InMemoryLoader(data.x_train, data.y_train, 100, seed=seed), techniques=list(techniques),
            max_steps=steps, log_every=steps).fit()
    return model.eval()


def _acc(model: Any, data: Any) -> float:
    with torch.no_grad():
        return float((model(data.x_test).argmax(1) == data.y_test).float().mean())


def _latency_ratio(a: nn.Module, b: nn.Module, x: torch.Tensor, repeats: int = 15) -> tuple[float, float]:
    """Median time of b / a, interleaved, and the noise |a-again / a - 1|."""
    times: dict[str, list[float]] = {"a": [], "a2": [], "b": []}
    fns = {"a": a, "a2": a, "b": b}
    with torch.no_grad():
        for f in fns.values():
            f(x)
        for r in range(repeats):
            order = list(fns)[r % 3:] + list(fns)[:r % 3]
            for k in order:
                t0 = time.perf_counter()
                for _ in range(5):
                    fns[k](x)
                times[k].append(time.perf_counter() - t0)
    m = {k: statistics.median(v) for k, v in times.items()}
    return m["b"] / m["a"], abs(m["a2"] / m["a"] - 1)


def run_seed(seed: int, data: Any, steps: int, finetune: int) -> dict[str, float]:
    shape, classes = data.input_shape, data.num_classes
    torch.manual_seed(seed)
    teacher = _train(build_model("cnn", shape, classes, channels=64), data, seed, steps, 1e-2)
    out: dict[str, float] = {"fp32": _acc(teacher, data), "fp32_bytes": model_size_bytes(teacher)}
    calib = [data.x_train[i:i + 100] for i in range(0, 1000, 100)]
    static = quantize_static(teacher, calib)
    out.update(static_int8=_acc(static, data), static_int8_bytes=model_size_bytes(static))
    qat = prepare(teacher)
    qat = _train(qat.train(), data, seed, finetune, 1e-3)
    int8 = convert(qat)
    out.update(qat_int8=_acc(int8, data), qat_int8_bytes=model_size_bytes(int8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["dynamic_int8"] = _acc(quantize_dynamic(teacher), data)
    small, _ = prune_channels(teacher, 0.5)
    out["pruned"] = _acc(small, data)
    out["pruned_bytes"] = model_size_bytes(small)
    out["pruned_params"], out["fp32_params"] = count_parameters(small), count_parameters(teacher)
    small = _train(small.train(), data, seed, finetune, 1e-3)
    out["pruned_finetuned"] = _acc(small, data)
    out["pruned_time_ratio"], out["time_noise"] = _latency_ratio(teacher, small, data.x_test[:64])
    torch.manual_seed(seed)
    alone = _train(build_model("mlp", shape, classes, hidden=32), data, seed, steps, 1e-2)
    torch.manual_seed(seed)
    distilled = _train(build_model("mlp", shape, classes, hidden=32), data, seed, steps, 1e-2,
                       [Distillation(teacher, temperature=4.0, alpha=0.9)])
    out.update(student_alone=_acc(alone, data), student_distilled=_acc(distilled, data),
               student_params=count_parameters(alone))
    return out


def _fmt(d: Any, scale: float = 100.0, unit: str = "") -> str:
    if d.mean is None:
        return "n/a"
    if d.ci_low is None:
        return f"{scale * d.mean:.2f}{unit}"
    return f"{scale * d.mean:.2f} [{scale * d.ci_low:.2f}, {scale * d.ci_high:.2f}]{unit}"


def _fmt_diff(p: Any) -> str:
    if p.mean_diff is None:
        return "n/a"
    if p.ci_low is None:
        return f"{100 * p.mean_diff:+.2f} pt ({p.verdict})"
    return f"{100 * p.mean_diff:+.2f} [{100 * p.ci_low:+.2f}, {100 * p.ci_high:+.2f}] pt ({p.verdict})"


def _card(name: str, title: str, command: str, setting: list[str], rows: list[tuple[str, str, Any, Any]],
          verdict: str, runs: list[dict[str, float]]) -> None:
    lines = [f"# Card: {title}", "", f"Command: `{command}`", "", "## Setting", "", *[f"- {s}" for s in setting], "",
             "## Measured", "", "| contender | against | contender value [95% CI] | difference [95% CI] |",
             "|---|---|---|---|"]
    table = []
    for label, against, desc, diff in rows:
        lines.append(f"| {label} | {against} | {_fmt(desc)} | {_fmt_diff(diff) if diff is not None else '-'} |")
        table.append({"contender": label, "against": against, "value": dataclasses.asdict(desc),
                      "difference": dataclasses.asdict(diff) if diff is not None else None})
    lines += ["", "## Verdict", "", verdict]
    atomic_write_text(OUT / f"{name}.md", "\n".join(lines) + "\n")
    atomic_write_text(OUT / f"{name}.json", json.dumps({"command": command, "rows": table, "runs": runs,
                                                        "verdict": verdict}, indent=1) + "\n")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--finetune", type=int, default=500)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "PYTHONPATH=src python benchmarks/compress_cards.py " + " ".join(argv if argv is not None
                                                                                else sys.argv[1:])
    data = load_dataset("mnist1d")
    runs = []
    for seed in a.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(seed, data, a.steps, a.finetune))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s {runs[-1]}", flush=True)
    col = {k: [r[k] for r in runs] for k in runs[0]}
    OUT.mkdir(parents=True, exist_ok=True)
    base = [f"**task**: MNIST-1D (4000 train / 1000 test); seeds {a.seeds}; 95% Student t intervals, differences "
            f"paired by seed; shared 2-core machine, 1 thread",
            f"**teacher**: the paper ConvNet with 64 channels ({int(col['fp32_params'][0])} parameters), "
            f"{a.steps} Adam steps, lr 1e-2, batch 100"]
    size = {k: statistics.mean(col[f"{k}_bytes"]) / statistics.mean(col["fp32_bytes"]) for k in
            ("static_int8", "qat_int8", "pruned")}
    rows = [("fp32", "-", describe(col["fp32"]), None)]
    for k, label in (("static_int8", "static int8"), ("qat_int8", "QAT int8"), ("dynamic_int8", "dynamic int8 "
                                                                                                 "(torchao)")):
        rows.append((label, "fp32", describe(col[k]), paired(col[k], col["fp32"], True)))
    worst = min(statistics.mean(col["static_int8"]), statistics.mean(col["qat_int8"]))
    _card("quantization", "int8 quantization of the MNIST-1D ConvNet", command,
          base + [f"**static int8**: min/max calibration on 1000 training examples; **QAT**: {a.finetune} steps at "
                  f"lr 1e-3 from the trained fp32 weights, then converted; **dynamic**: torchao "
                  f"Int8DynamicActivationInt8WeightConfig (linear layer only)",
                  f"**size** (safetensors bytes, mean over seeds): static int8 {size['static_int8']:.3f}x fp32, "
                  f"QAT int8 {size['qat_int8']:.3f}x"],
          rows, f"Accuracy drop of the worse of static / QAT int8: {100 * (statistics.mean(col['fp32']) - worst):.2f} "
                f"pt (target <= 0.5 pt: {'met' if statistics.mean(col['fp32']) - worst <= 0.005 else 'missed'}); "
                f"size {size['static_int8']:.3f}x (target <= 0.3x: {'met' if size['static_int8'] <= 0.3 else 'missed'}"
                f").", runs)
    ratio = statistics.median(col["pruned_time_ratio"])
    noise = max(col["time_noise"])
    _card("structured_pruning", "structured pruning to half the channels (MNIST-1D ConvNet)", command,
          base + [f"**pruned**: half the output channels of conv1-conv3 removed by filter L1 norm "
                  f"({int(col['pruned_params'][0])} parameters, {size['pruned']:.3f}x the bytes), then "
                  f"{a.finetune} Adam steps at lr 1e-3",
                  f"**latency**: test batch of 64, fp32 eager, interleaved with the unpruned model: median time "
                  f"ratio {ratio:.2f} (noise between identical runs up to {noise:.2f})"],
          [("fp32", "-", describe(col["fp32"]), None),
           ("pruned, no fine-tuning", "fp32", describe(col["pruned"]), paired(col["pruned"], col["fp32"], True)),
           ("pruned, fine-tuned", "fp32", describe(col["pruned_finetuned"]),
            paired(col["pruned_finetuned"], col["fp32"], True))],
          f"Half the channels: accuracy {_fmt_diff(paired(col['pruned_finetuned'], col['fp32'], True))} after "
          f"fine-tuning; inference at batch 64 takes {ratio:.2f}x the time ({1 / ratio:.2f}x speed-up; noise "
          f"{noise:.2f}).", runs)
    _card("distillation", "distillation into a student a tenth of the teacher's size", command,
          base + [f"**student**: the paper MLP with hidden width 32 ({int(col['student_params'][0])} parameters), "
                  f"{a.steps} Adam steps, lr 1e-2; **distilled**: the distillation technique, T = 4, alpha = 0.9"],
          [("teacher", "-", describe(col["fp32"]), None),
           ("student alone", "-", describe(col["student_alone"]), None),
           ("student distilled", "student alone", describe(col["student_distilled"]),
            paired(col["student_distilled"], col["student_alone"], True))],
          f"Distillation: {_fmt_diff(paired(col['student_distilled'], col['student_alone'], True))} test accuracy "
          f"against the same student trained alone.", runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
