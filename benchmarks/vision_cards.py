"""Evidence cards for issue 15 (vision models, multi-scale training) on Fashion-MNIST, several seeds each.

Studies (each writes docs/cards/vision-<study>/: a markdown card, its JSON with the command that made it, an SVG):

* ``compare``: ResNet, MobileNetV2, Xception, ConvNeXt, ViT, Swin and the CNN-Transformer hybrid, each with the
  model and learning rate of its recipe (recipes/fashion-mnist-<model>.yaml: AdamW, warm-up + cosine, random
  shift of 2 px and horizontal flip, batch 128), at an equal wall-clock training budget per model: accuracy,
  macro-F1, ECE on the 10000 test images; parameters, size, CPU inference latency at batch 1 and 64.
* ``multiscale``: the recipe's ResNet trained at the fixed 28 px against multi-scale training (every batch resized
  to a size drawn from {20, 24, 28, 32}, ``multi_scale``), both evaluated at 16 to 40 px; paired by seed.
* ``best``: the ResNet recipe plus :data:`BEST` (channels_last, label smoothing, test-time flip averaging) on 2
  threads, for the issue's target (>= 94.0% test accuracy within 10 minutes of training on 2 cores, read as at most
  1200 s of process CPU time with 2 threads); the runs go to ``resnet_best-seed<N>.json``.

How the budget is spent: a budget of single-thread CPU seconds is turned into a step budget per run by timing 6
training steps of that model first (after 2 warm-up steps) with the process's CPU clock, so the learning-rate
schedule can decay to zero at the end (a schedule needs the run length), the run is deterministic given its seed,
and other jobs on a shared machine do not shrink the budget (they stretch the wall clock instead; on a dedicated
core the two are the same); the CPU and wall time actually used are reported beside it.
``multiscale`` uses the same step budget for both arms (``--steps``). Every run uses 1 thread (``best``: 2); ``--jobs``
processes (at most 2 on the shared machine) run the seeds; finished runs are kept under
benchmarks/results/vision/<study>/ and reused unless ``--fresh``.

    PYTHONPATH=src python benchmarks/vision_cards.py {compare,multiscale,best} [--seeds 0 1 2] [--jobs 2]
        [--budget SECONDS] [--steps N] [--test-limit N] [--fresh]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# Idle OpenMP threads sleep instead of spinning: a spinning thread burns CPU time that counts in a CPU-time budget
# (time.process_time counts every thread) without doing work, which on a shared machine tripled the CPU time of a
# 2-thread ResNet step (0.37 s against 0.13 s). Must be set before torch loads OpenMP; no effect with 1 thread.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import yaml  # noqa: E402

from tricklab.train.technique import Technique  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "vision"
CARDS = ROOT / "docs" / "cards"
MODELS = ("resnet", "mobilenetv2", "xception", "convnext", "vit", "swin", "hybrid")
TRAIN_SIZES = (20, 24, 28, 32)
EVAL_SIZES = (16, 20, 24, 28, 32, 36, 40)
BATCH = 128
FOLDERS = {"compare": "vision-compare", "multiscale": "vision-multiscale", "best": "vision-best"}
#: The ``best`` study's recipe on top of recipes/fashion-mnist-resnet.yaml: the model arguments added, label
#: smoothing, test-time flip averaging and the thread count (the issue's "10 minutes on 2 cores").
BEST = {"model_args": {"channels_last": True}, "label_smoothing": 0.1, "tta_flip": True, "threads": 2}


def recipe(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "recipes" / f"fashion-mnist-{name}.yaml").read_text(encoding="utf-8"))


def model_args(model_name: str, best: bool = False) -> dict[str, Any]:
    """The model arguments of the recipe, with the ``best`` study's additions."""
    return {**(recipe(model_name)["model"].get("args") or {}), **(BEST["model_args"] if best else {})}


