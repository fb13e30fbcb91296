"""``run_fewshot``: a siamese network trained with the contrastive loss on pairs from the training classes, then
scored on N-way K-shot episodes built from the *other* classes (Koch et al. 2015's protocol), and zero-shot
classification of those classes from attribute vectors alone (ESZSL on the siamese features of the training
classes). Reference points on the same episodes: the untrained encoder and the raw inputs; zero-shot chance is
1 / (number of unseen classes).

A loop of its own: pairs of examples, not batches of labelled inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tricklab.losses import contrastive_loss
from tricklab.transfer.backbones import make_encoder
from tricklab.evaluate.declared import MetricSpec
from tricklab.data.datasets import load_dataset
from tricklab.data.low_label import class_split, group_class_split
from tricklab.transfer.common import ParadigmResult, Progress, check, pos_int, pos_num
from tricklab.paradigms.fewshot.siamese import FewShotEpisodeSampler, SiameseNet, episode_accuracy, sample_pairs
from tricklab.transfer.probe import encode
from tricklab.paradigms.fewshot.zeroshot import (eszsl_fit, eszsl_predict, fashion_mnist_attributes,
                                                 mnist1d_template_attributes, rotated_fashion_attributes)

__all__ = ["FEWSHOT_DATASETS", "FEWSHOT_METRICS", "FewShotConfig", "class_attributes", "run_fewshot",
           "split_classes"]

FEWSHOT_METRICS: list[MetricSpec] = [
    MetricSpec("oneshot_acc", "N-way K-shot accuracy on unseen classes (siamese)", True),
    MetricSpec("oneshot_random_acc", "same episodes, untrained encoder", True, verdict=False),
    MetricSpec("oneshot_raw_acc", "same episodes, raw inputs", True, verdict=False),
    MetricSpec("wide_oneshot_acc", "n_way_wide-way K-shot accuracy on unseen classes (siamese; when set)", True),
    MetricSpec("wide_oneshot_random_acc", "same wide episodes, untrained encoder (when set)", True, verdict=False),
    MetricSpec("wide_oneshot_raw_acc", "same wide episodes, raw inputs (when set)", True, verdict=False),
    MetricSpec("zeroshot_acc", "zero-shot accuracy on unseen classes (ESZSL)", True),
    MetricSpec("zeroshot_chance", "zero-shot chance level", True, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]


FEWSHOT_DATASETS = ("mnist1d", "fashion-mnist", "fashion-mnist-rot40")


@dataclass
class FewShotConfig:
    """The data set's classes are split (with ``split_seed``, the same for every run seed) into
    ``num_train_classes`` training classes and the rest, from which the episodes and the zero-shot test are drawn.
    On a data set whose classes come in groups (``fashion-mnist-rot40``: the 4 rotations of a garment) the split is
    by group: ``num_train_classes`` must then be a multiple of the group size, and every class of a group lands on
    the same side."""

    dataset: str = "mnist1d"
    num_train_classes: int = 5
    split_seed: int = 0
    steps: int = 1000
    pairs_per_step: int = 128
    lr: float = 2e-3
    margin: float = 1.0
    n_way: int = 5
    #: a second, wider N scored with the same trained network (e.g. 20-way next to 5-way); metrics ``wide_*``
    n_way_wide: int | None = None
    k_shot: int = 1
    episodes: int = 1000
    width: int = 32
    feature_dim: int = 64
    eszsl_gamma: float = 1.0
    eszsl_lambda: float = 1.0
    eval_every: int = 250
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.dataset in FEWSHOT_DATASETS, "dataset", f"one of {FEWSHOT_DATASETS}", self.dataset)
        for name in ("num_train_classes", "steps", "pairs_per_step", "n_way", "k_shot", "episodes", "width",
                     "feature_dim", "eval_every", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive integer", getattr(self, name))
        for name in ("lr", "margin", "eszsl_gamma", "eszsl_lambda"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))
        check(self.n_way >= 2, "n_way", ">= 2", self.n_way)
        check(self.n_way_wide is None or (pos_int(self.n_way_wide) and self.n_way_wide >= 2), "n_way_wide",
              "None or an integer >= 2", self.n_way_wide)


def split_classes(meta: dict[str, Any], num_classes: int, cfg: FewShotConfig) -> tuple[list[int], list[int]]:
    """(training classes, unseen classes): by group when ``meta["class_group"]`` is given, else by class."""
    groups = meta.get("class_group")
    if groups is None:
        train, test = class_split(num_classes, cfg.num_train_classes, cfg.split_seed)
    else:
        size = num_classes // (max(groups) + 1)
        check(cfg.num_train_classes % size == 0 and 0 < cfg.num_train_classes < num_classes, "num_train_classes",
              f"a multiple of {size} below {num_classes} (the classes of {cfg.dataset} come in groups of {size}: "
              f"a group is split off whole)", cfg.num_train_classes)
        train, test = group_class_split(groups, cfg.num_train_classes // size, cfg.split_seed)
    for name in ("n_way", "n_way_wide"):
        n = getattr(cfg, name)
        check(n is None or n <= len(test), name, f"in [2, {len(test)}] (the unseen classes of {cfg.dataset} with "
              f"num_train_classes={cfg.num_train_classes})", n)
    return train, test


def class_attributes(dataset: str) -> torch.Tensor:
    """The attribute table (classes, attributes) ESZSL reads for ``dataset``."""
    if dataset == "mnist1d":
        return mnist1d_template_attributes()
    if dataset == "fashion-mnist":
        return fashion_mnist_attributes()
    return rotated_fashion_attributes()


def _oneshot(embed: Any, x: torch.Tensor, y: torch.Tensor, classes: list[int], cfg: FewShotConfig,
             seed: int, n_way: int) -> float:
    sampler = FewShotEpisodeSampler(y, classes, n_way, cfg.k_shot, n_query=1, seed=seed)
    return sum(episode_accuracy(embed, x, sampler.sample()) for _ in range(cfg.episodes)) / cfg.episodes


def run_fewshot(config: FewShotConfig, *, seed: int, run_dir: Path | None = None,
                progress: Progress | None = None) -> ParadigmResult:
    """Train the siamese network, then score one-shot episodes and zero-shot classification on unseen classes."""
    cfg = config
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, seed, progress)
    finally:
        torch.set_num_threads(prev)


def _run(cfg: FewShotConfig, seed: int, progress: Progress | None) -> ParadigmResult:
    ds = load_dataset(cfg.dataset)
    x, y, xt, yt, classes = ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.num_classes
    train_cls, test_cls = split_classes(ds.meta, classes, cfg)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = SiameseNet(make_encoder(tuple(x.shape[1:]), cfg.width, cfg.feature_dim))

    def embed(t: torch.Tensor) -> torch.Tensor:
        return encode(net.encoder, t)

    ways = {"": cfg.n_way, **({"wide_": cfg.n_way_wide} if cfg.n_way_wide else {})}
    metrics: dict[str, float] = {}
    for prefix, n in ways.items():  # the untrained encoder and the raw inputs, on the same episodes
        metrics[f"{prefix}oneshot_random_acc"] = _oneshot(embed, xt, yt, test_cls, cfg, seed, n)
        metrics[f"{prefix}oneshot_raw_acc"] = _oneshot(lambda t: t.reshape(len(t), -1), xt, yt, test_cls, cfg,
                                                       seed, n)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    net.train()
    for step in range(1, cfg.steps + 1):
        i, j, label = sample_pairs(y, train_cls, cfg.pairs_per_step, g)
        e = net.embed(torch.cat([x[i], x[j]]))  # one pass: BatchNorm sees both sides
        loss = contrastive_loss(*e.chunk(2), label, margin=cfg.margin)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row = {"step": step, "seconds": time.perf_counter() - t0, "loss": float(loss.detach())}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    seconds = time.perf_counter() - t0
    for prefix, n in ways.items():
        metrics[f"{prefix}oneshot_acc"] = _oneshot(embed, xt, yt, test_cls, cfg, seed, n)
    # zero-shot: ESZSL on the features of the training classes, predicted among the unseen classes only
    attrs = class_attributes(cfg.dataset)
    seen = torch.isin(y, torch.tensor(train_cls))
    remap = torch.full((classes,), -1, dtype=torch.long)
    remap[torch.tensor(train_cls)] = torch.arange(len(train_cls))
    v = eszsl_fit(embed(x[seen]), remap[y[seen]], attrs[train_cls], cfg.eszsl_gamma, cfg.eszsl_lambda)
    unseen = torch.isin(yt, torch.tensor(test_cls))
    pred = torch.tensor(test_cls)[eszsl_predict(embed(xt[unseen]), v, attrs[test_cls])]
    zeroshot = float((pred == yt[unseen]).float().mean())
    metrics.update({"zeroshot_acc": zeroshot, "zeroshot_chance": 1.0 / len(test_cls), "seconds": seconds})
    return ParadigmResult(metrics, history, {"train_classes": train_cls, "test_classes": test_cls,
                                             "n_way": cfg.n_way, "n_way_wide": cfg.n_way_wide,
                                             "episodes": cfg.episodes})
