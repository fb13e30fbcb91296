"""Evidence cards for issue 21 (meta-learning, continual learning, federated learning, NAS) on MNIST-1D.

Each study runs its variants for several seeds through the paradigm's ``run_<x>`` (1 thread per process), keeps
finished runs under benchmarks/results/paradigms/<study>/ (reused unless ``--fresh``), and writes
docs/cards/paradigms-<area>/<study>.md + .json (top-level "command") and an SVG plot: per variant the mean and
95% t-interval over seeds of every declared metric, and the paired difference against the study's baseline.

    PYTHONPATH=src python benchmarks/paradigm_cards.py STUDY [--seeds 0 1 2] [--jobs 1] [--fresh]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "paradigms"
CARDS = ROOT / "docs" / "cards"

# kind -> (module, config class, run function, metric list)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "meta": ("tricklab.paradigms.meta.run", "MetaConfig", "run_meta", "META_METRICS"),
    "continual": ("tricklab.paradigms.continual.run", "ContinualConfig", "run_continual", "CONTINUAL_METRICS"),
    "federated": ("tricklab.paradigms.federated.run", "FederatedConfig", "run_federated", "FEDERATED_METRICS"),
    "nas": ("tricklab.paradigms.nas.run", "NasConfig", "run_nas", "NAS_METRICS"),
    "ofa": ("tricklab.paradigms.nas.ofa_run", "OfaConfig", "run_ofa", "OFA_METRICS"),
    "proxyless": ("tricklab.paradigms.nas.proxyless_run", "ProxylessConfig", "run_proxyless", "PROXYLESS_METRICS"),
}

_META = {"meta_steps": 1000, "eval_every": 500, "eval_episodes": 50, "train_eval_episodes": 100,
         "test_episodes": 600}

_FED = {"rounds": 30, "local_epochs": 2, "lr": 0.1}


def _meta_study(shots: int) -> dict[str, Any]:
    common = dict(_META, shots=shots)
    return {
        "area": "meta", "kind": "meta", "baseline": "maml", "title": f"5-way {shots}-shot MNIST-1D, held-out classes",
        "variants": [("maml", dict(common, method="maml")), ("fomaml", dict(common, method="fomaml")),
                     ("reptile", dict(common, method="reptile", inner_steps=5)),
                     ("protonets", dict(common, method="protonets"))],
    }


STUDIES: dict[str, dict[str, Any]] = {
    "meta-1shot": _meta_study(1),
    "meta-5shot": _meta_study(5),
    "continual-split": {
        "area": "continual", "kind": "continual", "baseline": "finetune",
        "title": "split MNIST-1D (5 tasks of 2 classes, task-incremental)",
        "variants": [(m, {"stream": "split", "method": m}) for m in ("finetune", "ewc", "replay", "progressive")],
    },
    "continual-permuted": {
        "area": "continual", "kind": "continual", "baseline": "finetune",
        "title": "permuted MNIST-1D (5 tasks, one head)",
        "variants": [(m, {"stream": "permuted", "method": m}) for m in ("finetune", "ewc", "replay", "progressive")],
    },
    "federated": {
        "area": "federated", "kind": "federated", "baseline": "fedavg-iid",
        "title": "FedAvg / FedProx on Flower (simulation), MNIST-1D, 10 clients, 30 rounds of 2 local epochs, IID and "
                 "Dirichlet(0.1)",
        "variants": [(name, dict(_FED, engine="flower", **ov)) for name, ov in (
            ("fedavg-iid", {"algorithm": "fedavg", "split": "iid"}),
            ("fedprox-iid", {"algorithm": "fedprox", "split": "iid"}),
            ("fedavg-dir0.1", {"algorithm": "fedavg", "split": "dirichlet", "alpha": 0.1}),
            ("fedprox-dir0.1", {"algorithm": "fedprox", "split": "dirichlet", "alpha": 0.1}),
            ("centralized", {"algorithm": "centralized"}))],
        "notes": ["Engine: Flower 1.42 (`engine=\"flower\"`): Flower's `FedAvg` / `FedProx` strategies (compat API, "
                  "`flwr.server.strategy`) over our clients, run by Flower's simulation engine (`run_simulation`, "
                  "Ray 2.55.1 backend) in one process; `centralized` is our own loop (the same MLP and SGD on all "
                  "4000 signals for rounds x local epochs epochs). FedProx's mu is 0.01. Client batches: a stream of "
                  "their own per (seed, round, client). `train_seconds` includes Flower's start-up (Ray, actors)."],
    },
    "federated-dp": {
        "area": "federated", "kind": "federated", "baseline": "fedavg-iid",
        "title": "FedAvg IID on Flower, 20 rounds of 1 local epoch: Flower's client-level DP (fixed clipping, clip 1) "
                 "at epsilon 1, 3, 8 (delta 1e-5)",
        "variants": [("fedavg-iid", {"algorithm": "fedavg", "split": "iid", "rounds": 20, "engine": "flower"})]
        + [(f"client-dp-eps{e}", {"algorithm": "fedavg", "split": "iid", "rounds": 20, "engine": "flower",
                                  "dp_epsilon": float(e), "dp_level": "client"}) for e in (1, 3, 8)],
        "notes": ["DP kind: every `client-dp-*` number is Flower's **client-level** DP "
                  "(`DifferentialPrivacyClientSideFixedClipping` + `fixedclipping_mod`): each client's update is "
                  "clipped to norm 1, the 10 updates are averaged with equal weights and the server adds "
                  "N(0, (z/10)^2) per coordinate; z is the smallest noise multiplier whose epsilon over the 20 rounds "
                  "(Gaussian mechanism, no sampling amplification, RDP accountant) is the target at delta 1e-5. "
                  "Sample-level DP-SGD (each client's examples) is in "
                  "[federated-sample-dp.md](federated-sample-dp.md)."],
    },
    "federated-dp-100": {
        "area": "federated", "kind": "federated", "baseline": "fedavg-iid",
        "title": "FedAvg IID on Flower with 100 clients of 40 signals, 20 rounds of 1 local epoch: Flower's "
                 "client-level DP (clip 1) at epsilon 1, 3, 8 (delta 1e-5)",
        "variants": [("fedavg-iid", {"algorithm": "fedavg", "split": "iid", "rounds": 20, "clients": 100,
                                     "engine": "flower"})]
        + [(f"client-dp-eps{e}", {"algorithm": "fedavg", "split": "iid", "rounds": 20, "clients": 100,
                                  "engine": "flower", "dp_epsilon": float(e), "dp_level": "client"})
           for e in (1, 3, 8)],
        "notes": ["DP kind: Flower's **client-level** DP as in [federated-dp.md](federated-dp.md), with ten times the "
                  "clients: the server's noise on the mean is N(0, (z/100)^2), a tenth of the 10-client study's."],
    },
    # the sample-level card (DP-SGD in the clients) of the reference engine, kept from commit 03774f4
    "federated-sample-dp": {
        "area": "federated", "kind": "federated", "baseline": "fedavg-iid",
        "title": "FedAvg IID (reference engine), 20 rounds of 1 local epoch, sample-level DP-SGD clients at epsilon "
                 "1, 3, 8 (delta 1e-5)",
        "variants": [("fedavg-iid", {"algorithm": "fedavg", "split": "iid", "rounds": 20, "engine": "reference"})]
        + [(f"dp-eps{e}", {"algorithm": "fedavg", "split": "iid", "rounds": 20, "dp_epsilon": float(e),
                           "engine": "reference", "dp_level": "sample"}) for e in (1, 3, 8)],
    },
    "nas": {
        "area": "nas", "kind": "nas", "baseline": "darts",
        "title": "DARTS (first order) cell vs a random cell of equal cost on MNIST-1D (paired inside each run)",
        "variants": [("darts", {"method": "darts"})],
    },
    "proxyless": {
        "area": "nas", "kind": "proxyless", "baseline": "proxyless",
        "title": "ProxylessNAS cell (binarized paths, latency weight 0.1, CPU lookup table) vs a random cell of "
                 "equal table latency on MNIST-1D (paired inside each run)",
        "variants": [("proxyless", {"latency_weight": 0.1}), ("proxyless-lat0", {"latency_weight": 0.0})],
        "notes": ["`proxyless-lat0`: the same search without the latency term (accuracy only), to separate what the "
                  "latency term does from what binarized path sampling does. Latency: the cell's table latency "
                  "(the sum of its operations' entries in src/tricklab/paradigms/nas/latency_table.json, measured "
                  "on this CPU), the random cell matched to within 10% of it."],
    },
    "ofa": {
        "area": "nas", "kind": "ofa", "baseline": "ofa",
        "title": "once-for-all supernet on MNIST-1D: sub-networks without retraining, latency budget 0.5",
        "variants": [("ofa", {"steps_per_phase": 250})],
    },
}


def _load(kind: str) -> tuple[Any, Any, list[Any]]:
    sys.path.insert(0, str(ROOT / "src"))
    mod_name, cfg_name, fn_name, metrics_name = KINDS[kind]
    mod = importlib.import_module(mod_name)
    return getattr(mod, cfg_name), getattr(mod, fn_name), getattr(mod, metrics_name)


def _run_one(kind: str, overrides: dict[str, Any], seed: int, out: str) -> dict[str, Any]:
    """Worker: one run, its result written atomically to ``out``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cfg_cls, run_fn, _ = _load(kind)
    from tricklab.paradigms.common import write_json

    t0 = time.perf_counter()
    last = [t0]

    def progress(row: dict[str, Any]) -> None:
        if time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            print(f"  [{Path(out).parent.name}/{Path(out).stem}] {row}", flush=True)

    result = run_fn(cfg_cls(threads=1, **overrides), seed=seed, progress=progress)
    data = asdict(result)
    data["wall_seconds_total"] = time.perf_counter() - t0
    write_json(Path(out), data)
    return data