def _parts(model_name: str, seed: int, multi_scale: bool, steps: int,
           best: bool = False) -> tuple[Any, Any, list[Any]]:
    from tricklab.models import build_model
    from tricklab.techniques import LabelSmoothing, LRSchedule, MultiScale, RandomFlip, RandomShift

    r = recipe(model_name)
    torch.manual_seed(seed)
    model = build_model(r["model"]["name"], (1, 28, 28), 10, **model_args(model_name, best))
    opt = torch.optim.AdamW(model.parameters(), lr=r["optimizer"]["lr"],
                            weight_decay=r["optimizer"].get("weight_decay", 0.0))
    # the recipes warm up for one epoch of 10; a short budget warms up for the same 10% of its steps
    techniques: list[Any] = [RandomShift(max_shift=2, seed=seed), RandomFlip(seed=seed),
                             LRSchedule("warmup_cosine", total_steps=steps, warmup_steps=max(1, steps // 10))]
    if multi_scale:
        techniques.append(MultiScale(sizes=list(TRAIN_SIZES), schedule="random", seed=seed))
    if best:
        techniques.append(LabelSmoothing(eps=float(BEST["label_smoothing"])))
    return model, opt, techniques


class CPUBudget(Technique):
    """Stops training once the process has spent ``seconds`` of CPU time (all threads) since ``fit_start``: the
    guard that keeps a run within its CPU budget when the steps calibrated before it turn out slower."""

    name = "cpu_budget"
    reads = frozenset()
    writes = frozenset({"stop"})

    def __init__(self, seconds: float) -> None:
        self.seconds, self.start = float(seconds), 0.0

    def on_fit_start(self, state: Any) -> None:
        self.start = time.process_time()

    def on_after_step(self, state: Any) -> None:
        if time.process_time() - self.start >= self.seconds:
            state.should_stop = True
            state.stop_reason = f"CPU budget of {self.seconds:g} s spent"

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def steps_for(model_name: str, seconds: float, x: torch.Tensor, y: torch.Tensor, best: bool = False,
              timed: int = 6) -> tuple[int, float]:
    """The step budget that spends ``seconds`` of CPU time (all threads) in training: time ``timed`` steps (after
    2 warm-up steps) of a throwaway copy of the model with the process's CPU clock, which other jobs on the
    machine do not inflate (they stretch the wall clock instead). Returns (steps, CPU seconds per step)."""
    import torch.nn.functional as F

    model, opt, _ = _parts(model_name, 12345, False, 100, best)
    model.train()
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(timed + 2):
        idx = torch.randint(0, x.shape[0], (BATCH,), generator=g)
        t0 = time.process_time()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        if i >= 2:
            times.append(time.process_time() - t0)
    per_step = sorted(times)[len(times) // 2]
    return max(20, int(seconds / per_step)), per_step


@torch.no_grad()
def _logits(model: Any, x: torch.Tensor, batch: int = 500) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch]) for i in range(0, x.shape[0], batch)])


