"""Efficiency of GPT, Mamba and a Mamba-attention hybrid of matched size against sequence length (CPU).

Models (character vocabulary of 84, the Shakespeare task's; d_model 128; non-embedding parameters matched within
3%, as in the recipes ``recipes/shakespeare-{gpt,mamba,hybrid}.yaml``):
    gpt     4 pre-LN causal Transformer blocks, 4 heads, SDPA (793k non-embedding parameters)
    mamba   7 Mamba layers, N = 16, expand 2, the fused scan (816k)
    hybrid  6 layers: 5 Mamba layers and one attention block in the middle (781k)
GPT's position table is sized for the longest sequence measured (it is an embedding: not counted above).

Measured against sequence length L (default 256 ... 8192), batch 1, one thread, random token ids:
    train      one optimizer step (forward, cross-entropy, backward, AdamW): training tokens per second
    infer      forward under no_grad in eval mode: latency (ms)
    memory     peak tensor bytes allocated during one training step and during one inference forward
               (torch.profiler's memory timeline; inputs and weights, which exist before, are not counted)
and against context length C (the same lengths):
    generate   prefill C tokens (model.forward_with_state), then ``--gen-tokens`` greedy tokens one at a time
               through the same sampling code (model.step: Mamba's recurrent state, GPT's KV cache): tokens per
               second of the decode phase, prefill time, and the bytes of state the model carries at the end
               (KV cache: 2 n_layer B T d numbers; Mamba: n_layer B E (N + d_conv - 1), whatever the length)
Timings interleave the models per repeat (rotating order) and report medians of this thread's CPU time; the
``mamba (A/A)`` row is Mamba measured twice per repeat, so the spread of their per-repeat ratio is the noise
between identical runs. Crossover: the smallest measured L from which Mamba stays better than GPT in a metric.

This is the measurement half of issue 14's efficiency study; the equal-wall-clock training comparison (bits per
character) is run through the lab with the three recipes.

    python benchmarks/mamba_efficiency.py [--lengths 256 512 1024 2048 4096 8192] [--repeats 3]
                                          [--gen-tokens 32] [--threads 1] [--skip-memory]

Writes ``benchmarks/results/mamba_efficiency.json``, ``.svg`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.models import build_model
from tricklab.models.generate import sample_next

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_scaling import peak_bytes  # noqa: E402  (the profiler-timeline peak, shared with that benchmark)

RESULTS = Path(__file__).resolve().parent / "results" / "mamba_efficiency.json"
VOCAB = 84  # the Shakespeare character vocabulary (meta["vocab"] of shakespeare-char)
MODELS = ("gpt", "mamba", "hybrid")


def build_models(max_len: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "gpt": build_model("gpt", (max_len,), VOCAB, n_layer=4, d_model=128, n_heads=4, dropout=0.0),
        "mamba": build_model("mamba_lm", (max_len,), VOCAB, n_layer=7, d_model=128, d_state=16),
        "hybrid": build_model("hybrid_lm", (max_len,), VOCAB, n_layer=6, d_model=128, d_state=16, n_heads=4),
    }


def non_embedding_params(model: nn.Module) -> int:
    emb = {id(p) for name, p in model.named_parameters() if name.startswith(("tok_emb", "pos_emb", "emb"))}
    return sum(p.numel() for p in model.parameters() if id(p) not in emb)


def train_step_fn(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], None]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def run() -> None:
        model.train()
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def infer_fn(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def run() -> None:
        model.eval()
        with torch.no_grad():
            model(x)
    return run


def interleaved(fns: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    """Thread CPU seconds of every fn per repeat, after one warm-up each; rotating order."""
    for fn in fns.values():
        fn()
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in (order if r % 2 == 0 else order[::-1]):
            c0 = time.thread_time()
            fns[name]()
            out[name].append(time.thread_time() - c0)
    return out


def aa_noise(times: dict[str, list[float]]) -> float:
    """Relative spread of the per-repeat ratio mamba / mamba (A/A): max |quartile - 1|."""
    r = sorted(a / b for a, b in zip(times["mamba"], times["mamba (A/A)"]))
    q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
    return max(abs(q[0] - 1), abs(q[2] - 1))


def state_bytes(state: Any) -> int:
    """Bytes of the decoding state: KV caches count their filled part, recurrent states their tensors."""
    if isinstance(state, Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(s) for s in state)
    k, v = getattr(state, "k", None), getattr(state, "v", None)  # a KV cache
    return sum(t.numel() * t.element_size() for t in (k, v) if t is not None)


@torch.no_grad()
def generation(model: nn.Module, context: Tensor, new_tokens: int) -> dict[str, float]:
    """Prefill ``context`` (1, C), then ``new_tokens`` greedy steps through the model's state; CPU seconds."""
    model.eval()
    c0 = time.thread_time()
    logits, state = model.forward_with_state(context, model.init_state(context.shape[0]))
    logits = logits[:, -1]
    prefill = time.thread_time() - c0
    c0 = time.thread_time()
    for _ in range(new_tokens):
        nxt = sample_next(logits, temperature=0.0)
        logits, state = model.step(nxt, state)
    decode = time.thread_time() - c0
    return {"prefill_s": prefill, "decode_s": decode, "tokens_per_s": new_tokens / decode,
            "state_bytes": state_bytes(state)}


