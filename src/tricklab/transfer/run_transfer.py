"""``run_transfer``: a backbone pretrained with labels on some classes, transferred to *other* classes with k labels
per class, six ways at equal budget: from scratch, a linear probe (frozen backbone), full fine-tuning, fine-tuning
with gradual unfreezing (ULMFiT), bottleneck adapters, and LoRA; each reports its test accuracy and its number of
trained parameters. ``backbone_run`` takes the backbone from a saved lab run instead (:mod:`.from_run`).

Setting: MNIST-1D's classes are split (``split_seed``) into 5 source classes and 5 target classes. The backbone
(``tricklab.transfer.backbones``) is trained on all training examples of the source classes; each transfer method
then trains on ``labels_per_class`` examples of each target class and is scored on the target classes of the test
set (5-way, chance 0.2). A loop of its own: one pretraining, then five fine-tunings from the same weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data.low_label import class_split, low_label_split
from tricklab.transfer.adapters import inject_adapters
from tricklab.transfer.backbones import Classifier, make_encoder
from tricklab.transfer.common import ParadigmResult, Progress, check, load_arrays, pos_int, pos_num
from tricklab.techniques.gradual_unfreezing import apply_unfreezing_
from tricklab.transfer.finetune import count_parameters, freeze_except
from tricklab.transfer.from_run import WEIGHTS, load_run_model, replace_head
from tricklab.transfer.lora import inject_lora
from tricklab.transfer.metrics import TRANSFER_METRICS

__all__ = ["TRANSFER_METHODS", "TRANSFER_METRICS", "TransferConfig", "layer_groups", "run_transfer"]

TRANSFER_METHODS = ("scratch", "linear_probe", "finetune", "gradual_unfreezing", "adapters", "lora")


@dataclass
class TransferConfig:
    dataset: str = "mnist1d"
    num_source_classes: int = 5
    split_seed: int = 0
    pretrain_steps: int = 800
    labels_per_class: int = 10
    steps: int = 300
    batch_size: int = 32
    lr: float = 2e-3
    lora_rank: int = 4
    adapter_bottleneck: int = 16
    #: a lab run folder whose trained model is the backbone (its head replaced) instead of pretraining one here
    backbone_run: str | None = None
    #: which weights of that run: "final", "eval" (a weight averager's) or "checkpoint" (the newest one)
    backbone_weights: str = "final"
    width: int = 32
    feature_dim: int = 128
    threads: int = 1

    def __post_init__(self) -> None:
        for name in ("num_source_classes", "pretrain_steps", "labels_per_class", "steps", "batch_size", "lora_rank",
                     "adapter_bottleneck", "width", "feature_dim", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive integer", getattr(self, name))
        check(pos_num(self.lr), "lr", "a positive number", self.lr)
        check(self.backbone_weights in WEIGHTS, "backbone_weights", f"one of {WEIGHTS}", self.backbone_weights)


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Layer groups for gradual unfreezing, input side first: each Linear/Conv layer starts a group, the
    parameterised layers after it (BatchNorm) join it; groups are lists of parameter-name prefixes."""
    groups: list[list[str]] = []
    for name, m in model.named_modules():
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or not groups:
            groups.append([])
        groups[-1].append(f"{name}.")
    return groups


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, lr: float,
           g: torch.Generator, groups: list[list[str]] | None = None) -> None:
    """AdamW on the trainable parameters; with ``groups``, ULMFiT's gradual unfreezing in ``len(groups)`` equal
    stages of the budget (the last group trains from the start, one more joins at each stage)."""
    eligible = {n for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=1e-4)
    model.train()
    for step in range(steps):
        if groups:
            stage = step // max(1, steps // len(groups))
            apply_unfreezing_(model, groups, min(len(groups), stage + 1), eligible)
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if groups:
        apply_unfreezing_(model, groups, len(groups), eligible)  # the trained-parameter count: everything


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def _reset(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return model


def _adapt(method: str, backbone: nn.Module, cfg: TransferConfig, classes: int) -> tuple[nn.Module, str]:
    """The model ``method`` trains and the name of its new head."""
    if isinstance(backbone, Classifier):
        if method == "scratch":
            return Classifier(make_encoder(tuple(backbone.input_shape), cfg.width, cfg.feature_dim), cfg.feature_dim,
                              classes), "head"
        model: nn.Module = Classifier(copy.deepcopy(backbone.encoder), cfg.feature_dim, classes)  # a new head
        head = "head"
    else:  # a saved run's model: the same architecture, its last linear layer replaced
        model = copy.deepcopy(backbone)
        head = replace_head(model, classes)
        if method == "scratch":
            return _reset(model), head
    body = lambda n, m: n != head and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))  # noqa: E731
    if method == "linear_probe":
        freeze_except(model, [f"{head}."])
    elif method == "adapters":
        inject_adapters(model, [n for n, m in model.named_modules() if body(n, m)], bottleneck=cfg.adapter_bottleneck,
                        trainable=[f"{head}."])
    elif method == "lora":
        inject_lora(model, body, rank=cfg.lora_rank, alpha=2.0 * cfg.lora_rank, trainable=[f"{head}."])
    return model, head