def run_one(study: str, model_name: str, multi_scale: bool, seed: int, budget: float | None, steps: int | None,
            test_limit: int | None, out: str) -> dict[str, Any]:
    """Train one model for one seed and measure it; writes ``out`` (JSON) and returns the row."""
    best = study == "best"
    threads = int(BEST["threads"]) if best else 1
    torch.set_num_threads(threads)
    from tricklab.data import InMemoryLoader
    from tricklab.data.datasets import load_fashion_mnist
    from tricklab.data.multiscale import accuracy_at_sizes
    from tricklab.evaluate import inference_latency, model_size_bytes
    from tricklab.evaluate.metrics import classification_metrics
    from tricklab.models import count_parameters
    from tricklab.train import Trainer

    data = load_fashion_mnist()
    x, y = data.x_train, data.y_train
    xt, yt = data.x_test, data.y_test
    if test_limit:
        xt, yt = xt[:test_limit], yt[:test_limit]
    per_step = None
    if steps is None:
        assert budget is not None
        steps, per_step = steps_for(model_name, budget, x, y, best, timed=20 if best else 6)
    model, opt, techniques = _parts(model_name, seed, multi_scale, steps, best)
    if best:
        # the steps were calibrated on 20 steps; if the run turns out slower, it stops at the budget instead
        techniques.append(CPUBudget(float(budget)))  # type: ignore[arg-type]
    trainer = Trainer(model, opt, InMemoryLoader(x, y, BATCH, seed=seed), techniques=techniques, max_steps=steps,
                      log_every=max(1, steps // 40))
    t0, c0 = time.perf_counter(), time.process_time()
    state = trainer.fit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    logits = _logits(model, xt)
    plain = classification_metrics(logits, yt, 10)
    if best and BEST["tta_flip"]:
        # test-time augmentation: average the class probabilities of the image and its mirror image (the
        # training flips images, so both are in-distribution); log of the mean probability as the logits
        probs = (logits.softmax(-1) + _logits(model, xt.flip(-1)).softmax(-1)) / 2
        logits = probs.clamp_min(1e-12).log()
    m = classification_metrics(logits, yt, 10)
    row: dict[str, Any] = {
        "study": study, "model": model_name,
        "model_args": model_args(model_name, best), "best_recipe": BEST if best else None,
        "multi_scale": multi_scale, "seed": seed, "steps": steps,
        "budget_seconds": budget, "calibrated_seconds_per_step": per_step,
        "train_seconds": float(state.train_seconds), "wall_seconds": wall, "cpu_seconds": cpu,
        "test_examples": int(yt.shape[0]), "test_limit": test_limit,
        "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"], "nll": m["nll"],
        "accuracy_plain": plain["accuracy"], "threads": threads, "completed_steps": int(state.step),
        "stop_reason": getattr(state, "stop_reason", None),
        "parameters": count_parameters(model), "model_size_bytes": model_size_bytes(model),
        "curve": [{"step": int(h["step"]), "loss": float(h["train_loss"])} for h in state.history
                  if "train_loss" in h],
    }
    if study == "compare":
        row["latency_b1_ms"] = inference_latency(model, xt[:1], repeats=30, warmup=3)["median_ms"]
        row["latency_b64_ms"] = inference_latency(model, xt[:64], repeats=5, warmup=1)["median_ms"]
    if study == "multiscale":
        row["accuracy_at"] = {str(k): v for k, v in accuracy_at_sizes(model, xt, yt, EVAL_SIZES).items()}
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a killed run leaves no half-written result
    return row


def variants(study: str) -> list[tuple[str, str, bool]]:
    """(variant name, model, multi_scale)."""
    if study == "compare":
        return [(m, m, False) for m in MODELS]
    if study == "multiscale":
        return [("fixed_28", "resnet", False), ("multi_scale", "resnet", True)]
    # "resnet_best": the ResNet with the BEST additions (the runs of the plain recipe, resnet-seed*.json, stay)
    return [("resnet_best", "resnet", False)]


def run_study(study: str, seeds: list[int], jobs: int, budget: float | None, steps: int | None,
              test_limit: int | None, fresh: bool, card_only: bool = False) -> dict[str, dict[int, dict[str, Any]]]:
    folder = RESULTS / study
    todo, results = [], {}
    results = {name: {} for name, _, _ in variants(study)}
    # seed-major order: a study stopped early still has every variant at its first seeds
    for seed in seeds:
        for name, model_name, ms in variants(study):
            path = folder / f"{name}-seed{seed}.json"
            row = json.loads(path.read_text(encoding="utf-8")) if path.is_file() and not fresh else None
            # reuse a finished run only when it was made with the same budget and test set
            # (and the model arguments of the current recipe)
            if row is not None and row.get("budget_seconds") == budget and row.get("test_limit") == test_limit \
                    and (steps is None or row.get("steps") == steps) \
                    and row.get("model_args", {}) == model_args(model_name, study == "best") \
                    and row.get("best_recipe") == (BEST if study == "best" else None):
                results[name][seed] = row
            else:
                todo.append((name, (study, model_name, ms, seed, budget, steps, test_limit, str(path))))
    print(f"[{study}] {len(todo)} run(s) to do, {sum(len(v) for v in results.values())} reused", flush=True)
    if card_only:  # the card from the runs finished so far
        return {name: rows for name, rows in results.items() if rows}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [(name, args, pool.submit(run_one, *args)) for name, args in todo]
        for i, (name, args, fut) in enumerate(futures, 1):
            row = fut.result()
            results[name][args[3]] = row
            print(f"[{study}] {i}/{len(todo)} {name} seed {args[3]}: {row['steps']} steps, "
                  f"{row['train_seconds']:.0f} s, accuracy {row['accuracy']:.4f}", flush=True)
    return results


# ------------------------------------------------------------------------------------------------- cards
def _stats() -> Any:
    from tricklab.lab import stats

    return stats


def _describe(values: list[float]) -> dict[str, Any]:
    d = _stats().describe(values)
    return {"n": d.n, "mean": d.mean, "std": d.std, "ci_low": d.ci_low, "ci_high": d.ci_high}


def _ci(d: dict[str, Any], fmt: str = ".4f", scale: float = 1.0) -> str:
    if d["mean"] is None:
        return "—"
    if d["ci_low"] is None:
        return f"{d['mean'] * scale:{fmt}}"
    return f"{d['mean'] * scale:{fmt}} [{d['ci_low'] * scale:{fmt}}, {d['ci_high'] * scale:{fmt}}]"


def _machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "cores": os.cpu_count(), "threads_per_run": 1,
            "note": "shared machine: other helpers' jobs ran at the same time; timings are rough"}


