"""BERT against its variants (RoBERTa-style dynamic masking, ALBERT, DistilBERT) on Shakespeare, several seeds:
masked-LM accuracy on the held-out text and the plays accuracy after fine-tuning, with parameter counts and CPU
time (:mod:`tricklab.paradigms.generative.bert_variants`).

For each seed: BERT is pre-trained first and its weights kept (runs/bert_variants/, not committed); it is the
DistilBERT teacher of the same seed. Finished runs are kept under benchmarks/results/bert_variants/ and reused
unless ``--fresh``. Writes docs/cards/generative-bert-variants/ (README.md, bert_variants.json with the top-level
"command", bert_variants.svg).

    PYTHONPATH=src python benchmarks/bert_variants.py [--seeds 0 1 2] [--steps 300] [--finetune-steps 150]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from tricklab.io import atomic_write_text  # noqa: E402
from tricklab.lab.stats import describe, paired  # noqa: E402
from tricklab.paradigms.generative.bert_variants import VARIANTS, BertVariantConfig, run_bert_variant  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "bert_variants"
WEIGHTS = ROOT / "runs" / "bert_variants"
CARD = ROOT / "docs" / "cards" / "generative-bert-variants"
LABELS = {"bert": "BERT (static masking)", "roberta": "RoBERTa-style (dynamic masking)",
          "albert": "ALBERT (E = {e}, shared block)", "distilbert": "DistilBERT (2 of 4 layers, distilled)"}
KEYS = (("mlm_accuracy", "masked-LM accuracy (held-out)", True, ".4f"),
        ("plays_accuracy", "plays accuracy after fine-tuning", True, ".4f"),
        ("parameters", "parameters (MLM model)", False, ",.0f"),
        ("pretrain_cpu_seconds", "pre-training CPU s", False, ".0f"),
        ("finetune_cpu_seconds", "fine-tuning CPU s", False, ".0f"))


def _ci(values: list[float], fmt: str) -> str:
    d = describe(values)
    if d.ci_low is None:
        return f"{d.mean:{fmt}}"
    return f"{d.mean:{fmt}} [{d.ci_low:{fmt}}, {d.ci_high:{fmt}}]"


def _run(variant: str, seed: int, steps: int, ft_steps: int, fresh: bool) -> dict[str, Any]:
    path = RESULTS / f"{variant}-seed{seed}.json"
    teacher = WEIGHTS / f"bert-seed{seed}" / "model.safetensors"
    cfg = BertVariantConfig(variant=variant, steps=steps, finetune_steps=ft_steps, eval_windows=500,
                            teacher_file=str(teacher) if variant == "distilbert" else None)
    want = asdict(cfg)
    if path.exists() and not fresh:
        data = json.loads(path.read_text())
        if data["extras"]["config"] == want:
            return data
    t0 = time.perf_counter()

    def show(row: dict[str, Any]) -> None:
        extra = f" mlm acc {row['mlm_accuracy']:.3f}" if "mlm_accuracy" in row else ""
        print(f"  {variant} seed {seed} {row['phase']} step {row['step']} ({row['cpu_seconds']:.0f} CPU s){extra}",
              flush=True)

    run_dir = WEIGHTS / f"{variant}-seed{seed}"
    res = run_bert_variant(cfg, seed=seed, run_dir=run_dir, progress=show)
    data = asdict(res)
    data["extras"]["wall_seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data))
    (run_dir / "result.json").unlink(missing_ok=True)
    print(f"{variant} seed {seed}: {res.metrics}", flush=True)
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--finetune-steps", type=int, default=150)
    p.add_argument("--fresh", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    command = (f"PYTHONPATH=src python benchmarks/bert_variants.py --seeds {' '.join(map(str, a.seeds))} "
               f"--steps {a.steps} --finetune-steps {a.finetune_steps}")
    runs: dict[str, dict[int, Any]] = {v: {} for v in VARIANTS}
    for seed in a.seeds:
        for v in VARIANTS:  # bert first: it is the distilbert teacher of this seed
            runs[v][seed] = _run(v, seed, a.steps, a.finetune_steps, a.fresh)
    _card(runs, a.seeds, command)


def _card(runs: dict[str, dict[int, Any]], seeds: list[int], command: str) -> None:
    CARD.mkdir(parents=True, exist_ok=True)
    cfg = runs["bert"][seeds[0]]["extras"]["config"]
    val = {v: {k: [runs[v][s]["metrics"][k] for s in seeds] for k, *_ in KEYS} for v in VARIANTS}
    diffs = {v: {k: asdict(paired(val[v][k], val["bert"][k], hib)) for k, _, hib, _ in KEYS[:2]}
             for v in VARIANTS if v != "bert"}
    summary = {"command": command, "seeds": seeds, "config": cfg,
               "machine": {"cpu": platform.machine(), "python": platform.python_version(),
                           "torch": torch.__version__, "threads": 1,
                           "shared": "yes: other helpers' jobs ran on the same 2 cores (times are process CPU s)"},
               "per_seed": val, "paired_vs_bert": diffs,
               "teacher_mlm_accuracy": [runs["distilbert"][s]["extras"]["teacher_mlm_accuracy"] for s in seeds]}
    atomic_write_text(CARD / "bert_variants.json", json.dumps(summary, indent=1))
    label = dict(LABELS, albert=LABELS["albert"].format(e=cfg["embedding_dim"]))
    ex = runs["bert"][seeds[0]]["extras"]
    lines = ["# Generative card: BERT, RoBERTa-style, ALBERT and DistilBERT on Shakespeare", "",
             f"Command: `{command}`", "",
             "## Setting", "",
             f"- **pre-training**: masked-LM on characters of shakespeare.txt (first 90%), {ex['train_windows']} "
             f"windows of {cfg['block_size']} characters (evenly spaced), mask rate {cfg['mask_prob']} with "
             f"BERT's 80/10/10 rule; {cfg['steps']} AdamW steps of {cfg['batch_size']} windows (about "
             f"{cfg['steps'] * cfg['batch_size'] / ex['train_windows']:.0f} epochs, so the masking policy matters), "
             f"lr {cfg['lr']} decaying linearly to 0, weight decay {cfg['weight_decay']}, dropout {cfg['dropout']}",
             f"- **architecture**: pre-LN encoder, d_model {cfg['d_model']}, {cfg['n_layer']} layers, "
             f"{cfg['n_heads']} heads, d_ff 4 x d_model, tied MLM decoder. ALBERT: embedding size "
             f"E = {cfg['embedding_dim']} projected to {cfg['d_model']}, one block applied {cfg['n_layer']} times "
             "(no sentence-order loss: our BERT has no sentence objective). DistilBERT: "
             f"{cfg['n_layer'] // 2} layers initialised from teacher layers 0 and 2 (plus embeddings and head), "
             f"loss {cfg['alpha_ce']} x T^2 KL (T = {cfg['temperature']}) + {cfg['alpha_mlm']} x MLM + "
             f"{cfg['alpha_cos']} x cosine; its teacher is the BERT run of the same seed (dynamic masking for the "
             "student, as DistilBERT trains). RoBERTa-style: BERT with dynamic masking, same batch and steps "
             "(larger batches would change the budget; no next-sentence loss exists to drop)",
             f"- **masked-LM accuracy**: {ex['eval_windows']} held-out windows (last 10% of the text), one fixed "
             "mask for every model and seed",
             f"- **plays**: the pre-trained encoder + mean pooling + linear head, all weights fine-tuned "
             f"{cfg['finetune_steps']} steps (batch {cfg['batch_size']}, lr {cfg['finetune_lr']}) on which of "
             f"{cfg['num_plays']} plays a {cfg['block_size']}-character passage comes from; test passages from the "
             "held-out last 15% of each play (chance 0.125)",
             f"- **seeds**: {seeds}; 1 thread; budget a fixed number of steps; times are process CPU seconds "
             "(robust to other work, but the machine was shared with other helpers, so treat them as indicative)",
             "", "## Results (mean [95% t-interval over seeds])", "",
             "| model | " + " | ".join(lab for _, lab, _, _ in KEYS) + " |",
             "|---|" + "---|" * len(KEYS)]
    for v in VARIANTS:
        lines.append(f"| {label[v]} | " + " | ".join(_ci(val[v][k], f) for k, _, _, f in KEYS) + " |")
    lines += ["", "Paired differences against BERT (same seed; 95% interval; verdict from the interval):", "",
              "| model | masked-LM accuracy | plays accuracy |", "|---|---|---|"]
    for v in VARIANTS[1:]:
        cells = []
        for k, *_ in KEYS[:2]:
            d = diffs[v][k]
            cells.append(f"{d['mean_diff']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] {d['verdict']}"
                         if d["ci_low"] is not None else f"{d['mean_diff']:+.4f} (n = {d['n']})")
        lines.append(f"| {label[v]} | " + " | ".join(cells) + " |")
    share = {v: statistics.mean(val[v]["parameters"]) / statistics.mean(val["bert"]["parameters"]) for v in VARIANTS}
    cpu = {v: statistics.mean(val[v]["pretrain_cpu_seconds"]) / statistics.mean(val["bert"]["pretrain_cpu_seconds"])
           for v in VARIANTS}
    lines += ["", f"Teacher (BERT) masked-LM accuracy seen by DistilBERT: "
              f"{_ci(summary['teacher_mlm_accuracy'], '.4f')}.", "",
              "## Reading", "",
              "Issue 20 sets no number to reach here: the card compares each variant with our BERT at one small, "
              "equal budget (steps, batch, data). Parameters relative to BERT: "
              + ", ".join(f"{v} {share[v]:.2f}" for v in VARIANTS[1:])
              + "; pre-training CPU time relative to BERT: " + ", ".join(f"{v} {cpu[v]:.2f}" for v in VARIANTS[1:])
              + " (DistilBERT's excludes its teacher's training, which it needs; ALBERT runs as many blocks as "
              "BERT, so sharing saves parameters, not compute). DistilBERT starts from its trained teacher's "
              "layers and then trains as many steps again, so its masked-LM accuracy reflects both trainings. "
              "The budget is minutes of one CPU thread: all "
              "models are far from converged, the plays task sits not far above chance at this passage length "
              "and fine-tuning budget, and with 3 seeds only large differences get a verdict. Read the table as "
              "what each variant does at equal small compute, not as the papers' claims at scale.", "",
              "![accuracy against parameters](bert_variants.svg)", ""]
    atomic_write_text(CARD / "README.md", "\n".join(lines))
    _plot(val, label, seeds)
    print(f"wrote {CARD}")


def _plot(val: dict[str, dict[str, list[float]]], label: dict[str, str], seeds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for j, v in enumerate(VARIANTS):
        for ax, k in zip(axes, ("mlm_accuracy", "plays_accuracy")):
            ax.scatter(val[v]["parameters"], val[v][k], color=f"C{j}", label=label[v])
    for ax, title in zip(axes, ("masked-LM accuracy (held-out)", "plays accuracy after fine-tuning")):
        ax.set_xscale("log")
        ax.set_xlabel("parameters (MLM model)")
        ax.set_ylabel(f"{title}, per seed")
    axes[1].axhline(0.125, color="gray", ls="--", lw=1, label="chance")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(CARD / "bert_variants.svg")
    plt.close(fig)


if __name__ == "__main__":
    main()
