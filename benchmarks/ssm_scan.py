"""Speed of the chunked parallel selective scan against the sequential reference (a Python loop over t), on CPU.

Both are ``tricklab.layers.ssm.selective_scan`` on the same inputs: ``impl="parallel"`` (chunked: 2T + L/T Python
steps over tensors of all chunks at once) and ``impl="sequential"`` (L Python steps; discretisation vectorised
up front, as in the paper's reference ``selective_scan_ref``). Inputs are Mamba-like: batch 1, Dm = 64 channels,
N = 16 states, A = -(n + 1) (S4D-real init), delta = softplus(raw) with softplus(raw) log-uniform in [1e-3, 1e-1]
(the dt init), u, B, C standard normal, selective B and C (B, N, L), D and z given. Before timing, the two paths'
outputs are checked equal (float32, max |diff| reported).

Timed: forward (under no_grad) and forward + backward (gradients of u, delta, A, B, C, D, z). After one untimed
warm-up each, every repeat runs both paths back to back, the order flipped every repeat, so both see the same
machine load; the table gives medians over repeats and the median of the per-repeat ratios sequential/parallel.
A chunk-size sweep at L = 2048 (forward) shows the tuning of the default ``auto_chunk_size`` (round(sqrt(L/2))).

    python benchmarks/ssm_scan.py [--lengths 256 512 1024 2048 4096] [--repeats 7] [--batch 1] [--channels 64]
                                  [--state 16] [--threads 1] [--no-backward] [--no-sweep]

Writes ``benchmarks/results/ssm_scan.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

from tricklab.layers.ssm import auto_chunk_size, selective_scan

RESULTS = Path(__file__).resolve().parent / "results" / "ssm_scan.json"


def make_inputs(b: int, dm: int, n: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(b, dm, length, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "u": torch.randn(b, dm, length, generator=g),
        "delta": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus: softplus(delta) = dt
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(dm, 1),
        "B": torch.randn(b, n, length, generator=g),
        "C": torch.randn(b, n, length, generator=g),
        "D": torch.ones(dm),
        "z": torch.randn(b, dm, length, generator=g),
    }


def forward_fn(inp: dict[str, torch.Tensor], impl: str, chunk: int | None) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            selective_scan(**inp, impl=impl, chunk_size=chunk)  # type: ignore[arg-type]
    return run


def fwd_bwd_fn(inp: dict[str, torch.Tensor], impl: str, chunk: int | None) -> Callable[[], None]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}

    def run() -> None:
        y = selective_scan(**leaves, impl=impl, chunk_size=chunk)  # type: ignore[arg-type]
        torch.autograd.grad(y.sum(), list(leaves.values()))
    return run


def paired(a: Callable[[], None], b: Callable[[], None], repeats: int) -> dict[str, Any]:
    """Medians of a's and b's seconds and of the per-repeat ratio a / b, alternating the order.

    Both wall-clock time and this thread's CPU time (``time.thread_time``) are kept: on a shared machine the CPU
    time leaves out the time the process waits for a core, the wall time does not.
    """
    a(), b()  # warm-up
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for r in range(repeats):
        for who, fn in ([(0, a), (1, b)] if r % 2 == 0 else [(1, b), (0, a)]):
            c0, t0 = time.thread_time(), time.perf_counter()
            fn()
            wall[who].append(time.perf_counter() - t0)
            cpu[who].append(time.thread_time() - c0)
    ratios = [x / y for x, y in zip(wall[0], wall[1])]
    cpu_ratios = [x / y for x, y in zip(cpu[0], cpu[1])]
    return {"seq_s": wall[0], "par_s": wall[1], "seq_cpu_s": cpu[0], "par_cpu_s": cpu[1],
            "seq_median_s": statistics.median(wall[0]), "par_median_s": statistics.median(wall[1]),
            "speedup_median": statistics.median(ratios), "speedup_per_repeat": ratios,
            "seq_cpu_median_s": statistics.median(cpu[0]), "par_cpu_median_s": statistics.median(cpu[1]),
            "cpu_speedup_median": statistics.median(cpu_ratios)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-backward", action="store_true")
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b, dm, n = args.batch, args.channels, args.state

    results: dict[str, Any] = {}
    for length in args.lengths:
        inp = make_inputs(b, dm, n, length)
        with torch.no_grad():
            diff = (selective_scan(**inp, impl="parallel") - selective_scan(**inp, impl="sequential")).abs().max()
        scale = selective_scan(**inp, impl="sequential").abs().max()
        assert diff <= 1e-4 * max(1.0, float(scale)), f"L={length}: paths disagree by {float(diff)}"
        row: dict[str, Any] = {"chunk_size": auto_chunk_size(length), "max_abs_diff": float(diff),
                               "max_abs_output": float(scale)}
        row["forward"] = paired(forward_fn(inp, "sequential", None), forward_fn(inp, "parallel", None),
                                args.repeats)
        if not args.no_backward:
            row["forward_backward"] = paired(fwd_bwd_fn(inp, "sequential", None), fwd_bwd_fn(inp, "parallel", None),
                                             max(3, args.repeats // 2 + 1))
        results[str(length)] = row
        fb = row.get("forward_backward")
        fw = row["forward"]
        print(f"L={length:5d} fwd {1e3 * fw['seq_median_s']:8.2f} / {1e3 * fw['par_median_s']:7.2f} ms ="
              f" {fw['speedup_median']:5.1f}x (cpu {fw['cpu_speedup_median']:5.1f}x)"
              + (f"   fwd+bwd {1e3 * fb['seq_median_s']:8.2f} / {1e3 * fb['par_median_s']:7.2f} ms ="
                 f" {fb['speedup_median']:5.1f}x (cpu {fb['cpu_speedup_median']:5.1f}x)" if fb else ""), flush=True)

    sweep: dict[str, Any] = {}
    if not args.no_sweep:
        length = 2048
        inp = make_inputs(b, dm, n, length)
        fns = {c: forward_fn(inp, "parallel", c) for c in (8, 16, 24, 32, 48, 64, 128, 256)}
        for fn in fns.values():
            fn()
        times: dict[int, list[float]] = {c: [] for c in fns}
        for r in range(args.repeats):
            for c in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t0 = time.perf_counter()
                fns[c]()
                times[c].append(time.perf_counter() - t0)
        sweep = {"length": length, "median_ms": {str(c): 1e3 * statistics.median(t) for c, t in times.items()},
                 "auto_chunk_size": auto_chunk_size(length)}

    print(f"\nselective scan, float32, B={b} Dm={dm} N={n}, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); medians of {args.repeats} alternated repeats")
    print("wall-clock medians; 'cpu' = ratio of thread CPU times (robust to waiting for a core)")
    print(f"{'L':>6} {'chunk':>6} {'seq fwd ms':>11} {'par fwd ms':>11} {'speed-up':>9} {'cpu':>6}"
          + ("" if args.no_backward else f" {'seq f+b ms':>11} {'par f+b ms':>11} {'speed-up':>9} {'cpu':>6}"))
    for length, row in results.items():
        f = row["forward"]
        line = (f"{length:>6} {row['chunk_size']:>6} {1e3 * f['seq_median_s']:>11.2f} {1e3 * f['par_median_s']:>11.2f}"
                f" {f['speedup_median']:>8.1f}x {f['cpu_speedup_median']:>5.1f}x")
        if "forward_backward" in row:
            fb = row["forward_backward"]
            line += (f" {1e3 * fb['seq_median_s']:>11.2f} {1e3 * fb['par_median_s']:>11.2f}"
                     f" {fb['speedup_median']:>8.1f}x {fb['cpu_speedup_median']:>5.1f}x")
        print(line)
    if sweep:
        print(f"\nchunk-size sweep, L=2048 forward (auto = {sweep['auto_chunk_size']}): "
              + ", ".join(f"T={c}: {ms:.2f} ms" for c, ms in sweep["median_ms"].items()))

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "selective_scan impl='parallel' (chunked) vs impl='sequential' (Python loop over t), float32, CPU",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "batch": b, "channels": dm, "state": n,
        "repeats": args.repeats, "results": results, "chunk_sweep": sweep,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
