"""Forward + backward time of a Mamba layer against a pre-LN attention block and mambapy's Mamba block (CPU).

Contenders, all at the same width (d_model 128) on the same x (B, L, d_model), one thread:
    mamba        tricklab.layers.ssm.MambaLayer: x + Mamba(RMSNorm(x)), expand 2, N 16, the fused scan (impl auto)
    mamba (A/A)  the same module again: the spread of mamba / mamba (A/A) is the noise between identical runs
    attention    tricklab.layers.attention.TransformerBlock(norm_first=True, causal=True): x + Attn(LN(x)), then
                 x + MLP(LN(x)) (d_ff = 4 d_model, GELU), on F.scaled_dot_product_attention (causal) — GPT's block
    mambapy      mambapy 1.2's ResidualBlock (pure PyTorch, Blelloch parallel scan "pscan"), loaded with the SAME
                 weights as ``mamba`` (the state dicts have identical names); their outputs are checked equal
                 before timing, so both compute one function
Timed: y = block(x); grads of x and every parameter w.r.t. y.sum() (torch.autograd.grad). After one warm-up each,
every repeat runs all contenders in a rotating order; medians over repeats, ratios are medians of per-repeat
ratios of this thread's CPU time (robust to waiting for a core on a shared machine; wall times are kept too).

Linearity: least-squares slope of log(time) against log(L) over the lengths, and time(2L) / time(L).
Targets (issue 14): Mamba's time grows linearly; Mamba at least as fast as attention from L = 2048 up; faster
than mambapy at every length. A comparison earns a verdict only beyond the A/A noise.

Parameters per layer: MambaLayer ~ 6.3 d^2 (in_proj 4d^2, out_proj 2d^2, x_proj/dt_proj/A/D/conv), the attention
block ~ 12 d^2 (4d^2 attention, 8d^2 MLP): a Transformer block has about two Mamba layers' parameters (the paper
stacks 2 Mamba layers per Transformer block at equal size). The table also gives time per parameter-matched pair.

    python benchmarks/mamba_vs_attention.py [--lengths 256 512 1024 2048 4096 8192] [--repeats 5] [--batch 4]
                                            [--d-model 128] [--threads 1]

Writes ``benchmarks/results/mamba_vs_attention.json`` and ``.svg``.
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
from torch import nn

from tricklab.layers.attention import TransformerBlock
from tricklab.layers.ssm import MambaLayer

RESULTS = Path(__file__).resolve().parent / "results" / "mamba_vs_attention.json"
PLOT = RESULTS.with_suffix(".svg")


def build(d_model: int, n_heads: int) -> dict[str, nn.Module]:
    from mambapy.mamba import MambaConfig, ResidualBlock  # benchmark-only dependency (the test extra has it)

    torch.manual_seed(0)
    ref = ResidualBlock(MambaConfig(d_model=d_model, n_layers=1, pscan=True))
    ours = MambaLayer(d_model, d_state=16, d_conv=4, expand=2)
    ours.load_state_dict(ref.state_dict())  # same parameter names: one function, two implementations
    attn = TransformerBlock(d_model, n_heads, norm_first=True, causal=True)
    return {"mamba": ours, "mamba (A/A)": ours, "attention": attn, "mambapy": ref}


def fwd_bwd(block: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    leaves = [x] + [p for p in block.parameters()]

    def run() -> None:
        y = block(x)
        torch.autograd.grad(y.sum(), leaves)
    return run


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, dict[str, list[float]]]:
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
    r = sorted(a / b for a, b in zip(num, den))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
    return {"median": statistics.median(r), "q25": q[0], "q75": q[2], "min": r[0], "max": r[-1]}


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def verdict(ratio: float, noise: float, target: float = 1.0) -> str:
    """'met' when ratio beats target beyond the noise band, 'missed' when below it, else 'within noise'."""
    if ratio * (1 - noise) >= target:
        return "met"
    return "missed" if ratio * (1 + noise) < target else "within noise"


def plot(results: dict[str, Any], lengths: list[int], path: Path, title: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # plots are optional (the plots extra)
        return f"no plot: {type(exc).__name__}: {exc}"
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in ("mamba", "attention", "mambapy"):
        ys = [results[str(L)]["cpu_median_ms"][name] for L in lengths]
        axes[0].plot(lengths, ys, marker="o", label=name)
    ref = [results[str(lengths[0])]["cpu_median_ms"]["mamba"] * L / lengths[0] for L in lengths]
    axes[0].plot(lengths, ref, ls=":", color="grey", label="linear (from mamba at the first L)")
    for name, key in (("attention / mamba", "attention"), ("mambapy / mamba", "mambapy")):
        axes[1].plot(lengths, [results[str(L)]["ratio_to_mamba"][key]["cpu"]["median"] for L in lengths],
                     marker="o", label=name)
    axes[1].axhline(1.0, color="grey", lw=0.8)
    for ax, t, unit in ((axes[0], "forward + backward time", "ms (CPU time)"),
                        (axes[1], "time relative to the Mamba layer", "ratio (> 1: Mamba faster)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(unit)
        ax.set_title(t)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    blocks = build(args.d_model, args.heads)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in blocks.items()}

    results: dict[str, Any] = {}
    for length in args.lengths:
        x = torch.randn(args.batch, length, args.d_model, generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            diff = float((blocks["mamba"](x) - blocks["mambapy"](x)).abs().max())
        assert diff < 1e-3, f"L={length}: our MambaLayer and mambapy's block disagree by {diff}"
        x.requires_grad_(True)
        times = interleaved({name: fwd_bwd(m, x) for name, m in blocks.items()}, args.repeats)
        row: dict[str, Any] = {
            "max_abs_diff_mamba_vs_mambapy": diff,
            "median_ms": {k: 1e3 * statistics.median(v["wall"]) for k, v in times.items()},
            "cpu_median_ms": {k: 1e3 * statistics.median(v["cpu"]) for k, v in times.items()},
            "ratio_to_mamba": {k: {c: ratio_stats(times[k][c], times["mamba"][c]) for c in ("wall", "cpu")}
                               for k in times if k != "mamba"},
            "raw_s": times,
        }
        aa = row["ratio_to_mamba"]["mamba (A/A)"]["cpu"]
        row["noise"] = max(abs(aa["q25"] - 1), abs(aa["q75"] - 1))
        results[str(length)] = row
        ms = row["cpu_median_ms"]
        print(f"L={length:5d} cpu ms: mamba {ms['mamba']:.1f}, attention {ms['attention']:.1f}, mambapy "
              f"{ms['mambapy']:.1f} | attention/mamba {row['ratio_to_mamba']['attention']['cpu']['median']:.2f}x, "
              f"mambapy/mamba {row['ratio_to_mamba']['mambapy']['cpu']['median']:.2f}x, A/A noise "
              f"+-{100 * row['noise']:.1f}%", flush=True)

    lengths = args.lengths
    slopes = {name: loglog_slope(lengths, [results[str(L)]["cpu_median_ms"][name] for L in lengths])
              for name in ("mamba", "attention", "mambapy")}
    doubling = {name: {f"{a}->{b}": results[str(b)]["cpu_median_ms"][name] / results[str(a)]["cpu_median_ms"][name]
                       for a, b in zip(lengths, lengths[1:])} for name in ("mamba", "attention", "mambapy")}
    targets: dict[str, Any] = {"mamba time linear in L (log-log slope <= 1.1)": {
        "slope": slopes["mamba"], "verdict": "met" if slopes["mamba"] <= 1.1 else "missed"}}
    for length in lengths:
        row = results[str(length)]
        if length >= 2048:
            r = row["ratio_to_mamba"]["attention"]["cpu"]["median"]
            targets[f"mamba at least as fast as attention, L={length}"] = {
                "ratio": r, "noise": row["noise"], "verdict": verdict(r, row["noise"])}
        r = row["ratio_to_mamba"]["mambapy"]["cpu"]["median"]
        targets[f"mamba faster than mambapy, L={length}"] = {
            "ratio": r, "noise": row["noise"], "verdict": verdict(r, row["noise"])}

    title = (f"one layer fwd+bwd, B={args.batch}, d_model={args.d_model}, CPU {torch.get_num_threads()} thread, "
             f"torch {torch.__version__}")
    print(f"\n{title}; medians of {args.repeats} interleaved repeats (CPU-time ms); ratios = median per-repeat "
          f"CPU-time ratio to mamba")
    print(f"{'L':>6} {'mamba ms':>9} {'attn ms':>9} {'mambapy ms':>11} {'attn/mamba':>11} {'mambapy/mamba':>14} "
          f"{'2 mamba/attn':>13} {'A/A noise':>10}")
    for length in lengths:
        row = results[str(length)]
        ms = row["cpu_median_ms"]
        print(f"{length:>6} {ms['mamba']:>9.1f} {ms['attention']:>9.1f} {ms['mambapy']:>11.1f} "
              f"{row['ratio_to_mamba']['attention']['cpu']['median']:>10.2f}x "
              f"{row['ratio_to_mamba']['mambapy']['cpu']['median']:>13.2f}x "
              f"{2 * ms['mamba'] / ms['attention']:>12.2f}x {100 * row['noise']:>9.1f}%")
    print("log-log slope of time vs L: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
    print(f"parameters per layer: mamba {params['mamba']:,}, attention block {params['attention']:,}, "
          f"mambapy {params['mambapy']:,}")
    print("targets:")
    for name, v in targets.items():
        extra = f"{v['ratio']:.2f}x (noise +-{100 * v['noise']:.1f}%)" if "ratio" in v else f"slope {v['slope']:.2f}"
        print(f"  {name}: {extra} -> {v['verdict']}")
    plot_note = plot(results, lengths, PLOT, title)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "what": "forward+backward of one layer: MambaLayer (fused scan) vs pre-LN TransformerBlock (SDPA) vs "
                "mambapy ResidualBlock (same weights as MambaLayer)",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "batch": args.batch, "d_model": args.d_model, "heads": args.heads, "repeats": args.repeats,
        "params": params, "results": results, "loglog_slope": slopes, "time_ratio_per_doubling": doubling,
        "targets": targets, "plot": plot_note,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS} and {plot_note}")


if __name__ == "__main__":
    main()