def run_transfer(config: TransferConfig, *, seed: int, run_dir: Path | None = None,
                 progress: Progress | None = None) -> ParadigmResult:
    """Pretrain on the source classes, then transfer five ways; deterministic for a seed on the CPU."""
    cfg = config
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, seed, progress)
    finally:
        torch.set_num_threads(prev)


def _run(cfg: TransferConfig, seed: int, progress: Progress | None) -> ParadigmResult:
    x, y, xt, yt, classes = load_arrays(cfg.dataset)
    src_cls, tgt_cls = class_split(classes, cfg.num_source_classes, cfg.split_seed)
    remap = torch.full((classes,), -1, dtype=torch.long)
    remap[torch.tensor(src_cls)] = torch.arange(len(src_cls))
    remap[torch.tensor(tgt_cls)] = torch.arange(len(tgt_cls))
    src = torch.isin(y, torch.tensor(src_cls))
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    backbone: nn.Module
    if cfg.backbone_run is None:
        backbone = Classifier(make_encoder(tuple(x.shape[1:]), cfg.width, cfg.feature_dim), cfg.feature_dim,
                              len(src_cls))
        backbone.input_shape = tuple(x.shape[1:])  # type: ignore[assignment]
        _train(backbone, x[src], remap[y[src]], cfg.pretrain_steps, 64, cfg.lr, g)
    else:
        saved = load_run_model(cfg.backbone_run, weights=cfg.backbone_weights)
        check(saved.input_shape == tuple(x.shape[1:]), "backbone_run",
              f"a run on inputs of shape {tuple(x.shape[1:])} (the {cfg.dataset} examples)", cfg.backbone_run)
        backbone = saved.model
    tgt = torch.isin(y, torch.tensor(tgt_cls)).nonzero().flatten()
    few = tgt[low_label_split(remap[y[tgt]], cfg.labels_per_class, seed, len(tgt_cls)).labelled]
    xf, yf = x[few], remap[y[few]]
    test = torch.isin(yt, torch.tensor(tgt_cls))
    xt_t, yt_t = xt[test], remap[yt[test]]
    # the backbone on what it was trained for: the source classes, or all classes of a saved run's data set
    metrics: dict[str, float] = {"source_acc": _accuracy(backbone, xt[~test], remap[yt[~test]])
                                 if cfg.backbone_run is None else _accuracy(backbone, xt, yt)}
    history: list[dict[str, Any]] = []
    for method in TRANSFER_METHODS:
        torch.manual_seed(seed + 1)  # the same new head for every method
        model, _ = _adapt(method, backbone, cfg, len(tgt_cls))
        groups = layer_groups(model) if method == "gradual_unfreezing" else None
        _train(model, xf, yf, cfg.steps, cfg.batch_size, cfg.lr, torch.Generator().manual_seed(seed + 2), groups)
        metrics[f"{method}_acc"] = _accuracy(model, xt_t, yt_t)
        metrics[f"{method}_trained_params"] = float(count_parameters(model)["trainable"])
        row = {"step": cfg.steps, "seconds": time.perf_counter() - t0, "method": method,
               "test_acc": metrics[f"{method}_acc"]}
        history.append(row)
        if progress is not None:
            progress(dict(row))
    metrics["seconds"] = time.perf_counter() - t0
    return ParadigmResult(metrics, history, {"source_classes": src_cls, "target_classes": tgt_cls})