def crossover(lengths: list[int], better: list[bool]) -> int | None:
    """Smallest length from which ``better`` holds at every longer measured length, None if never."""
    for i, length in enumerate(lengths):
        if all(better[i:]):
            return length
    return None


def plot(res: dict[str, Any], lengths: list[int], path: Path, title: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # plots are optional (the plots extra)
        return f"no plot: {type(exc).__name__}: {exc}"
    panels = [("train_tokens_per_s", "training throughput", "tokens / s"),
              ("infer_ms", "inference latency (forward)", "ms"),
              ("train_peak_mib", "peak memory, training step", "MiB"),
              ("infer_peak_mib", "peak memory, inference forward", "MiB"),
              ("gen_tokens_per_s", "generation throughput after C tokens", "tokens / s"),
              ("gen_state_mib", "decoding state after C tokens", "MiB")]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for ax, (key, name, unit) in zip(axes.flat, panels):
        for m in MODELS:
            pts = [(L, res[str(L)][m].get(key)) for L in lengths if res[str(L)][m].get(key) is not None]
            if pts:
                ax.plot([p[0] for p in pts], [max(p[1], 1e-6) for p in pts], marker="o", label=m)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length C" if key.startswith("gen") else "sequence length L")
        ax.set_ylabel(unit)
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return str(path)


def markdown(res: dict[str, Any], lengths: list[int], params: dict[str, int], cross: dict[str, Any],
             title: str) -> str:
    def cell(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = [f"# GPT vs Mamba vs hybrid: efficiency against length ({title})", "",
             "Non-embedding parameters: " + ", ".join(f"{m} {params[m]:,}" for m in MODELS) + ".", "",
             "| L | model | train tok/s | infer ms | train peak MiB | infer peak MiB | gen tok/s (after L) | "
             "prefill s | state MiB |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for length in lengths:
        for m in MODELS:
            r = res[str(length)][m]
            lines.append(f"| {length} | {m} | {cell(r.get('train_tokens_per_s'), ',.0f')} | "
                         f"{cell(r.get('infer_ms'), '.1f')} | {cell(r.get('train_peak_mib'), '.1f')} | "
                         f"{cell(r.get('infer_peak_mib'), '.1f')} | {cell(r.get('gen_tokens_per_s'), '.1f')} | "
                         f"{cell(r.get('gen_prefill_s'), '.2f')} | {cell(r.get('gen_state_mib'), '.3f')} |")
    lines += ["", "Timing noise between identical runs (Mamba A/A, per length): "
              + ", ".join(f"L={L}: train +-{100 * res[str(L)]['noise']['train']:.0f}%, "
                          f"infer +-{100 * res[str(L)]['noise']['infer']:.0f}%" for L in lengths) + ".", "",
              "Crossover (smallest measured length from which Mamba stays better than GPT):", ""]
    lines += [f"- {k}: {('L = ' + str(v)) if v is not None else 'not within the measured lengths'}"
              for k, v in cross.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lengths = sorted(args.lengths)
    models = build_models(max(lengths) + args.gen_tokens)
    params = {m: non_embedding_params(models[m]) for m in MODELS}
    print("non-embedding parameters: " + ", ".join(f"{m} {p:,}" for m, p in params.items()), flush=True)

    res: dict[str, Any] = {}
    for length in lengths:
        g = torch.Generator().manual_seed(length)
        x = torch.randint(0, VOCAB, (1, length), generator=g)
        y = torch.randint(0, VOCAB, (1, length), generator=g)
        row: dict[str, Any] = {m: {} for m in MODELS}
        fns = {m: train_step_fn(models[m], x, y) for m in MODELS}
        fns["mamba (A/A)"] = fns["mamba"]
        train = interleaved(fns, args.repeats)
        fns = {m: infer_fn(models[m], x) for m in MODELS}
        fns["mamba (A/A)"] = fns["mamba"]
        infer = interleaved(fns, args.repeats)
        row["noise"] = {"train": aa_noise(train), "infer": aa_noise(infer)}
        for m in MODELS:
            r = row[m]
            r["train_s"], r["infer_s"] = train[m], infer[m]
            r["train_tokens_per_s"] = length / statistics.median(train[m])
            r["infer_ms"] = 1e3 * statistics.median(infer[m])
            if not args.skip_memory:
                r["train_peak_mib"] = peak_bytes(train_step_fn(models[m], x, y)) / 2**20
                r["infer_peak_mib"] = peak_bytes(infer_fn(models[m], x)) / 2**20
            gens = [generation(models[m], x, args.gen_tokens) for _ in range(args.repeats)]
            r["gen_tokens_per_s"] = statistics.median(gi["tokens_per_s"] for gi in gens)
            r["gen_prefill_s"] = statistics.median(gi["prefill_s"] for gi in gens)
            r["gen_state_mib"] = gens[0]["state_bytes"] / 2**20
        res[str(length)] = row
        print(f"L={length:5d} " + " | ".join(
            f"{m}: train {row[m]['train_tokens_per_s']:,.0f} tok/s, infer {row[m]['infer_ms']:.1f} ms, "
            + (f"peak {row[m]['train_peak_mib']:.0f}/{row[m]['infer_peak_mib']:.0f} MiB, "
               if not args.skip_memory else "")
            + f"gen {row[m]['gen_tokens_per_s']:.0f} tok/s" for m in MODELS)
            + f" | A/A noise train +-{100 * row['noise']['train']:.0f}%", flush=True)

    def better(key: str, higher: bool) -> list[bool]:
        out = []
        for length in lengths:
            a, b = res[str(length)]["mamba"].get(key), res[str(length)]["gpt"].get(key)
            out.append(a is not None and b is not None and (a > b if higher else a < b))
        return out

    cross = {"training throughput": crossover(lengths, better("train_tokens_per_s", True)),
             "inference latency": crossover(lengths, better("infer_ms", False)),
             "generation throughput": crossover(lengths, better("gen_tokens_per_s", True)),
             "decoding state memory": crossover(lengths, better("gen_state_mib", False))}
    if not args.skip_memory:
        cross["training peak memory"] = crossover(lengths, better("train_peak_mib", False))
        cross["inference peak memory"] = crossover(lengths, better("infer_peak_mib", False))
    title = (f"batch 1, d_model 128, CPU {torch.get_num_threads()} thread, torch {torch.__version__}, "
             f"medians of {args.repeats} interleaved repeats (CPU time)")
    md = markdown(res, lengths, params, cross, title)
    print("\n" + md)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    plot_note = plot(res, lengths, RESULTS.with_suffix(".svg"), title)
    RESULTS.with_suffix(".md").write_text(md)
    RESULTS.write_text(json.dumps({
        "what": "GPT vs Mamba vs hybrid (matched non-embedding parameters): training tokens/s, inference latency, "
                "peak memory against L; generation tokens/s and state size against context length",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "repeats": args.repeats, "gen_tokens": args.gen_tokens, "non_embedding_params": params,
        "results": res, "crossover": cross, "plot": plot_note,
        "log2_lengths": [math.log2(L) for L in lengths],
    }, indent=2) + "\n")
    print(f"wrote {RESULTS}, {RESULTS.with_suffix('.md')} and {plot_note}")


if __name__ == "__main__":
    main()
