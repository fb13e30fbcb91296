"""``run_dann``: domain adaptation on a domain pair made by code (``tricklab.data.domains``): source-only
training against DANN (Ganin et al. 2016) and self-training (confident pseudo-labels on the target batch, the
functional core of the ``pseudo_label`` technique, weight ramped linearly over the first 30% of steps) with the
same encoder, batches and budget; all scored on the target domain's test set (and the source's).

A loop of its own: each step takes a labelled source batch and an unlabelled target batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.data.domains import DOMAINS, load_domains
from tricklab.techniques.pseudo_label import linear_ramp, pseudo_label_loss
from tricklab.transfer.backbones import Classifier, make_encoder
from tricklab.evaluate.declared import MetricSpec
from tricklab.transfer.common import ParadigmResult, Progress, check, pos_int, pos_num
from tricklab.paradigms.domain.grl import DomainClassifier, dann_lambda, dann_loss

__all__ = ["DANN_METRICS", "DANN_METHODS", "DannConfig", "run_dann"]

DANN_METHODS = ("source_only", "dann", "self_training")

DANN_METRICS: list[MetricSpec] = [
    MetricSpec("target_acc", "target-domain test accuracy", True),
    MetricSpec("source_acc", "source-domain test accuracy", True),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class DannConfig:
    method: str = "dann"
    pair: str = "mnist1d-noisy"
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    domain_weight: float = 1.0
    gamma: float = 10.0
    threshold: float = 0.95
    width: int = 32
    feature_dim: int = 128
    eval_every: int = 500
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.method in DANN_METHODS, "method", f"one of {DANN_METHODS}", self.method)
        check(self.pair in DOMAINS.names(), "pair", f"one of {DOMAINS.names()}", self.pair)
        for name in ("steps", "batch_size", "width", "feature_dim", "eval_every", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive integer", getattr(self, name))
        for name in ("lr", "domain_weight", "gamma"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))
        check(0 <= self.threshold <= 1, "threshold", "in [0, 1]", self.threshold)


@torch.no_grad()
def _accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    acc = sum(int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum()) for i in range(0, len(x), 1000))
    model.train(was)
    return acc / len(x)


def run_dann(config: DannConfig, *, seed: int, run_dir: Path | None = None,
             progress: Progress | None = None) -> ParadigmResult:
    """Train source-only or DANN; deterministic for a seed on the CPU."""
    cfg = config
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, seed, progress)
    finally:
        torch.set_num_threads(prev)


def _run(cfg: DannConfig, seed: int, progress: Progress | None) -> ParadigmResult:
    pair = load_domains(cfg.pair)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = Classifier(make_encoder(pair.input_shape, cfg.width, cfg.feature_dim), cfg.feature_dim,
                       pair.num_classes)
    head = DomainClassifier(cfg.feature_dim)
    params = list(model.parameters()) + (list(head.parameters()) if cfg.method == "dann" else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-5)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    model.train()
    parts: dict[str, float] = {}
    for step in range(1, cfg.steps + 1):
        i = torch.randint(0, len(pair.x_source), (cfg.batch_size,), generator=g)
        j = torch.randint(0, len(pair.x_target), (cfg.batch_size,), generator=g)
        if cfg.method == "dann":
            head.grl.lambd = dann_lambda(step / cfg.steps, cfg.gamma)
            f = model.encoder(torch.cat([pair.x_source[i], pair.x_target[j]]))  # one pass: BN sees both domains
            fs, ft = f.chunk(2)
            loss, parts = dann_loss(model.head(fs), pair.y_source[i], fs, ft, head, cfg.domain_weight)
        elif cfg.method == "self_training":
            out = model(torch.cat([pair.x_source[i], pair.x_target[j]]))
            os_, ot = out.chunk(2)
            term, mask = pseudo_label_loss(ot, cfg.threshold)
            w = linear_ramp(step, 0, int(0.3 * cfg.steps), 1.0)
            loss = F.cross_entropy(os_, pair.y_source[i]) + w * term
            parts = {"mask_rate": float(mask.float().mean())}
        else:
            loss = F.cross_entropy(model(pair.x_source[i]), pair.y_source[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "seconds": time.perf_counter() - t0, "loss": float(loss.detach()),
                   "target_acc": _accuracy(model, pair.x_target_test, pair.y_target_test), **parts}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    metrics = {"target_acc": _accuracy(model, pair.x_target_test, pair.y_target_test),
               "source_acc": _accuracy(model, pair.x_source_test, pair.y_source_test),
               "seconds": time.perf_counter() - t0}
    return ParadigmResult(metrics, history, {"method": cfg.method, "pair": cfg.pair})
