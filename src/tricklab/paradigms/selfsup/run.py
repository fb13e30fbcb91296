"""``run_selfsup``: pretrain a backbone without labels (SimCLR, MoCo v2, BYOL), then score it with a linear probe
and k-NN on the labelled training set; ``random`` (no pretraining) and ``supervised`` (the encoder trained with
labels, the upper bound) give the two reference points.

A loop of its own: two views per batch, a method-specific update (the momentum encoder, the target EMA) that the
supervised trainer's batch contract does not express.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.transfer.backbones import Classifier, make_encoder
from tricklab.evaluate.declared import MetricSpec
from tricklab.transfer.common import ParadigmResult, Progress, check, load_arrays, pos_int, pos_num
from tricklab.transfer.probe import encode, knn_accuracy, linear_probe
from tricklab.paradigms.selfsup.methods import BYOL, MoCo, SimCLR, byol_tau
from tricklab.data.views import strong_view, weak_view

__all__ = ["SELFSUP_METRICS", "SELFSUP_METHODS", "SelfSupConfig", "run_selfsup"]

SELFSUP_METHODS = ("simclr", "moco", "byol", "random", "supervised")

SELFSUP_METRICS: list[MetricSpec] = [
    MetricSpec("probe_acc", "linear-probe test accuracy", True),
    MetricSpec("knn_acc", "k-NN test accuracy (k=20, cosine)", True),
    MetricSpec("pretrain_loss", "final pretraining loss", False, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class SelfSupConfig:
    """One pretraining run. ``train_limit`` keeps the first N training examples (for short Fashion-MNIST runs);
    the probe uses the same examples with their labels."""

    method: str = "simclr"
    dataset: str = "mnist1d"
    steps: int = 1500
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-5
    width: int = 32
    feature_dim: int = 128
    temperature: float = 0.2
    queue_size: int = 2048
    momentum: float = 0.99
    tau_base: float = 0.99
    probe_steps: int = 500
    knn_k: int = 20
    eval_every: int = 500
    train_limit: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.method in SELFSUP_METHODS, "method", f"one of {SELFSUP_METHODS}", self.method)
        for name in ("steps", "batch_size", "width", "feature_dim", "queue_size", "probe_steps", "knn_k",
                     "eval_every", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive integer", getattr(self, name))
        for name in ("lr", "temperature"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))
        check(self.weight_decay >= 0, "weight_decay", ">= 0", self.weight_decay)
        check(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        check(0 <= self.tau_base < 1, "tau_base", "in [0, 1)", self.tau_base)
        check(self.train_limit is None or pos_int(self.train_limit), "train_limit", "None or a positive integer",
              self.train_limit)
        check(self.queue_size >= self.batch_size, "queue_size", f">= batch_size ({self.batch_size})", self.queue_size)


def _build(cfg: SelfSupConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    enc = make_encoder(input_shape, cfg.width, cfg.feature_dim)
    if cfg.method == "simclr":
        return SimCLR(enc, cfg.feature_dim, temperature=cfg.temperature)
    if cfg.method == "moco":
        return MoCo(enc, cfg.feature_dim, queue_size=cfg.queue_size, momentum=cfg.momentum,
                    temperature=cfg.temperature)
    if cfg.method == "byol":
        return BYOL(enc, cfg.feature_dim)
    return Classifier(enc, cfg.feature_dim, num_classes)  # random (untrained) and supervised


def run_selfsup(config: SelfSupConfig, *, seed: int, run_dir: Path | None = None,
                progress: Progress | None = None) -> ParadigmResult:
    """Pretrain (or not) and probe; deterministic for a seed on the CPU. ``run_dir`` is unused (no checkpoints:
    runs are short)."""
    cfg = config
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, seed, progress)
    finally:
        torch.set_num_threads(prev_threads)


def _run(cfg: SelfSupConfig, seed: int, progress: Progress | None) -> ParadigmResult:
    x, y, xt, yt, classes = load_arrays(cfg.dataset, cfg.train_limit)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = _build(cfg, tuple(x.shape[1:]), classes)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    loss_val = float("nan")
    steps = 0 if cfg.method == "random" else cfg.steps
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        xb = x[idx]
        if cfg.method == "supervised":
            loss = F.cross_entropy(model(weak_view(xb, g)), y[idx])
        else:
            loss = model.loss(strong_view(xb, g), strong_view(xb, g))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if isinstance(model, BYOL):
            model.update_target_(byol_tau(step, steps, cfg.tau_base))
        loss_val = float(loss.detach())
        if step % cfg.eval_every == 0 or step == steps:
            enc = model.encoder
            knn = knn_accuracy(encode(enc, x), y, encode(enc, xt), yt, cfg.knn_k)
            row = {"step": step, "seconds": time.perf_counter() - t0, "loss": loss_val, "knn_acc": knn}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    seconds = time.perf_counter() - t0
    f_train, f_test = encode(model.encoder, x), encode(model.encoder, xt)
    probe = linear_probe(f_train, y, f_test, yt, steps=cfg.probe_steps, seed=seed)
    knn = knn_accuracy(f_train, y, f_test, yt, cfg.knn_k)
    if not history:
        history.append({"step": 0, "seconds": seconds, "knn_acc": knn})
    metrics = {"probe_acc": probe["test_acc"], "knn_acc": knn, "pretrain_loss": loss_val, "seconds": seconds}
    return ParadigmResult(metrics, history, {"probe_train_acc": probe["train_acc"], "method": cfg.method})
