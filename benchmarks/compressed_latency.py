"""Inference latency and size of compressed models against eager fp32, side by side in one run (CPU).

Models (random weights: latency does not depend on their values):
    cnn2d  the Fashion-MNIST CNN (tricklab ``cnn2d``, channels 32 and 64, input 1x28x28)
    mlp    an MLP 784-512-512-10 (tricklab ``plain_mlp``, depth 3, width 512)

Contenders, each in evaluation mode under ``torch.no_grad()``:
    fp32            eager PyTorch (the baseline)
    fp32 (again)    the same model timed again: the ratio to fp32 is the noise between identical runs
    int8 dynamic    torchao Int8DynamicActivationInt8WeightConfig (linear layers only; convolutions stay fp32)
    int8 static     tricklab.compress.quantize_static (int8 weights stored, reference kernel: dequantized fp32 math)
    onnxruntime     the fp32 model exported to ONNX (opset 20), ONNX Runtime CPU, 1 intra-op thread
    pruned 50%      tricklab.compress.prune_channels at fraction 0.5 (half the channels removed), eager fp32
    pruned 50% ort  the same channel-pruned model in ONNX Runtime

Time: per repeat, every contender runs ``--calls`` forward calls (after warm-up calls), contenders interleaved in
one loop so that load from other processes hits them alike, the order rotated every repeat; the figure is the
median over ``--repeats`` of the per-call mean. Ratios are to fp32 in the same run (below 1 = faster). A
difference earns a verdict only where it exceeds the noise (|ratio of fp32 (again) - 1|).

    python benchmarks/compressed_latency.py [--repeats 15] [--calls 20] [--threads 1]

Writes ``benchmarks/results/compressed_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.compress.channels import prune_channels
from tricklab.compress.export import OnnxModel, export_onnx
from tricklab.compress.quantize import quantize_dynamic, quantize_static
from tricklab.evaluate.cost import model_size_bytes
from tricklab.models import build_model

OUT = Path(__file__).resolve().parent / "results" / "compressed_latency.json"


def _models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    torch.manual_seed(0)
    return {"cnn2d": (build_model("cnn2d", (1, 28, 28), 10).eval(), (1, 28, 28)),
            "mlp": (build_model("plain_mlp", (1, 28, 28), 10, depth=3, width=512).eval(), (1, 28, 28))}


def _contenders(model: nn.Module, shape: tuple[int, ...], tmp: Path, name: str) -> dict[str, tuple[Callable, int]]:
    """name -> (callable, size in bytes)."""
    calib = [torch.randn(64, *shape) for _ in range(4)]
    small, _ = prune_channels(model, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dyn = quantize_dynamic(model)
        onnx_path = export_onnx(model, torch.randn(2, *shape), tmp / f"{name}.onnx")
        small_path = export_onnx(small, torch.randn(2, *shape), tmp / f"{name}-small.onnx")
    static = quantize_static(model, calib)
    fp32_size = model_size_bytes(model)
    return {
        "fp32": (model, fp32_size),
        "fp32 (again)": (model, fp32_size),
        "int8 dynamic": (dyn, -1),  # torchao tensor subclasses: safetensors cannot size them
        "int8 static": (static, model_size_bytes(static)),
        "onnxruntime": (OnnxModel(onnx_path), onnx_path.stat().st_size),
        "pruned 50%": (small, model_size_bytes(small)),
        "pruned 50% ort": (OnnxModel(small_path), small_path.stat().st_size),
    }


def _time(fns: dict[str, Callable], x: torch.Tensor, repeats: int, calls: int) -> dict[str, float]:
    per: dict[str, list[float]] = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():  # warm-up (allocations, ONNX Runtime's first-run setup)
            for _ in range(3):
                fn(x)
        names = list(fns)
        for r in range(repeats):
            # rotate the order every repeat: no contender always runs first (after the previous batch size)
            for k in names[r % len(names):] + names[:r % len(names)]:
                fn = fns[k]
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn(x)
                per[k].append((time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) for k, v in per.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, shape) in _models().items():
            contenders = _contenders(model, shape, Path(tmp), name)
            fns = {k: v[0] for k, v in contenders.items()}
            for batch in (1, 64):
                x = torch.randn(batch, *shape)
                times = _time(fns, x, a.repeats, a.calls)
                noise = abs(times["fp32 (again)"] / times["fp32"] - 1)
                for k, t in times.items():
                    ratio = t / times["fp32"]
                    verdict = "same" if abs(ratio - 1) <= noise else ("faster" if ratio < 1 else "slower")
                    rows.append({"model": name, "batch": batch, "contender": k, "ms": t * 1e3, "ratio": ratio,
                                 "noise": noise, "verdict": verdict, "bytes": contenders[k][1]})
                    print(f"{name:6s} batch {batch:3d}  {k:15s} {t * 1e3:9.3f} ms  x{ratio:5.2f} fp32  "
                          f"(noise {noise:.2f}: {verdict})  size {contenders[k][1]}", flush=True)
    meta = {"command": "python " + " ".join(["benchmarks/compressed_latency.py", *(argv or sys.argv[1:])]),
            "torch": torch.__version__, "threads": a.threads, "repeats": a.repeats, "calls": a.calls,
            "machine": platform.machine(), "processor": platform.processor(),
            "note": "shared 2-core machine: other processes ran during the measurement"}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
