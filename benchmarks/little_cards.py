"""Evidence cards for issue 19 (learning from little labelled data), several seeds each, 1 thread per run.

Studies (each writes docs/cards/little-<study>-<dataset>/: card.md, card.json with the top-level "command",
and metrics.svg):

* ``selfsup``: SimCLR, MoCo v2 and BYOL pretraining without labels, scored by a linear probe and k-NN on the
  labelled training set, against a random-init backbone (the baseline of every paired difference) and a
  supervised encoder (the upper bound). ``tricklab.paradigms.selfsup.run.run_selfsup``.
* ``semisup``: 10 labels per class; pseudo-labelling, mean teacher and FixMatch against labelled-only training
  (the baseline). ``tricklab.paradigms.semisup.run.run_semisup``.
* ``teacher``: why the mean teacher does not help where the Pi-model does: the Pi-model with and without the
  gradient through its second pass, the mean teacher with EMA decay 0.99, 0.9 and 0.5, against labelled-only
  training and against each other.
* ``fewshot``: 5-way one-shot on unseen classes with a siamese network, and ESZSL zero-shot, each against its
  reference in the same run (untrained encoder, raw inputs, chance). ``tricklab.paradigms.fewshot.run``.
* ``greedy``: greedy layer-wise pretraining (autoencoder, denoising autoencoder, RBM) against random init of a deep
  sigmoid network at equal fine-tuning budget. ``tricklab.paradigms.pretrain.run``.
* ``dann``: DANN and self-training against source-only training on the mnist1d-noisy domain pair.
  ``tricklab.paradigms.domain.run``.
* ``transfer``: a backbone pretrained on 5 classes transferred to the other 5 with 10 labels per class: linear
  probe, fine-tuning, adapters and LoRA against training from scratch, with trained-parameter counts.
  ``tricklab.transfer.run_transfer``.

Finished runs are kept under benchmarks/results/little/<study>-<dataset>/ and reused unless ``--fresh``.

    PYTHONPATH=src python benchmarks/little_cards.py {selfsup,semisup,teacher,fewshot,greedy,dann,transfer}
        [--dataset mnist1d] [--seeds 0 1 2] [--steps N] [--jobs 1] [--fresh] [--machine-note TEXT]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
RESULTS = ROOT / "benchmarks" / "results" / "little"
CARDS = ROOT / "docs" / "cards"

#: What the card says about the machine's load unless ``--machine-note`` says otherwise (the cards of stop 26).
SHARED_NOTE = "yes: other helpers ran on the same 2 cores; timings are indicative only"

STUDIES: dict[str, dict[str, Any]] = {
    "selfsup": {
        "module": "tricklab.paradigms.selfsup.run", "run": "run_selfsup", "config": "SelfSupConfig",
        "metrics": "SELFSUP_METRICS", "baseline": "random", "default_steps": 800,
        "overrides_by_dataset": {"fashion-mnist": {"width": 16, "batch_size": 128, "queue_size": 1024,
                                                   "train_limit": 10000, "eval_every": 1000}},
        "variants": [("random", {"method": "random"}), ("simclr", {"method": "simclr"}),
                     ("moco", {"method": "moco"}), ("byol", {"method": "byol"}),
                     ("supervised", {"method": "supervised"})],
        "title": "Self-supervised pretraining: linear probe and k-NN accuracy",
        "setting": "encoder: 3 Conv-BN-ReLU blocks + Linear(128) (tricklab.transfer.backbones); pretraining on the "
                   "training inputs without labels, AdamW lr 2e-3, batch 256, two strong views per example "
                   "(tricklab.data.views); probe: logistic regression on frozen standardised features of all "
                   "labelled training examples (500 Adam steps), k-NN with k=20 (cosine); 'random' = the same "
                   "encoder untrained; 'supervised' = the encoder trained with labels for the same steps "
                   "(cross-entropy, weak views), probed the same way",
    },
    "semisup": {
        "module": "tricklab.paradigms.semisup.run", "run": "run_semisup", "config": "SemiSupConfig",
        "metrics": "SEMISUP_METRICS", "baseline": "labelled_only", "default_steps": 800,
        "overrides_by_dataset": {"fashion-mnist": {"width": 16, "train_limit": 20000, "eval_every": 1000}},
        "variants": [("labelled_only", {"method": "labelled_only"}), ("pseudo_label", {"method": "pseudo_label"}),
                     ("pi_model", {"method": "pi_model"}), ("mean_teacher", {"method": "mean_teacher"}),
                     ("fixmatch", {"method": "fixmatch"})],
        "title": "Semi-supervised learning with 10 labels per class",
        "setting": "10 labelled examples per class (stratified, drawn with the run's seed), the rest of the "
                   "training inputs unlabelled; encoder of tricklab.transfer.backbones + linear head, trained by the "
                   "Trainer (tricklab.paradigms.semisup.run) with AdamW lr 2e-3, weight decay 5e-4, batches of 16 "
                   "labelled + 112 unlabelled examples (mu 7), random_shift (1/8) on every batch; pseudo_label: "
                   "threshold 0.95, weight 1 ramped over the first 30% of steps; pi_model: a second pass on "
                   "another weak view, weight 10 ramped (sigmoid) over 30%, gradient through both passes; "
                   "mean_teacher: weight 10 ramped (sigmoid) over 30%, EMA decay 0.99; fixmatch: threshold 0.95, "
                   "lambda_u 1. test_acc is on the full test set; pseudo_label_acc and mask_rate are measured at "
                   "the end on the unlabelled "
                   "training examples (confidence >= 0.95)",
    },
    "teacher": {
        "module": "tricklab.paradigms.semisup.run", "run": "run_semisup", "config": "SemiSupConfig",
        "metrics": "SEMISUP_METRICS", "baseline": "labelled_only", "default_steps": 800,
        "variants": [("labelled_only", {"method": "labelled_only"}), ("pi_model", {"method": "pi_model"}),
                     ("pi_model_stopgrad", {"method": "pi_model", "pi_stop_gradient": True}),
                     ("pi_model_stopgrad_weight_20", {"method": "pi_model", "pi_stop_gradient": True,
                                                      "mt_weight": 20.0}),
                     ("mean_teacher", {"method": "mean_teacher"}),
                     ("mean_teacher_decay_0.9", {"method": "mean_teacher", "mt_decay": 0.9}),
                     ("mean_teacher_decay_0.5", {"method": "mean_teacher", "mt_decay": 0.5})],
        "pairs": [("pi_model_stopgrad", "pi_model"), ("pi_model_stopgrad_weight_20", "pi_model_stopgrad"),
                  ("mean_teacher", "pi_model_stopgrad"),
                  ("mean_teacher_decay_0.9", "mean_teacher"), ("mean_teacher_decay_0.5", "mean_teacher")],
        "title": "Why the mean teacher does not help where the Pi-model does: the gradient through the second pass "
                 "and the teacher's lag",
        "setting": "the semisup study's setting (10 labels per class, batches of 16 labelled + 112 unlabelled, "
                   "consistency weight 10 ramped (sigmoid) over 30% of steps, the same weak views): pi_model = "
                   "gradient through both passes (Laine & Aila's Algorithm 1); pi_model_stopgrad = the same with "
                   "the second pass a constant target (a mean teacher whose teacher is the current student, decay "
                   "0), at weight 10 and 20 (a constant target drops one of the two gradient paths of the term); "
                   "mean_teacher with EMA decay 0.99 (the semisup card), 0.9 and 0.5 (a teacher that lags "
                   "about 100, 10 and 2 steps behind)",
    },
    "fewshot": {
        "module": "tricklab.paradigms.fewshot.run", "run": "run_fewshot", "config": "FewShotConfig",
        "metrics": "FEWSHOT_METRICS", "baseline": "siamese", "default_steps": 600,
        "variants": [("siamese", {})],
        # 40 classes made by code (Fashion-MNIST x 4 rotations), split by garment: 20 training classes (5 garments
        # in every orientation) and 20 unseen ones, so 20-way one-shot is possible
        # (one trained network per seed scored 5-way and 20-way; width 16 keeps the image runs short on the CPU)
        "variants_by_dataset": {
            "fashion-mnist-rot40": [("siamese", {"n_way": 5, "n_way_wide": 20, "num_train_classes": 20, "width": 16})],
            "fashion-mnist": [("siamese", {"width": 16})]},
        "setting_by_dataset": {"fashion-mnist-rot40": (
            "fashion-mnist-rot40 (tricklab.data.datasets.fashion_rotations: every Fashion-MNIST image turned by a "
            "seeded random multiple of 90 degrees, class = garment + 10 x quarter turns, 40 classes); classes split "
            "by garment (split_seed 0): 5 garments x 4 orientations = 20 training classes, the other 5 garments x 4 "
            "= 20 unseen classes, so no episode holds a garment seen in training in any orientation; a siamese "
            "network (image encoder of tricklab.transfer.backbones, width 16, L2-normalised 64-d embedding) trained "
            "with the contrastive loss (margin 1) on 128 pairs per step (half same-class) from the training classes "
            "of the training set; the same trained network scored on 1000 5-way and 1000 20-way 1-shot episodes "
            "(1 query per class; 'wide_' metrics are the 20-way ones) from the unseen classes of the test set, "
            "nearest support by cosine (chance 1/5 and 1/20); the same episodes scored with the untrained encoder and "
            "the raw pixels; zero-shot: ESZSL (gamma = lambda = 1, a bias attribute) on the siamese features of the "
            "training classes, attributes = the garment table of tricklab.paradigms.fewshot.zeroshot (12) + a "
            "one-hot of the orientation (4), predicting among the 20 unseen classes (chance 0.05)"),
            "fashion-mnist": (
            "Fashion-MNIST classes split once (split_seed 0) into 5 training classes and 5 unseen ones; a siamese "
            "network (image encoder of tricklab.transfer.backbones, width 16, L2-normalised 64-d embedding) trained "
            "with the contrastive loss (margin 1) on 128 pairs per step (half same-class) from the training classes "
            "of the training set; 1000 5-way 1-shot episodes (1 query per class) from the unseen classes of the test "
            "set, nearest support by cosine; the same episodes scored with the untrained encoder and the raw pixels; "
            "zero-shot: ESZSL (gamma = lambda = 1, a bias attribute) fitted on the siamese features of the training "
            "classes with the code-made garment attribute table (tricklab.paradigms.fewshot.zeroshot, 12 binary "
            "attributes), predicting among the 5 unseen classes (chance 0.2)")},
        "within": [("oneshot_acc", "oneshot_random_acc"), ("oneshot_acc", "oneshot_raw_acc"),
                   ("wide_oneshot_acc", "wide_oneshot_random_acc"), ("wide_oneshot_acc", "wide_oneshot_raw_acc"),
                   ("zeroshot_acc", "zeroshot_chance")],
        "title": "N-way one-shot and zero-shot accuracy on classes unseen in training",
        "setting": "classes split once (split_seed 0) into 5 training classes and 5 unseen ones; a siamese network "
                   "(encoder of tricklab.transfer.backbones, L2-normalised 64-d embedding) trained with the "
                   "contrastive loss (margin 1) on 128 pairs per step (half same-class) from the training classes "
                   "of the training set; 1000 5-way 1-shot episodes (1 query per class) from the unseen classes of "
                   "the test set, nearest support by cosine; the same episodes scored with the untrained encoder and "
                   "with the raw inputs; zero-shot: ESZSL (gamma = lambda = 1, a bias attribute) fitted on the "
                   "siamese features of the training classes with the MNIST-1D digit templates as attributes, "
                   "predicting among the 5 unseen classes (chance 0.2)",
    },
    "greedy": {
        "module": "tricklab.paradigms.pretrain.run", "run": "run_greedy", "config": "GreedyConfig",
        "metrics": "GREEDY_METRICS", "baseline": "random", "default_steps": 2000,
        "setting_by_dataset": {"fashion-mnist": (
            "a 784-100-100-100-100-10 sigmoid MLP on Fashion-MNIST pixels scaled to [0, 1]; pretraining 1000 steps "
            "per layer (batch 64; autoencoders Adam 1e-3 with cross-entropy reconstruction, denoising: 25% of inputs "
            "zeroed; RBM: CD-1, lr 0.05), each layer on the frozen output of the ones below; then fine-tuning of the "
            "whole network with SGD (lr 0.1, momentum 0.9, batch 100) for the given steps on all 60,000 labelled "
            "training examples; scored on the 10,000 test images")},
        "variants": [("random", {"method": "random"}), ("autoencoder", {"method": "autoencoder"}),
                     ("denoising", {"method": "denoising"}), ("rbm", {"method": "rbm"})],
        "title": "Greedy layer-wise pretraining of a deep sigmoid network",
        "setting": "a 40-100-100-100-100-10 sigmoid MLP on MNIST-1D scaled to [0, 1]; pretraining 1000 steps per "
                   "layer (batch 64; autoencoders Adam 1e-3 with cross-entropy reconstruction, denoising: 25% of "
                   "inputs zeroed; RBM: CD-1, lr 0.05), each layer on the frozen output of the ones below; then "
                   "fine-tuning of the whole network with SGD (lr 0.1, momentum 0.9, batch 100) for the given steps "
                   "on all 4000 labelled examples",
    },
    "dann": {
        "module": "tricklab.paradigms.domain.run", "run": "run_dann", "config": "DannConfig",
        "metrics": "DANN_METRICS", "baseline": "source_only", "default_steps": 1000,
        "overrides_by_dataset": {"fashion-mnist": {"pair": "fashion-mnist-inverted", "width": 16,
                                                   "eval_every": 1000}},
        "variants": [("source_only", {"method": "source_only"}), ("dann", {"method": "dann"}),
                     ("self_training", {"method": "self_training"})],
        "title": "Domain adaptation (DANN, self-training) against source-only on a shifted domain made by code",
        "setting_by_dataset": {"fashion-mnist": (
            "domain pair fashion-mnist-inverted (tricklab.data.domains: source = the first 30,000 Fashion-MNIST "
            "training images; target = the other 30,000 with inverted intensities 1 - x, without labels; target test "
            "= the inverted test set); image encoder of tricklab.transfer.backbones + linear head, AdamW 2e-3, "
            "batches of 64 source (labelled) + 64 target (unlabelled) examples; DANN: domain classifier (128-64-1) "
            "behind a gradient reversal layer with lambda_p = 2/(1+exp(-10 p)) - 1; self_training: cross-entropy of "
            "the target batch's confident (>= 0.95) pseudo-labels added with a weight ramped 0 -> 1 over the first "
            "30% of steps; scored on the target and source test sets")},
        "setting": "domain pair mnist1d-noisy (tricklab.data.domains: target generated with seed 7, correlated noise "
                   "0.4, i.i.d. noise 0.05, scaled by 0.75); encoder of tricklab.transfer.backbones + linear head, "
                   "AdamW 2e-3, batches of 64 source (labelled) + 64 target (unlabelled) examples; DANN: domain "
                   "classifier (128-64-1) behind a gradient reversal layer with lambda_p = 2/(1+exp(-10 p)) - 1; "
                   "self_training: cross-entropy of the target batch's confident (>= 0.95) pseudo-labels added "
                   "with a weight ramped 0 -> 1 over the first 30% of steps (one forward of both batches); "
                   "scored on the target and source test sets",
    },
    "transfer": {
        "module": "tricklab.transfer.run_transfer", "run": "run_transfer", "config": "TransferConfig",
        "metrics": "TRANSFER_METRICS", "baseline": "transfer", "default_steps": 300,
        "overrides_by_dataset": {"fashion-mnist": {"width": 16, "pretrain_steps": 400}},
        "variants": [("transfer", {})],
        "within": [(f"{m}_acc", "scratch_acc")
                   for m in ("linear_probe", "finetune", "gradual_unfreezing", "adapters", "lora")]
        + [("gradual_unfreezing_acc", "finetune_acc")],
        "title": "Transfer to new classes with 10 labels per class: scratch, linear probe, fine-tuning, gradual "
                 "unfreezing, adapters, LoRA",
        "setting": "classes split once (split_seed 0) into 5 source and 5 target classes; backbone "
                   "(tricklab.transfer.backbones) trained with labels on all source-class training examples (800 "
                   "AdamW steps, batch 64); then, from the same weights and with the same new head, each method "
                   "trains on 10 labelled examples per target class (AdamW 2e-3, batch 32) for the given steps and "
                   "is scored 5-way on the target classes of the test set (chance 0.2): scratch = a fresh encoder; "
                   "linear_probe = frozen backbone; finetune = everything; gradual_unfreezing = "
                   "ULMFiT's schedule over the 5 layer groups (3 conv+BN, the encoder's linear, the head), one more "
                   "group every steps/5 steps from the head down, AdamW built once over all; adapters = "
                   "bottleneck 16 after every conv/linear layer of the encoder; lora = rank 4, alpha 8 on every "
                   "conv/linear layer of the "
                   "encoder (BatchNorm statistics still update in training mode; its affine parameters are frozen)",
    },
}


def _run_one(study: str, overrides: dict[str, Any], seed: int, out: str) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import importlib

    spec = STUDIES[study]
    mod = importlib.import_module(spec["module"])
    cfg = getattr(mod, spec["config"])(threads=1, **overrides)
    t0 = time.perf_counter()

    def progress(row: dict[str, Any]) -> None:
        print(f"  [{Path(out).stem}] step {row['step']} " + ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if k not in ("step", "seconds") and isinstance(v, float)),
            flush=True)

    result = getattr(mod, spec["run"])(cfg, seed=seed, progress=progress)
    data = dataclasses.asdict(result)
    data["config"] = dataclasses.asdict(cfg)
    data["wall_seconds_total"] = time.perf_counter() - t0
    _write(Path(out), json.dumps(data, indent=1))
    return data


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_study(study: str, dataset: str, seeds: list[int], steps: int, jobs: int, fresh: bool,
              only: list[str] | None, suffix: str = "") -> dict[str, dict[int, Any]]:
    import importlib

    spec = STUDIES[study]
    folder = RESULTS / f"{study}-{dataset}{suffix}"
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(spec["module"]), spec["config"]))}
    todo, results = [], {}
    for name, overrides in spec.get("variants_by_dataset", {}).get(dataset, spec["variants"]):
        if only and name not in only:
            continue
        ov = dict(overrides, steps=steps, **({"dataset": dataset} if "dataset" in fields else {}),
                  **spec.get("overrides_by_dataset", {}).get(dataset, {}))
        results[name] = {}
        for seed in seeds:
            path = folder / f"{name}-seed{seed}.json"
            if path.is_file() and not fresh:
                saved = json.loads(path.read_text(encoding="utf-8"))
                if all(saved["config"].get(k) == v for k, v in ov.items()):
                    results[name][seed] = saved
                    continue
            todo.append((name, ov, seed, str(path)))
    print(f"{study}-{dataset}: {len(todo)} run(s) to do", flush=True)
    if jobs > 1 and todo:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_run_one, study, ov, seed, out): (name, seed) for name, ov, seed, out in todo}
            for fut, (name, seed) in futs.items():
                results[name][seed] = fut.result()
                print(f"done {name} seed {seed}: {results[name][seed]['metrics']}", flush=True)
    else:
        import torch

        torch.set_num_threads(1)
        for name, ov, seed, out in todo:
            results[name][seed] = _run_one(study, ov, seed, out)
            print(f"done {name} seed {seed}: {results[name][seed]['metrics']}", flush=True)
    return results


def _fmt(x: float | None, fmt: str = ".4f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _ci(d: dict[str, Any], fmt: str = ".4f") -> str:
    if d.get("ci_low") is None:
        return _fmt(d.get("mean"), fmt)
    return f"{_fmt(d['mean'], fmt)} [{_fmt(d['ci_low'], fmt)}, {_fmt(d['ci_high'], fmt)}]"


def _diff(d: dict[str, Any], fmt: str = ".4f") -> str:
    if d.get("ci_low") is None:
        return _fmt(d.get("mean_diff"), "+" + fmt)
    return f"{_fmt(d['mean_diff'], '+' + fmt)} [{_fmt(d['ci_low'], '+' + fmt)}, {_fmt(d['ci_high'], '+' + fmt)}]"


def summarize(study: str, results: dict[str, dict[int, Any]]) -> dict[str, Any]:
    import importlib

    from tricklab.lab import stats

    spec = STUDIES[study]
    specs = getattr(importlib.import_module(spec["module"]), spec["metrics"])
    base = spec["baseline"]
    out: dict[str, Any] = {}
    for name, runs in results.items():
        seeds = sorted(set(runs) & set(results.get(base, {})))
        entry: dict[str, Any] = {"seeds": sorted(runs), "metrics": {}}
        for m in specs:
            vals = [runs[s]["metrics"][m.key] for s in sorted(runs) if m.key in runs[s]["metrics"]]
            if not vals or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in vals):
                continue
            row: dict[str, Any] = {"label": m.label, "higher_is_better": m.higher_is_better, "values": vals,
                                   "describe": dataclasses.asdict(stats.describe(vals))}
            if name != base and seeds and all(m.key in results[base][s]["metrics"] for s in seeds):
                b = [results[base][s]["metrics"][m.key] for s in seeds]
                v = [runs[s]["metrics"][m.key] for s in seeds]
                if not any(isinstance(x, float) and math.isnan(x) for x in b):
                    paired = stats.paired(v, b, m.higher_is_better).to_dict()
                    if not m.verdict:
                        paired["verdict"] = "(no verdict: descriptive)"
                    row["paired_vs_baseline"] = paired
            entry["metrics"][m.key] = row
        out[name] = entry
    return out


def plot(study: str, summary: dict[str, Any], path: Path, keys: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4))
    axes = [axes] if len(keys) == 1 else list(axes)
    names = list(summary)
    for ax, key in zip(axes, keys):
        means, errs = [], []
        for n in names:
            d = summary[n]["metrics"].get(key, {}).get("describe", {})
            means.append(d.get("mean") or 0.0)
            errs.append(d.get("half_width") or 0.0)
        ax.bar(range(len(names)), means, yerr=errs, capsize=4, color="#4477aa")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(key)
        ax.set_ylim(0, 1)
        for i, m in enumerate(means):
            ax.text(i, m + 0.02, f"{m:.3f}", ha="center", fontsize=8)
    fig.suptitle(STUDIES[study]["title"] + " (mean, 95% t-interval)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_name(path.name + ".tmp"), format="svg")
    plt.close(fig)
    path.with_name(path.name + ".tmp").replace(path)


def write_card(study: str, dataset: str, seeds: list[int], steps: int, results: dict[str, dict[int, Any]],
               command: str, machine_note: str = SHARED_NOTE, suffix: str = "") -> Path:
    import torch

    spec = STUDIES[study]
    summary = summarize(study, results)
    folder = CARDS / f"little-{study}-{dataset}{suffix}"
    keys = {"selfsup": ["probe_acc", "knn_acc"], "fewshot": ["oneshot_acc", "oneshot_random_acc", "zeroshot_acc"]
            + (["wide_oneshot_acc", "wide_oneshot_random_acc"] if dataset == "fashion-mnist-rot40" else []),
            "dann": ["target_acc", "source_acc"],
            "transfer": [f"{m}_acc" for m in ("scratch", "linear_probe", "finetune", "gradual_unfreezing",
                                                "adapters", "lora")]
            }.get(study, ["test_acc"])
    plot(study, summary, folder / "metrics.svg", keys)
    machine = {"cpu": platform.machine(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
               "torch": torch.__version__, "torch_threads": 1,
               "shared": machine_note}
    base = spec["baseline"]
    setting = spec.get("setting_by_dataset", {}).get(dataset, spec["setting"])
    lines = [f"# {spec['title']} ({dataset})", "", f"Command: `{command}`", "",
             f"Paired by seed against `{base}` at equal budget ({steps} steps).", "", "## Setting", "",
             f"- **data**: {dataset}", f"- **setting**: {setting}", f"- **seeds**: {seeds}",
             *([f"- **changed for {dataset}** (small budgets for the shared CPU): "
                f"{json.dumps(spec['overrides_by_dataset'][dataset])}"] if dataset in spec.get("overrides_by_dataset",
                                                                                              {}) else []),
             f"- **machine**: {json.dumps(machine)}", "", "## Results", "",
             "| variant | metric | mean [95% CI] | difference vs " + base + " [95% CI] | p-value | verdict |",
             "|---|---|---|---|---|---|"]
    for name, entry in summary.items():
        for key, row in entry["metrics"].items():
            fmt = ".1f" if key == "seconds" else ".4f"
            p = row.get("paired_vs_baseline")
            lines.append(f"| {name} | {row['label']} | {_ci(row['describe'], fmt)} | "
                         f"{_diff(p, fmt) if p else '-'} | {_fmt(p.get('p_value'), '.3g') if p else '-'} | "
                         f"{p['verdict'] if p else '-'} |")
    within = spec.get("within", [])
    if within:
        from tricklab.lab import stats

        lines += ["", "## Within-run comparisons (paired by seed)", "",
                  "| variant | metric | reference | difference [95% CI] | p-value | verdict |",
                  "|---|---|---|---|---|---|"]
        for name, runs in results.items():
            seeds_here = sorted(runs)
            for key, ref in within:
                if not all(key in runs[sd]["metrics"] and ref in runs[sd]["metrics"] for sd in seeds_here):
                    continue  # a metric this data set's runs do not report (the wide episodes)
                a = [runs[sd]["metrics"][key] for sd in seeds_here]
                b = [runs[sd]["metrics"][ref] for sd in seeds_here]
                p = stats.paired(a, b, True).to_dict()
                summary[name].setdefault("within", {})[f"{key}-{ref}"] = p
                lines.append(f"| {name} | {key} | {ref} | {_diff(p)} | {_fmt(p.get('p_value'), '.3g')} | "
                             f"{p['verdict']} |")
    pairs = [(a, b) for a, b in spec.get("pairs", []) if a in results and b in results]
    if pairs:
        from tricklab.lab import stats

        lines += ["", "## Variant against variant (test accuracy, paired by seed)", "",
                  "| variant | against | difference [95% CI] | p-value | verdict |", "|---|---|---|---|---|"]
        for a, b in pairs:
            seeds_here = sorted(set(results[a]) & set(results[b]))
            p = stats.paired([results[a][sd]["metrics"]["test_acc"] for sd in seeds_here],
                             [results[b][sd]["metrics"]["test_acc"] for sd in seeds_here], True).to_dict()
            summary[a].setdefault("pairs", {})[b] = p
            lines.append(f"| {a} | {b} | {_diff(p)} | {_fmt(p.get('p_value'), '.3g')} | {p['verdict']} |")
    lines += ["", "![metrics](metrics.svg)", "", "Per-seed values are in card.json. Timings were taken on a shared "
              "machine and carry no verdict.", ""]
    _write(folder / "card.md", "\n".join(lines))
    data = {"command": command, "study": study, "dataset": dataset, "seeds": seeds, "steps": steps,
            "baseline": base, "setting": setting, "machine": machine, "summary": summary,
            "runs": {n: {str(s): r["metrics"] for s, r in runs.items()} for n, runs in results.items()}}
    _write(folder / "card.json", json.dumps(data, indent=1))
    return folder / "card.md"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("study", choices=sorted(STUDIES))
    ap.add_argument("--dataset", default="mnist1d", choices=["mnist1d", "fashion-mnist", "fashion-mnist-rot40"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--only", nargs="+", default=None, help="run and report only these variants")
    ap.add_argument("--suffix", default="", help="appended to the results and card folders' names (a second "
                    "budget beside the first, e.g. -long)")
    ap.add_argument("--machine-note", default=SHARED_NOTE, help="what else ran on the machine meanwhile (the card's "
                    "'shared' field)")
    args = ap.parse_args(argv)
    steps = args.steps or STUDIES[args.study]["default_steps"]
    command = (f"PYTHONPATH=src python benchmarks/little_cards.py {args.study} --dataset {args.dataset} "
               f"--seeds {' '.join(map(str, args.seeds))} --steps {steps}"
               + (f" --only {' '.join(args.only)}" if args.only else "")
               + (f" --suffix={args.suffix}" if args.suffix else ""))
    results = run_study(args.study, args.dataset, args.seeds, steps, args.jobs, args.fresh, args.only, args.suffix)
    print(write_card(args.study, args.dataset, args.seeds, steps, results, command, args.machine_note, args.suffix))


if __name__ == "__main__":
    main()
