"""Forward time and peak memory of attention layers against sequence length (CPU).

Layers (all self-attention over x (B, T, d_model), with their input and output projections):
    naive      MultiHeadAttention(impl="naive"): softmax(QK^T/sqrt(d))V with the (T, T) matrix materialised
    sdpa       MultiHeadAttention(impl="sdpa"): torch's fused F.scaled_dot_product_attention (the baseline)
    chunked    MultiHeadAttention(impl="chunked", chunk_size=128): online-softmax tiles (Rabe & Staats 2021)
    linformer  LinformerAttention(seq_len=max length, k=128): keys/values projected T -> k (Wang et al. 2020)
    local      SparseAttention("local", window=128): blocked banded attention (Child et al. 2019)
    mamba      tricklab.layers.ssm.Mamba(d_model): selective state-space mixer (skipped with a note if missing)
All run non-causal (Linformer cannot be causal), in eval mode under ``torch.no_grad()`` (inference).

Time: median over ``--repeats`` forward calls after one warm-up call, layers interleaved per repeat.
Peak memory: torch.profiler with ``profile_memory=True, record_shapes=True, with_stack=True``; its memory
timeline (``profile._memory_profile().timeline``) lists every allocation and free of the c10 CPU allocator in time
order, so the running sum of (+size on create, -size on destroy) over one forward call, from a zero start,
gives the peak of bytes allocated *during* the call (inputs and weights, which exist before, are not counted).
This counts tensor memory exactly, unlike ru_maxrss (which includes the allocator's and the interpreter's
pages and never goes down). The running time of the profiled call is not used.

Linearity check: for each layer, the ratio of peak memory at 2L to that at L, and the least-squares slope of
log(memory) against log(L) (1 = linear, 2 = quadratic).

    python benchmarks/attention_scaling.py [--lengths 256 512 1024 2048 4096] [--repeats 3] [--threads 1]

Writes ``benchmarks/results/attention_scaling.json`` and ``benchmarks/results/attention_scaling.svg``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tricklab.layers.attention import LinformerAttention, MultiHeadAttention, SparseAttention

RESULTS = Path(__file__).resolve().parent / "results" / "attention_scaling.json"
PLOT = RESULTS.with_suffix(".svg")


def build_layers(d_model: int, n_heads: int, max_len: int, chunk: int, k: int, window: int
                 ) -> tuple[dict[str, nn.Module], dict[str, str]]:
    torch.manual_seed(0)
    layers: dict[str, nn.Module] = {
        "naive": MultiHeadAttention(d_model, n_heads, impl="naive"),
        "sdpa": MultiHeadAttention(d_model, n_heads, impl="sdpa"),
        "chunked": MultiHeadAttention(d_model, n_heads, impl="chunked", chunk_size=chunk),
        "linformer": LinformerAttention(d_model, n_heads, seq_len=max_len, k=k),
        "local": SparseAttention(d_model, n_heads, "local", window=window, causal=False),
    }
    notes: dict[str, str] = {}
    try:
        from tricklab.layers.ssm import Mamba

        m = Mamba(d_model)
        with torch.no_grad():
            out = m(torch.randn(1, 8, d_model))
        if out.shape != (1, 8, d_model):
            raise ValueError(f"Mamba returned shape {tuple(out.shape)}")
        layers["mamba"] = m
    except Exception as exc:  # written concurrently by another worker: absent or not working yet
        notes["mamba"] = f"skipped: {type(exc).__name__}: {str(exc)[:120]}"
        print(f"note: Mamba {notes['mamba']}")
    for layer in layers.values():
        layer.eval()
    return layers, notes


def peak_bytes(fn: Any) -> int:
    """Peak of tensor bytes allocated during fn() (CPU allocator events from the profiler's memory timeline)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
        fn()
    events = sorted(p._memory_profile().timeline, key=lambda e: e[0])
    cur = peak = 0
    for _, action, _, size in events:
        if action == Action.CREATE:
            cur += size
        elif action == Action.DESTROY:
            cur -= size
        peak = max(peak, cur)
    return peak


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def plot(results: dict[str, dict[str, Any]], lengths: list[int], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        return f"no plot: {type(exc).__name__}: {exc}"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, r in results.items():
        pts = [(L, r["time_ms"][str(L)], r["peak_mib"][str(L)]) for L in lengths if str(L) in r["time_ms"]]
        if not pts:
            continue
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        axes[1].plot([p[0] for p in pts], [max(p[2], 1e-3) for p in pts], marker="o", label=name)
    for ax, title, unit in ((axes[0], "forward time", "ms"), (axes[1], "peak memory during forward", "MiB")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("attention layers, d_model 64, 4 heads, batch 1, CPU 1 thread", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"benchmarks/results/{path.name}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--linformer-k", type=int, default=128)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=5.0,
                    help="a layer whose forward takes longer than this is not run at longer lengths")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lengths = sorted(args.lengths)
    layers, notes = build_layers(args.d_model, args.heads, max(lengths), args.chunk, args.linformer_k, args.window)

    # same function before timing: all attention variants but the approximations must agree with SDPA
    with torch.no_grad():
        x = torch.randn(args.batch, 300, args.d_model, generator=torch.Generator().manual_seed(1))
        ref = layers["sdpa"](x)
        for name in ("naive", "chunked"):
            layers[name].load_state_dict(layers["sdpa"].state_dict())
            diff = (layers[name](x) - ref).abs().max().item()
            assert diff < 1e-4, f"{name} disagrees with sdpa before timing: {diff}"

    results: dict[str, dict[str, Any]] = {n: {"time_ms": {}, "peak_mib": {}} for n in layers}
    active = set(layers)
    for L in lengths:
        x = torch.randn(args.batch, L, args.d_model, generator=torch.Generator().manual_seed(L))
        names = [n for n in layers if n in active]
        times: dict[str, list[float]] = {n: [] for n in names}
        with torch.no_grad():
            for n in names:
                layers[n](x)                                   # warm-up
            for r in range(args.repeats):
                order = names if r % 2 == 0 else names[::-1]   # alternate order so all see the same load
                for n in order:
                    t0 = time.perf_counter()
                    layers[n](x)
                    times[n].append(time.perf_counter() - t0)
            for n in names:
                results[n]["time_ms"][str(L)] = 1e3 * statistics.median(times[n])
                results[n]["peak_mib"][str(L)] = peak_bytes(lambda: layers[n](x)) / 2**20
                if statistics.median(times[n]) > args.max_seconds:
                    active.discard(n)
                    notes[n] = f"stopped after T={L} (forward > {args.max_seconds} s)"
        print(f"T={L}: " + ", ".join(f"{n} {results[n]['time_ms'][str(L)]:.1f} ms" for n in names), flush=True)

    # ratios to SDPA, memory growth
    for n, r in results.items():
        r["time_ratio_to_sdpa"] = {L: t / results["sdpa"]["time_ms"][L] for L, t in r["time_ms"].items()
                                   if L in results["sdpa"]["time_ms"]}
        r["peak_ratio_to_sdpa"] = {L: m / results["sdpa"]["peak_mib"][L] if results["sdpa"]["peak_mib"][L] else None
                                   for L, m in r["peak_mib"].items() if L in results["sdpa"]["peak_mib"]}
        ls = [int(L) for L in r["peak_mib"]]
        mem = [r["peak_mib"][str(L)] for L in ls]
        r["peak_ratio_2L_over_L"] = {f"{a}->{b}": mem[i + 1] / mem[i] for i, (a, b) in enumerate(zip(ls, ls[1:]))
                                     if b == 2 * a and mem[i] > 0}
        r["peak_loglog_slope"] = loglog_slope(ls, mem) if len(ls) > 1 and min(mem) > 0 else None
        if len(ls) > 1:
            # bytes per extra token from a least-squares line, the constant of the linear growth
            mx, my = statistics.fmean(ls), statistics.fmean(mem)
            r["peak_mib_per_1k_tokens"] = 1e3 * sum((a - mx) * (b - my) for a, b in zip(ls, mem)) / sum(
                (a - mx) ** 2 for a in ls)

    print(f"\nforward (no grad), d_model {args.d_model}, {args.heads} heads, batch {args.batch}, torch "
          f"{torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'layer':<10} {'T':>5} {'ms':>9} {'x sdpa':>7} {'peak MiB':>9} {'x sdpa':>7}")
    for n, r in results.items():
        for L in r["time_ms"]:
            pr = r["peak_ratio_to_sdpa"].get(L)
            print(f"{n:<10} {L:>5} {r['time_ms'][L]:>9.2f} {r['time_ratio_to_sdpa'].get(L, float('nan')):>7.2f} "
                  f"{r['peak_mib'][L]:>9.2f} {pr if pr is not None else float('nan'):>7.2f}")
    print(f"\n{'layer':<10} {'log-log slope':>13} {'MiB per 1k tokens (LSQ line)':>29}  peak(2L)/peak(L)")
    for n, r in results.items():
        s, lin = r["peak_loglog_slope"], r.get("peak_mib_per_1k_tokens")
        ratios = " ".join(f"{v:.2f}" for v in r["peak_ratio_2L_over_L"].values())
        print(f"{n:<10} {s if s is not None else float('nan'):>13.2f} "
              f"{lin if lin is not None else float('nan'):>29.3f}  {ratios}")
    for n, note in notes.items():
        print(f"note: {n}: {note}")

    plot_path = plot(results, lengths, PLOT)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "forward time and peak memory of attention layers vs sequence length, eval mode, no grad",
        "memory_method": "torch.profiler(profile_memory=True) memory timeline: peak of the running sum of CPU "
                         "allocator creates/destroys during one forward call (bytes allocated during the call)",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "threads": args.threads, "d_model": args.d_model, "heads": args.heads, "batch": args.batch,
        "chunk_size": args.chunk, "linformer_k": args.linformer_k, "local_window": args.window,
        "repeats": args.repeats, "lengths": lengths, "notes": notes, "plot": plot_path, "results": results,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS} ({plot_path})")


if __name__ == "__main__":
    main()