def run_study(study: str, seeds: list[int], jobs: int, fresh: bool, cached: bool = False) -> dict[str, dict[int, Any]]:
    spec = STUDIES[study]
    todo, results = [], {}
    for name, ov in spec["variants"]:
        results[name] = {}
        for seed in seeds:
            path = RESULTS / study / f"{name}-seed{seed}.json"
            if path.is_file() and not fresh:
                saved = json.loads(path.read_text(encoding="utf-8"))
                cfg = saved.get("extras", {}).get("config", {})
                if all(cfg.get(k) == v for k, v in ov.items()):
                    results[name][seed] = saved
                    continue
            if not cached:
                todo.append((name, ov, seed, str(path)))
    print(f"{study}: {len(todo)} run(s) to do", flush=True)
    if todo:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, spec["kind"], ov, seed, out): (name, seed) for name, ov, seed, out in todo}
            for fut in futures:
                name, seed = futures[fut]
                results[name][seed] = fut.result()
                print(f"done {study}/{name} seed {seed}: {results[name][seed]['metrics']}", flush=True)
    return results


def _fmt(x: float | None, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _summarise(study: str, results: dict[str, dict[int, Any]]) -> dict[str, Any]:
    from tricklab.lab import stats

    spec = STUDIES[study]
    _, _, metrics = _load(spec["kind"])
    base = spec["baseline"]
    out: dict[str, Any] = {}
    for name, runs in results.items():
        seeds = sorted(runs)
        row: dict[str, Any] = {"seeds": seeds, "metrics": {}}
        for m in metrics:
            # a diverged run's NaN loss is left out (the card says how many were missing)
            ok = [s for s in seeds if _finite(runs[s]["metrics"].get(m.key))]
            vals = [runs[s]["metrics"][m.key] for s in ok]
            d = stats.describe(vals).to_dict() if vals else {"n": 0, "mean": None, "half_width": None}
            d["missing"] = len(seeds) - len(ok)
            if name != base and m.verdict and base in results and vals:
                common = sorted(set(ok) & {s for s in results[base] if _finite(results[base][s]["metrics"][m.key])})
                p = stats.paired([runs[s]["metrics"][m.key] for s in common],
                                 [results[base][s]["metrics"][m.key] for s in common], m.higher_is_better)
                d["paired_vs_baseline"] = p.to_dict()
            row["metrics"][m.key] = d
        eps = [a for s in seeds for a in runs[s]["extras"].get("episode_accuracies", [])]
        if eps:
            mean = sum(eps) / len(eps)
            sd = math.sqrt(sum((a - mean) ** 2 for a in eps) / (len(eps) - 1))
            row["pooled_episodes"] = {"n": len(eps), "mean": mean, "half_width": 1.96 * sd / math.sqrt(len(eps))}
        out[name] = row
    return out


def _plot(study: str, summary: dict[str, Any], results: dict[str, dict[int, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = STUDIES[study]
    _, _, metrics = _load(spec["kind"])
    key = metrics[0].key
    curves = any(r["history"] for runs in results.values() for r in runs.values())
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(10 if curves else 5, 3.6), squeeze=False)
    names = list(summary)
    means = [summary[n]["metrics"][key]["mean"] for n in names]
    halves = [summary[n]["metrics"][key]["half_width"] or 0.0 for n in names]
    axes[0][0].bar(names, means, yerr=halves, capsize=4, color="#4c72b0")
    axes[0][0].set_ylabel(metrics[0].label)
    axes[0][0].set_title(f"{study}: mean and 95% interval over seeds", fontsize=9)
    axes[0][0].tick_params(axis="x", rotation=30, labelsize=8)
    if curves:
        ax = axes[0][1]
        for n in names:
            runs = results[n]
            rows = [r["history"] for r in runs.values()]
            ykey = next((k for k in ("eval_accuracy", "average_accuracy", "accuracy") if rows and rows[0]
                         and k in rows[0][-1]), None)
            if ykey is None:
                continue
            steps = [r["step"] for r in rows[0] if ykey in r]
            ys = [sum(h[i][ykey] for h in rows) / len(rows) for i in range(len(steps))]
            ax.plot(steps, ys, marker=".", label=n)
        ax.set_xlabel("step / round / task")
        ax.set_title("learning curves (mean over seeds)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _details(results: dict[str, dict[int, Any]]) -> list[str]:
    """Per-variant extras worth reading: the mean accuracy matrix (continual), genotypes (NAS), the chosen
    sub-networks (once-for-all)."""
    lines: list[str] = []
    for name, runs in results.items():
        ex = [r["extras"] for r in runs.values()]
        if ex and "accuracy_matrix" in ex[0]:
            mats = [e["accuracy_matrix"] for e in ex]
            t = len(mats[0])
            lines += ["", f"Accuracy matrix of `{name}` (row i: after task i; column j: task j; mean over "
                      f"{len(mats)} seeds):", "",
                      "| trained through | " + " | ".join(f"task {j}" for j in range(t)) + " |",
                      "|" + "---|" * (t + 1)]
            for i in range(t):
                cells = [sum(m[i][j] for m in mats) / len(mats) for j in range(t)]
                lines.append(f"| task {i} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        if ex and "genotype" in ex[0]:
            lines += ["", f"Cells of `{name}` per seed (searched; random of equal cost):", ""]
            lines += [f"- seed {s}: {r['extras']['genotype']}; random {r['extras']['random_genotype']}"
                      for s, r in sorted(runs.items())]
        if ex and "client_sizes" in ex[0] and all(r["history"] for r in runs.values()):
            rounds = [h["step"] for h in next(iter(runs.values()))["history"]]
            marks = [t for t in rounds if t in (1, 5, 10, 20, 30) or t == rounds[-1]]
            mean = {t: sum(h["accuracy"] for r in runs.values() for h in r["history"] if h["step"] == t) / len(runs)
                    for t in marks}
            lines += ["", f"Test accuracy of `{name}` after round t (mean over {len(runs)} seeds): "
                      + ", ".join(f"t={t}: {mean[t]:.3f}" for t in marks)]
        if ex and "selected" in ex[0]:
            lines += ["", f"Sub-networks chosen by `{name}` per seed:", ""]
            lines += [f"- seed {s}: {r['extras']['selected']}" for s, r in sorted(runs.items())]
    return lines


def write_card(study: str, results: dict[str, dict[int, Any]], command: str) -> Path:
    spec = STUDIES[study]
    _, _, metrics = _load(spec["kind"])
    folder = CARDS / f"paradigms-{spec['area']}"
    summary = _summarise(study, results)
    import torch

    machine = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(), "torch": torch.__version__, "torch_threads": 1,
               "shared": "yes: other helpers' jobs ran on the same 2 cores; timings are indicative only"}
    configs = {n: next(iter(r.values()))["extras"].get("config") for n, r in results.items() if r}
    data = {"command": command, "study": study, "title": spec["title"], "baseline": spec["baseline"],
            "machine": machine, "configs": configs, "summary": summary,
            "extras": {n: {s: {k: v for k, v in r["extras"].items() if k not in ("episode_accuracies", "config")}
                           for s, r in runs.items()} for n, runs in results.items()}}
    lines = [f"# {study}: {spec['title']}", "", f"Command: `{command}`", "",
             f"Baseline for the paired differences: `{spec['baseline']}`. Mean and 95% Student-t interval over "
             "seeds; the paired difference is variant - baseline on the same seeds (verdict from its interval). "
             "The machine was shared with other jobs, so timings carry no verdict.", ""]
    head = "| variant | seeds | " + " | ".join(m.label + (f" ({m.unit})" if m.unit else "") for m in metrics) + " |"
    lines += [head, "|" + "---|" * (len(metrics) + 2)]
    for name, row in summary.items():
        cells = []
        for m in metrics:
            d = row["metrics"][m.key]
            c = _fmt(d["mean"], m.fmt)
            if d["half_width"] is not None:
                c += f" ± {_fmt(d['half_width'], m.fmt)}"
            if d.get("missing"):
                c += f" ({d['missing']} of {len(row['seeds'])} NaN: diverged)"
            p = d.get("paired_vs_baseline")
            if p and p["mean_diff"] is not None:
                ci = (f" [{p['ci_low']:+{m.fmt}}, {p['ci_high']:+{m.fmt}}]" if p["ci_low"] is not None else "")
                c += f" (Δ {p['mean_diff']:+{m.fmt}}{ci}, {p['verdict']})"
            cells.append(c)
        lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    pooled = {n: r["pooled_episodes"] for n, r in summary.items() if "pooled_episodes" in r}
    if pooled:
        lines += ["", "Accuracy pooled over all test episodes of all seeds (95% normal interval over episodes):", ""]
        lines += [f"- {n}: {p['mean']:.4f} ± {p['half_width']:.4f} over {p['n']} episodes" for n, p in pooled.items()]
    lines += _details(results)
    if spec.get("notes"):
        lines += ["", *spec["notes"]]
    lines += ["", f"![{study}]({study}.svg)", "", "Configs: see the JSON next to this card.", ""]
    folder.mkdir(parents=True, exist_ok=True)
    from tricklab.paradigms.common import write_json

    write_json(folder / f"{study}.json", data)
    (folder / f"{study}.md").write_text("\n".join(lines), encoding="utf-8")
    _plot(study, summary, results, folder / f"{study}.svg")
    return folder / f"{study}.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=list(STUDIES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--cached", action="store_true", help="write the card from the finished runs on disk only")
    args = ap.parse_args()
    command = (f"PYTHONPATH=src python benchmarks/paradigm_cards.py {args.study} --seeds "
               f"{' '.join(map(str, args.seeds))} --jobs {args.jobs}")
    print(command, flush=True)
    results = run_study(args.study, args.seeds, args.jobs, args.fresh, args.cached)
    results = {name: runs for name, runs in results.items() if runs}
    print(f"card: {write_card(args.study, results, command)}", flush=True)


if __name__ == "__main__":
    main()