def command(study: str, args: argparse.Namespace) -> str:
    parts = [f"PYTHONPATH=src python benchmarks/vision_cards.py {study}", "--seeds " + " ".join(map(str, args.seeds)),
             f"--jobs {args.jobs}"]
    if args.budget is not None:
        parts.append(f"--budget {args.budget:g}")
    if args.steps is not None:
        parts.append(f"--steps {args.steps}")
    if args.test_limit:
        parts.append(f"--test-limit {args.test_limit}")
    return " ".join(parts)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "tricklab"  # stable SVG ids: a rerun with the same numbers writes the same file
    return plt


def _strip(rows: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {str(s): {k: v for k, v in r.items() if k != "curve"} for s, r in sorted(rows.items())}


def seeds_text(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """'0, 1, 2' when every variant has the same seeds, else the seeds of each."""
    sets = {name: sorted(rows) for name, rows in results.items()}
    if len({tuple(v) for v in sets.values()}) == 1:
        return ", ".join(map(str, next(iter(sets.values()))))
    return "; ".join(f"{name}: {', '.join(map(str, v))}" for name, v in sets.items())


def cpu_latency(names: list[str], rounds: int = 5) -> dict[str, dict[str, Any]]:
    """CPU time of one forward pass per model at batch 1 and 64 (eval mode, no grad, 1 thread), measured with the
    process's CPU clock so that other jobs on the machine do not inflate it; the models are interleaved within
    each round and the median over rounds is reported with the spread (max - min) / median over rounds as the
    noise between identical measurements. The weights do not matter for the time, so fresh models are timed."""
    torch.set_num_threads(1)
    models = {n: _parts(n, 0, False, 100)[0].eval() for n in names}
    calls = {1: 10, 64: 1}
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in calls} for n in names}
    with torch.inference_mode():
        for n, m in models.items():  # warm-up
            for b in calls:
                m(torch.zeros(b, 1, 28, 28))
        for _ in range(rounds):
            for n, m in models.items():
                for b, k in calls.items():
                    x = torch.zeros(b, 1, 28, 28)
                    c0 = time.process_time()
                    for _ in range(k):
                        m(x)
                    times[n][b].append((time.process_time() - c0) / k * 1e3)
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        row: dict[str, Any] = {}
        for b in calls:
            ts = sorted(times[n][b])
            med = ts[len(ts) // 2]
            row[f"b{b}_ms"], row[f"b{b}_noise"] = med, (ts[-1] - ts[0]) / med if med > 0 else None
        out[n] = row
    return out


def card_compare(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    keys = [("accuracy", ".4f"), ("macro_f1", ".4f"), ("ece", ".4f"), ("train_seconds", ".0f"),
            ("cpu_seconds", ".0f"), ("steps", ".0f"),
            ("latency_b1_ms", ".2f"), ("latency_b64_ms", ".1f")]
    summary: dict[str, Any] = {}
    for name, rows in results.items():
        vals = list(rows.values())
        summary[name] = {k: _describe([float(r[k]) for r in vals]) for k, _ in keys}
        summary[name]["parameters"] = vals[0]["parameters"]
        summary[name]["model_size_bytes"] = vals[0]["model_size_bytes"]
    folder = CARDS / FOLDERS["compare"]
    cmd = command("compare", args)
    best = max(summary, key=lambda n: summary[n]["accuracy"]["mean"])
    latency = cpu_latency(list(results))
    for name in results:
        summary[name]["cpu_latency"] = latency[name]
    noise = max(v for lat in latency.values() for k, v in lat.items() if k.endswith("_noise") and v is not None)
    chance = [f"{n} ({summary[n]['steps']['mean']:.0f} steps)" for n in results
              if summary[n]["accuracy"]["mean"] < 0.2]
    lines = [
        "# Vision models on Fashion-MNIST at an equal training budget",
        "",
        f"Seven models of `tricklab.models.vision`, each with the model and learning rate of its recipe "
        f"(`recipes/fashion-mnist-<model>.yaml`: AdamW, warm-up over 10% of the steps + cosine to 0, random "
        f"shift 2 px, horizontal flip, batch {BATCH}), trained for **{args.budget:g} s of CPU time on 1 thread** "
        f"each. The budget is measured with the process's CPU clock (`time.process_time()`), not the wall clock: "
        f"the machine was **shared** with other helpers' jobs (2 cores, load average 4-13), which stretch the wall "
        f"clock of a run but not its CPU time, so every model gets the same compute whatever else ran; on a "
        f"dedicated core the two clocks agree and this is the equal wall-clock budget the issue asks for. The "
        f"budget becomes a step count by timing 6 steps of the model on the CPU clock first (so the schedule can "
        f"decay to 0 at the end); the CPU time actually spent is in the table. Seeds {seeds_text(results)}, "
        f"{args.jobs} run(s) at a time. Test metrics on all "
        f"{next(iter(next(iter(results.values())).values()))['test_examples']} test images; mean and 95% "
        f"interval over seeds (Student t).",
        "",
        "**A short budget**: the recipes train 10 epochs; the whole study (21 runs, one at a time) had to fit in "
        "about an hour of the shared machine, so the ranking reflects how fast each model learns per second of "
        "one CPU thread, not what it reaches at convergence.",
        "",
        "Recipe fix since the 20 s card: MobileNetV2 and Xception had a stem of stride 1 (their blocks ran at "
        "28 px), 0.68 and 0.90 CPU s per step; in 20 s they made ~25 steps, too few for the BatchNorm running "
        "statistics to follow the weights, and stayed at chance in eval mode (0.17 in eval mode against 0.69 in "
        "train mode after 30 steps). Their recipes now use stem stride 2, as the ResNet recipe does (blocks at "
        "14 px and below, ~3x less CPU per step); learning rate, warm-up and normalization are unchanged, and "
        "every model has the same budget.",
        "",
        "| model | accuracy | macro-F1 | ECE | parameters | size (KiB) | steps | CPU s | wall s | CPU ms b=1 "
        "| CPU ms b=64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in results:
        s = summary[name]
        lines.append(f"| {name} | {_ci(s['accuracy'])} | {_ci(s['macro_f1'])} | {_ci(s['ece'])} | "
                     f"{s['parameters']:,} | {s['model_size_bytes'] / 1024:,.0f} | {s['steps']['mean']:.0f} | "
                     f"{s['cpu_seconds']['mean']:.0f} | {s['train_seconds']['mean']:.0f} | "
                     f"{latency[name]['b1_ms']:.2f} | {latency[name]['b64_ms']:.1f} |")
    lines += [
        "",
        f"Most accurate at this budget: **{best}** ({summary[best]['accuracy']['mean']:.4f})."
        + (f" Still at chance level (10 classes) after their share of the budget: {', '.join(chance)}: at this "
           "budget they are not compared on what they can reach." if chance else ""),
        "",
        "Latency: CPU time of one forward pass (eval mode, 1 thread) read from the process's CPU clock, so other "
        "jobs do not inflate it; the models were interleaved over 5 rounds (10 calls at batch 1, 1 call at batch "
        f"64 each) and the median is shown; the largest spread between rounds was {noise:.0%} of the median, so "
        "differences smaller than that are noise. Wall-clock medians taken after each run (inflated by other "
        "jobs) are in the JSON (`latency_b1_ms`, `latency_b64_ms`). Throughput, MACs and wall-clock latency, "
        "with the noise between two identical models: [the latency card](../vision-latency/README.md) "
        "(`benchmarks/vision_latency.py`).",
        "",
        "![accuracy against latency and the training curves](compare.svg)",
        "",
        f"Command: `{cmd}`",
        "",
    ]
    _write(folder / "README.md", "\n".join(lines))
    data = {"command": cmd, "study": "compare", "budget_seconds": args.budget, "seeds": args.seeds,
            "machine": _machine(), "summary": summary,
            "runs": {name: _strip(rows) for name, rows in results.items()}}
    _write(folder / "compare.json", json.dumps(data, indent=1) + "\n")
    plot_compare(results, summary, folder / "compare.svg")


def plot_compare(results: dict[str, dict[int, dict[str, Any]]], summary: dict[str, Any], path: Path) -> None:
    plt = _plt()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, name in enumerate(results):
        s = summary[name]
        c = f"C{i}"
        lat = s["cpu_latency"]["b64_ms"] / 64
        acc = s["accuracy"]
        err = None if acc["ci_low"] is None else [[acc["mean"] - acc["ci_low"]], [acc["ci_high"] - acc["mean"]]]
        ax.errorbar([lat], [acc["mean"]], yerr=err, fmt="o", color=c, capsize=3, label=name)
        for r in results[name].values():
            cur = r["curve"]
            bx.plot([p["step"] / max(1, r["steps"]) for p in cur], [p["loss"] for p in cur], color=c, alpha=0.6,
                    lw=1, label=name if r is next(iter(results[name].values())) else None)
    ax.set_xscale("log")
    ax.set_xlabel("CPU time per image at batch 64 (ms, 1 thread)")
    ax.set_ylabel("test accuracy")
    ax.set_title("accuracy against latency (mean, 95% interval)")
    ax.legend(fontsize=8)
    bx.set_xlabel("fraction of the run")
    bx.set_ylabel("training loss")
    bx.set_title("training curves (each seed)")
    bx.set_yscale("log")
    bx.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)


def card_multiscale(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    stats = _stats()
    seeds = sorted(set(results["fixed_28"]) & set(results["multi_scale"]))  # paired: the seeds both arms have
    results = {name: {s: rows[s] for s in seeds} for name, rows in results.items()}
    per_size: dict[str, Any] = {}
    for size in EVAL_SIZES:
        a = [results["multi_scale"][s]["accuracy_at"][str(size)] for s in seeds]
        b = [results["fixed_28"][s]["accuracy_at"][str(size)] for s in seeds]
        p = stats.paired(a, b, higher_is_better=True)
        per_size[str(size)] = {"multi_scale": _describe(a), "fixed_28": _describe(b),
                               "difference": {"mean": p.mean_diff, "ci_low": p.ci_low, "ci_high": p.ci_high,
                                              "p_value": p.p_value, "verdict": p.verdict}}
    folder = CARDS / FOLDERS["multiscale"]
    cmd = command("multiscale", args)
    r0 = next(iter(results["fixed_28"].values()))
    helps = [s for s, d in per_size.items() if d["difference"]["verdict"] == "helps"]
    hurts = [s for s, d in per_size.items() if d["difference"]["verdict"] == "hurts"]
    lines = [
        "# Multi-scale training against fixed-scale training (Fashion-MNIST, ResNet)",
        "",
        f"The ResNet of `recipes/fashion-mnist-resnet.yaml` (AdamW, warm-up + cosine, random shift 2 px, "
        f"horizontal flip, batch {BATCH}) for **{r0['steps']} steps** per run "
        f"({r0['steps'] * BATCH / 60000:.1f} epochs), trained at the native 28 px (`fixed_28`) or with "
        f"`multi_scale` (each batch resized to a size drawn from {{{', '.join(map(str, TRAIN_SIZES))}}}), then "
        f"evaluated on {r0['test_examples']} test images resized (bilinear, antialiased when shrinking) to each "
        f"size. {len(seeds)} seeds ({', '.join(map(str, seeds))}), paired by seed; mean and 95% interval "
        "(Student t). A **reduced budget** (the recipe trains 10 epochs): the shared machine did not allow more.",
        "",
        "| eval size (px) | fixed 28 px | multi-scale | difference (multi − fixed) | verdict |",
        "|---|---|---|---|---|",
    ]
    for size, d in per_size.items():
        diff = d["difference"]
        dtxt = "—" if diff["ci_low"] is None else \
            f"{diff['mean']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}]"
        lines.append(f"| {size} | {_ci(d['fixed_28'])} | {_ci(d['multi_scale'])} | {dtxt} | {diff['verdict']} |")
    # runs made before the script recorded CPU time report their wall-clock training time instead
    clock = "cpu_seconds" if all("cpu_seconds" in r for rows in results.values() for r in rows.values()) \
        else "train_seconds"
    tr = {n: _describe([r[clock] for r in rows.values()]) for n, rows in results.items()}
    lines += [
        "",
        "Verdict (95% interval of the paired difference excludes 0): multi-scale training "
        + (f"helps at {', '.join(helps)} px" if helps else "helps at no size")
        + (f", hurts at {', '.join(hurts)} px" if hurts else ", hurts at no size")
        + f"; no clear effect elsewhere with {len(seeds)} seeds.",
        f"Training {'CPU time (1 thread)' if clock == 'cpu_seconds' else 'wall-clock time (shared machine)'}: "
        f"fixed {_ci(tr['fixed_28'], '.0f')} s, multi-scale "
        f"{_ci(tr['multi_scale'], '.0f')} s for the same steps.",
        "",
        "![accuracy against evaluation resolution](multiscale.svg)",
        "",
        f"Command: `{cmd}`",
        "",
    ]
    _write(folder / "multi_scale.md", "\n".join(lines))
    data = {"command": cmd, "study": "multiscale", "steps": r0["steps"], "train_sizes": list(TRAIN_SIZES),
            "eval_sizes": list(EVAL_SIZES), "seeds": seeds, "machine": _machine(), "per_size": per_size,
            "train_time": {"clock": clock, **tr}, "runs": {name: _strip(rows) for name, rows in results.items()}}
    _write(folder / "multi_scale.json", json.dumps(data, indent=1) + "\n")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, name in enumerate(("fixed_28", "multi_scale")):
        m = [per_size[str(s)][name]["mean"] for s in EVAL_SIZES]
        lo = [per_size[str(s)][name]["ci_low"] for s in EVAL_SIZES]
        hi = [per_size[str(s)][name]["ci_high"] for s in EVAL_SIZES]
        ax.plot(EVAL_SIZES, m, "o-", color=f"C{i}", label=name.replace("_", " "))
        if None not in lo:
            ax.fill_between(EVAL_SIZES, lo, hi, color=f"C{i}", alpha=0.2)
    ax.axvspan(min(TRAIN_SIZES), max(TRAIN_SIZES), color="0.9", zorder=0, label="multi-scale training sizes")
    ax.axvline(28, color="0.5", ls=":", lw=1)
    ax.set_xlabel("evaluation size (px)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Fashion-MNIST, ResNet: accuracy at each resolution (95% interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "multiscale.svg", format="svg", metadata={"Date": None})
    plt.close(fig)


def card_best(results: dict[str, dict[int, dict[str, Any]]], args: argparse.Namespace) -> None:
    rows = results["resnet_best"]
    acc = _describe([r["accuracy"] for r in rows.values()])
    plain = _describe([r.get("accuracy_plain", r["accuracy"]) for r in rows.values()])
    cpu = _describe([r["cpu_seconds"] for r in rows.values()])
    wall = _describe([r["wall_seconds"] for r in rows.values()])
    budget = float(args.budget)
    target_cpu = 1200.0  # 10 minutes x 2 cores
    within = all(r["cpu_seconds"] <= target_cpu * 1.01 for r in rows.values())  # 1%: the last step's overshoot
    met = acc["mean"] >= 0.94 and within
    folder = CARDS / FOLDERS["best"]
    cmd = command("best", args)
    r0 = next(iter(rows.values()))
    threads = r0.get("threads", 1)
    extra = ", ".join(f"{k}={v}" for k, v in BEST["model_args"].items())
    lines = [
        "# The best Fashion-MNIST recipe within 10 minutes of training",
        "",
        "Target (issue 15): >= 94.0% test accuracy in <= 10 minutes of training on 2 cores, read here as **at most "
        f"{target_cpu:g} s of process CPU time with {threads} threads** (`time.process_time()`, which counts both "
        "threads; 10 minutes x 2 cores). "
        + (f"**This run had a budget of {budget:g} CPU s only**: a run of the full {target_cpu:g} s did not fit "
           "in the time the shared machine left (at load 10-12 on 2 cores the 2 threads got about 0.27 cores, "
           "74 minutes of wall clock for 1200 CPU s). " if budget < target_cpu else "")
        + f"Machine: {args.machine_note}. Idle OpenMP threads sleep (`OMP_WAIT_POLICY=PASSIVE`) so that "
        "waiting does not count as work. **By wall clock** the runs took "
        f"{wall['mean'] / 60:.1f} minutes on average: the two threads kept {cpu['mean'] / wall['mean']:.2f} cores "
        "busy, so "
        + ("the wall-clock reading of the target is not met either." if wall["mean"] > 600 else
           "the wall-clock reading of the target holds too."),
        "",
        f"Recipe: `recipes/fashion-mnist-resnet.yaml` (ResNet widths 32/64/128, one basic block per stage, stem "
        f"stride 2; AdamW lr 2e-3, weight decay 0.05; warm-up over 10% of the steps then cosine to 0; random shift "
        f"<= 2 px and horizontal flip; batch {BATCH}) plus {extra}, label smoothing "
        f"{BEST['label_smoothing']}, test-time flip averaging (mean class probability of the image and its mirror). "
        f"The step count is the CPU budget divided by the CPU time of 20 timed steps; a guard stops the run if "
        f"the budget is spent earlier. {len(rows)} seed(s); all 10000 test images.",
        "",
        "| seed | steps | epochs | CPU s | wall s | accuracy (flip TTA) | accuracy (plain) | macro-F1 | ECE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s, r in sorted(rows.items()):
        done = r.get("completed_steps", r["steps"])
        lines.append(f"| {s} | {done} | {done * BATCH / 60000:.1f} | {r['cpu_seconds']:.0f} | "
                     f"{r['wall_seconds']:.0f} | {r['accuracy']:.4f} | {r.get('accuracy_plain', r['accuracy']):.4f} "
                     f"| {r['macro_f1']:.4f} | {r['ece']:.4f} |")
    verdict = "MET" if met else "MISSED"
    lines += [
        "",
        f"Result: **{verdict}**: test accuracy {_ci(acc)} (mean [95% interval] over {len(rows)} seed(s); "
        f"{_ci(plain)} without the test-time flip) in {_ci(cpu, '.0f')} s of CPU time with {threads} threads "
        f"(wall clock {_ci(wall, '.0f')} s)"
        + ("." if met else f"; the target is 0.9400, {0.94 - acc['mean']:.4f} short"
           + (f" at {budget:g} of the {target_cpu:g} CPU s allowed; the full budget was not run." if
              budget < target_cpu else "."))
        + (" (Fewer than 3 seeds: the run time on the shared machine allowed no more.)" if len(rows) < 3 else ""),
        "",
        "Before this recipe: the same ResNet without channels_last, label smoothing and flip averaging, 600 s on "
        "1 thread (5335-5793 steps, 11-12 epochs), reached 0.9276 [0.9259, 0.9293] over 3 seeds "
        "(`benchmarks/results/vision/best/resnet-seed*.json`), with ECE 0.005-0.008; label smoothing leaves the "
        "predictions underconfident, hence the higher ECE here.",
        "",
        "![training curve](best.svg)",
        "",
        f"Command (a quiet machine reproduces the wall-clock reading): `{cmd}`",
        "",
    ]
    _write(folder / "README.md", "\n".join(lines))
    data = {"command": cmd, "study": "best", "budget_cpu_seconds": budget,
            "target": {"accuracy": 0.94, "cpu_seconds": target_cpu,
                                                        "threads": threads},
            "recipe": BEST, "met": met, "accuracy": acc, "accuracy_plain": plain, "cpu_seconds": cpu,
            "wall_seconds": wall, "machine": {**_machine(), "threads_per_run": threads},
            "runs": {"resnet_best": _strip(rows)}}
    _write(folder / "best.json", json.dumps(data, indent=1) + "\n")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for s, r in sorted(rows.items()):
        ax.plot([p["step"] for p in r["curve"]], [p["loss"] for p in r["curve"]],
                label=f"seed {s}: {r['accuracy']:.4f}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (label-smoothed)")
    ax.set_title(f"ResNet, {budget:g} CPU s on {threads} threads: test accuracy {acc['mean']:.4f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "best.svg", format="svg", metadata={"Date": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", choices=("compare", "multiscale", "best"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--budget", type=float, default=None, help="training seconds per run (compare, best)")
    ap.add_argument("--steps", type=int, default=None, help="training steps per run (multiscale)")
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test images")
    ap.add_argument("--fresh", action="store_true", help="rerun finished runs")
    ap.add_argument("--card-only", action="store_true", help="write the card from the runs finished so far")
    ap.add_argument("--machine-note", default="shared with other helpers' jobs (load average 4-13 on 2 cores), so "
                    "wall-clock time was stretched; the CPU-time budget does not depend on the other jobs",
                    help="what else ran on the machine meanwhile (the best card's Machine sentence)")
    args = ap.parse_args(argv)
    if args.study == "multiscale" and args.steps is None:
        ap.error("multiscale needs --steps (both arms get the same step budget)")
    if args.study != "multiscale" and args.budget is None:
        ap.error(f"{args.study} needs --budget SECONDS")
    if args.study != "multiscale":
        args.steps = None
    if args.jobs > 2:
        print("note: the shared machine allows at most 2 processes at once", file=sys.stderr)
    results = run_study(args.study, args.seeds, args.jobs, args.budget, args.steps, args.test_limit, args.fresh,
                        args.card_only)
    {"compare": card_compare, "multiscale": card_multiscale, "best": card_best}[args.study](results, args)
    print(f"card written under docs/cards/{FOLDERS[args.study]}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
