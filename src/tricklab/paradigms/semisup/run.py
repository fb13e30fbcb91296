"""``run_semisup``: k labels per class, the rest of the training set unlabelled; labelled-only training against
pseudo-labelling, the Pi-model, mean teacher and FixMatch, all through the one Trainer (the methods are
techniques).

Every method sees the same batches (``SemiSupervisedLoader``: B labelled + mu B unlabelled examples, targets -100
for the unlabelled ones, which the task's cross-entropy ignores) and the same weak augmentation of the batch
(``random_shift``), so the labelled-only baseline differs only by the missing unsupervised term (its BatchNorm
statistics do see the unlabelled inputs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tricklab.data.low_label import SemiSupervisedLoader, low_label_split
from tricklab.techniques.fixmatch import FixMatch
from tricklab.techniques.mean_teacher import MeanTeacher
from tricklab.techniques.pi_model import PiModel
from tricklab.techniques.pseudo_label import PseudoLabel
from tricklab.techniques.random_shift import RandomShift
from tricklab.train import Technique, Trainer
from tricklab.transfer.backbones import Classifier, make_encoder
from tricklab.evaluate.declared import MetricSpec
from tricklab.transfer.common import ParadigmResult, Progress, check, load_arrays, pos_int, pos_num

__all__ = ["SEMISUP_METRICS", "SEMISUP_METHODS", "SemiSupConfig", "run_semisup"]

SEMISUP_METHODS = ("labelled_only", "pseudo_label", "pi_model", "mean_teacher", "fixmatch")

SEMISUP_METRICS: list[MetricSpec] = [
    MetricSpec("test_acc", "test accuracy", True),
    MetricSpec("pseudo_label_acc", "accuracy of confident pseudo-labels", True, verdict=False),
    MetricSpec("mask_rate", "fraction of unlabelled examples above the threshold", True, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class SemiSupConfig:
    """One semi-supervised run (defaults: FixMatch's tau 0.95, lambda_u 1, mu 7)."""

    method: str = "fixmatch"
    dataset: str = "mnist1d"
    labels_per_class: int = 10
    steps: int = 1500
    labelled_batch: int = 16
    mu: int = 7
    lr: float = 2e-3
    weight_decay: float = 5e-4
    threshold: float = 0.95
    unsup_weight: float = 1.0
    mt_weight: float = 10.0
    mt_decay: float = 0.99
    pi_stop_gradient: bool = False
    ramp_fraction: float = 0.3
    width: int = 32
    feature_dim: int = 128
    eval_every: int = 250
    train_limit: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.method in SEMISUP_METHODS, "method", f"one of {SEMISUP_METHODS}", self.method)
        for name in ("labels_per_class", "steps", "labelled_batch", "mu", "width", "feature_dim", "eval_every",
                     "threads"):
            check(pos_int(getattr(self, name)), name, "a positive integer", getattr(self, name))
        for name in ("lr", "unsup_weight", "mt_weight"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))
        check(0 <= self.weight_decay, "weight_decay", ">= 0", self.weight_decay)
        check(0 <= self.threshold <= 1, "threshold", "in [0, 1]", self.threshold)
        check(0 < self.mt_decay < 1, "mt_decay", "in (0, 1)", self.mt_decay)
        check(isinstance(self.pi_stop_gradient, bool), "pi_stop_gradient", "true or false", self.pi_stop_gradient)
        check(0 <= self.ramp_fraction <= 1, "ramp_fraction", "in [0, 1]", self.ramp_fraction)
        check(self.train_limit is None or pos_int(self.train_limit), "train_limit", "None or a positive integer",
              self.train_limit)


def _techniques(cfg: SemiSupConfig, seed: int) -> list[Technique]:
    ramp = int(cfg.ramp_fraction * cfg.steps)
    out: list[Technique] = [RandomShift(max_shift=0.125, seed=seed)]
    if cfg.method == "pseudo_label":
        out.append(PseudoLabel(cfg.unsup_weight, cfg.threshold, ramp_start=0, ramp_end=ramp))
    elif cfg.method == "pi_model":  # the same weight and ramp as the mean teacher: the two differ by the teacher
        out.append(PiModel(cfg.mt_weight, rampup_steps=ramp, stop_gradient=cfg.pi_stop_gradient, seed=seed))
    elif cfg.method == "mean_teacher":
        out.append(MeanTeacher(cfg.mt_weight, cfg.mt_decay, rampup_steps=ramp, seed=seed))
    elif cfg.method == "fixmatch":
        out.append(FixMatch(cfg.unsup_weight, cfg.threshold, seed=seed))
    return out


def run_semisup(config: SemiSupConfig, *, seed: int, run_dir: Path | None = None,
                progress: Progress | None = None) -> ParadigmResult:
    """Train on a seeded k-per-class split; deterministic for a seed on the CPU. With ``run_dir`` the trainer
    writes there (no checkpoints are asked for: runs are short)."""
    cfg = config
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, seed, run_dir, progress)
    finally:
        torch.set_num_threads(prev)


def _run(cfg: SemiSupConfig, seed: int, run_dir: Path | None, progress: Progress | None) -> ParadigmResult:
    x, y, xt, yt, classes = load_arrays(cfg.dataset, cfg.train_limit)
    split = low_label_split(y, cfg.labels_per_class, seed, classes)
    check(cfg.labelled_batch <= len(split.labelled), "labelled_batch",
          f"<= the {len(split.labelled)} labelled examples", cfg.labelled_batch)
    loader = SemiSupervisedLoader(x[split.labelled], y[split.labelled], x[split.unlabelled], cfg.labelled_batch,
                                  cfg.mu, seed=seed)
    torch.manual_seed(seed)
    model = Classifier(make_encoder(tuple(x.shape[1:]), cfg.width, cfg.feature_dim), cfg.feature_dim, classes)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    trainer = Trainer(model, opt, loader, techniques=_techniques(cfg, seed), eval_data=(xt, yt),
                      eval_every=cfg.eval_every, log_every=cfg.eval_every, max_steps=cfg.steps, run_dir=run_dir)
    t0 = time.perf_counter()
    state = trainer.fit()
    seconds = time.perf_counter() - t0
    history: list[dict[str, Any]] = []
    for row in state.history:
        out = {"step": row["step"], "seconds": row.get("seconds", 0.0)}
        if "eval_accuracy" in row:
            out["test_acc"] = row["eval_accuracy"]
        if "train_loss" in row:
            out["train_loss"] = row["train_loss"]
        history.append(out)
        if progress is not None and "test_acc" in out:
            progress(dict(out))
    model.eval()
    with torch.no_grad():
        acc = float((model(xt).argmax(1) == yt).float().mean())
        conf, pred = model(x[split.unlabelled]).softmax(1).max(1)
    mask = conf >= cfg.threshold
    truth = y[split.unlabelled]
    pl_acc = float((pred[mask] == truth[mask]).float().mean()) if bool(mask.any()) else float("nan")
    metrics = {"test_acc": acc, "pseudo_label_acc": pl_acc, "mask_rate": float(mask.float().mean()),
               "seconds": seconds}
    return ParadigmResult(metrics, history, {"labelled": split.labelled.tolist(), "method": cfg.method})
