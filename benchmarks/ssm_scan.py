"""Speed of the selective scan's three implementations on the CPU: fused C++ kernel, chunked PyTorch, sequential.

All three are ``tricklab.layers.ssm.selective_scan`` on the same inputs, differing only in ``impl``:
``"fused"`` (the C++ kernel: one pass over time per (batch, channel) row, states in registers, a recomputing
backward), ``"chunked"`` (2T + L/T Python steps over tensors of all chunks at once) and ``"sequential"`` (L Python
steps, the reference). Inputs are Mamba-like: batch 1, Dm = 64 channels, N = 16 states, A = -(n + 1) (S4D-real
init), softplus(delta) log-uniform in [1e-3, 1e-1] (the dt init), u, B, C standard normal, selective B and C
(B, N, L), D and z given. Before timing, the paths' outputs are checked equal (float32, max |diff| reported).

Timed: forward (under no_grad) and forward + backward (gradients of u, delta, A, B, C, D, z). After one untimed
warm-up each, every repeat runs all contenders back to back in a rotating order, so all see the same machine
load. A fourth contender, ``fused (A/A)``, is the fused path again: the spread of the per-repeat ratio
fused / fused (A/A) is the noise between identical runs, and a ratio earns a verdict only beyond it.
Wall-clock and this thread's CPU time (``time.thread_time``, which leaves out waiting for a core on a shared
machine) are both kept; the table gives medians over repeats and medians of per-repeat ratios.

A sweep of the fused kernel's chunk (states saved every T steps for the backward) at L = 2048, forward +
backward, shows the choice of the default T = 64.

Targets (issue 14): fused >= 30x the sequential loop at L = 2048 (forward + backward, B = 1, Dm = 64, N = 16, one
thread) and faster than the chunked path at every length.

    python benchmarks/ssm_scan.py [--lengths 256 512 1024 2048 4096 8192] [--repeats 7] [--batch 1]
                                  [--channels 64] [--state 16] [--threads 1] [--no-sweep]

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tricklab.layers.ssm import selective_scan

RESULTS = Path(__file__).resolve().parent / "results" / "ssm_scan.json"
CONTENDERS = ("fused", "fused (A/A)", "chunked", "sequential")
IMPL = {"fused": "fused", "fused (A/A)": "fused", "chunked": "chunked", "sequential": "sequential"}


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


def forward_fn(inp: dict[str, torch.Tensor], impl: str, chunk: int | None = None) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            selective_scan(**inp, impl=impl, chunk_size=chunk)  # type: ignore[arg-type]
    return run


def fwd_bwd_fn(inp: dict[str, torch.Tensor], impl: str, chunk: int | None = None) -> Callable[[], None]:
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}

    def run() -> None:
        y = selective_scan(**leaves, impl=impl, chunk_size=chunk)  # type: ignore[arg-type]
        torch.autograd.grad(y.sum(), list(leaves.values()))
    return run


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and thread-CPU seconds of every fn per repeat; one warm-up each; the order rotates every repeat
    (and reverses every other), so no contender always runs first or after the same one."""
    for fn in fns.values():
        fn()
    names = list(fns)
    out = {name: {"wall": [], "cpu": []} for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in (order if r % 2 == 0 else order[::-1]):
            c0, t0 = time.thread_time(), time.perf_counter()
            fns[name]()
            out[name]["wall"].append(time.perf_counter() - t0)
            out[name]["cpu"].append(time.thread_time() - c0)
    return out


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """Median and quartiles of the per-repeat ratios num / den."""
    r = sorted(a / b for a, b in zip(num, den))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
    return {"median": statistics.median(r), "q25": q[0], "q75": q[2], "min": r[0], "max": r[-1]}


def summarise(times: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    row: dict[str, Any] = {"median_ms": {k: 1e3 * statistics.median(v["wall"]) for k, v in times.items()},
                           "cpu_median_ms": {k: 1e3 * statistics.median(v["cpu"]) for k, v in times.items()},
                           "raw_s": times}
    f = times["fused"]
    row["noise_aa"] = {k: ratio_stats(f[k], times["fused (A/A)"][k]) for k in ("wall", "cpu")}
    row["speedup"] = {name: {k: ratio_stats(times[name][k], f[k]) for k in ("wall", "cpu")}
                      for name in ("chunked", "sequential") if name in times}
    return row


def noise_band(row: dict[str, Any], key: str = "cpu") -> float:
    """Relative noise between identical runs: the largest deviation of the A/A ratio's quartiles from 1."""
    aa = row["noise_aa"][key]
    return max(abs(aa["q25"] - 1), abs(aa["q75"] - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--state", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-sweep", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    b, dm, n = args.batch, args.channels, args.state

    results: dict[str, Any] = {}
    for length in args.lengths:
        inp = make_inputs(b, dm, n, length)
        with torch.no_grad():
            ref = selective_scan(**inp, impl="sequential")  # type: ignore[arg-type]
            diffs = {impl: float((selective_scan(**inp, impl=impl) - ref).abs().max())  # type: ignore[arg-type]
                     for impl in ("fused", "chunked")}
        scale = float(ref.abs().max())
        for impl, diff in diffs.items():
            assert diff <= 1e-4 * max(1.0, scale), f"L={length}: {impl} differs from sequential by {diff}"
        row: dict[str, Any] = {"max_abs_diff_vs_sequential": diffs, "max_abs_output": scale}
        for mode, make, reps in (("forward", forward_fn, args.repeats),
                                 ("forward_backward", fwd_bwd_fn, args.repeats)):
            fns = {name: make(inp, IMPL[name]) for name in CONTENDERS}
            row[mode] = summarise(interleaved(fns, reps))
            s = row[mode]
            print(f"L={length:5d} {mode:16s} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in s["median_ms"].items())
                  + f" | seq/fused {s['speedup']['sequential']['cpu']['median']:.1f}x, chunked/fused "
                  f"{s['speedup']['chunked']['cpu']['median']:.2f}x (cpu), A/A noise +-"
                  f"{100 * noise_band(s):.1f}%", flush=True)
        results[str(length)] = row

    sweep: dict[str, Any] = {}
    if not args.no_sweep:
        length = 2048
        inp = make_inputs(b, dm, n, length)
        chunks = (16, 32, 64, 128, 256)
        times = interleaved({str(c): fwd_bwd_fn(inp, "fused", c) for c in chunks}, args.repeats)
        sweep = {"length": length, "mode": "forward_backward",
                 "cpu_median_ms": {c: 1e3 * statistics.median(t["cpu"]) for c, t in times.items()},
                 "median_ms": {c: 1e3 * statistics.median(t["wall"]) for c, t in times.items()}}

    # targets, on CPU-time ratios (robust to waiting for a core), judged against the A/A noise
    verdicts: dict[str, Any] = {}
    if "2048" in results:
        s = results["2048"]["forward_backward"]
        ratio, noise = s["speedup"]["sequential"]["cpu"]["median"], noise_band(s)
        verdicts["fused >= 30x sequential at L=2048, fwd+bwd"] = {
            "ratio": ratio, "noise": noise,
            "verdict": "met" if ratio * (1 - noise) >= 30 else ("missed" if ratio * (1 + noise) < 30 else
                                                               "within noise")}
    for length, row in results.items():
        for mode in ("forward", "forward_backward"):
            s = row[mode]
            ratio, noise = s["speedup"]["chunked"]["cpu"]["median"], noise_band(s)
            verdicts[f"fused faster than chunked, L={length}, {mode}"] = {
                "ratio": ratio, "noise": noise,
                "verdict": "met" if ratio > 1 + noise else ("missed" if ratio < 1 - noise else "within noise")}

    print(f"\nselective scan, float32, B={b} Dm={dm} N={n}, CPU, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s); medians of {args.repeats} interleaved repeats (wall ms), ratios are "
          f"medians of per-repeat CPU-time ratios")
    head = f"{'L':>6} {'mode':>8} {'seq ms':>9} {'chunked ms':>11} {'fused ms':>9} {'seq/fused':>10} " \
           f"{'chunked/fused':>14} {'A/A noise':>10}"
    print(head)
    for length, row in results.items():
        for mode, label in (("forward", "fwd"), ("forward_backward", "fwd+bwd")):
            s = row[mode]
            ms = s["median_ms"]
            print(f"{length:>6} {label:>8} {ms['sequential']:>9.2f} {ms['chunked']:>11.2f} {ms['fused']:>9.2f} "
                  f"{s['speedup']['sequential']['cpu']['median']:>9.1f}x "
                  f"{s['speedup']['chunked']['cpu']['median']:>13.2f}x {100 * noise_band(s):>9.1f}%")
    if sweep:
        print("\nfused chunk sweep, L=2048 fwd+bwd, CPU ms: "
              + ", ".join(f"T={c}: {ms:.2f}" for c, ms in sweep["cpu_median_ms"].items()))
    print("\ntargets:")
    for name, v in verdicts.items():
        print(f"  {name}: {v['ratio']:.2f}x (noise +-{100 * v['noise']:.1f}%) -> {v['verdict']}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "selective_scan impl='fused' (C++), 'chunked' (PyTorch), 'sequential' (Python loop over t), float32",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "batch": b, "channels": dm, "state": n,
        "repeats": args.repeats, "results": results, "fused_chunk_sweep": sweep, "targets": verdicts,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
