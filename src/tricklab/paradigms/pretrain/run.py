"""``run_greedy``: a deep sigmoid network on MNIST-1D, fine-tuned with labels from a random initialisation or
from greedy layer-wise pretraining (autoencoders, denoising autoencoders, RBMs), at equal fine-tuning budget.

Inputs are min-max scaled to [0, 1] with the training set's range (the autoencoders' cross-entropy and the RBM's
binary visible units need it); every method sees the same scaled inputs. Fine-tuning is plain SGD with momentum,
the setting in which the 2006 papers found pretraining to matter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.evaluate.declared import MetricSpec
from tricklab.transfer.common import ParadigmResult, Progress, check, load_arrays, pos_int, pos_num
from tricklab.paradigms.pretrain.greedy import deep_sigmoid_mlp, greedy_pretrain, to_unit_interval

__all__ = ["GREEDY_METRICS", "GREEDY_METHODS", "GreedyConfig", "run_greedy"]

GREEDY_METHODS = ("random", "autoencoder", "denoising", "rbm")

GREEDY_METRICS: list[MetricSpec] = [
    MetricSpec("test_acc", "test accuracy after fine-tuning", True),
    MetricSpec("train_loss", "training loss after fine-tuning", False),
    MetricSpec("pretrain_seconds", "pretraining time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
    MetricSpec("seconds", "total time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class GreedyConfig:
    method: str = "autoencoder"
    dataset: str = "mnist1d"
    hidden: list[int] = field(default_factory=lambda: [100, 100, 100, 100])
    pretrain_steps: int = 1000
    noise: float = 0.25
    steps: int = 1500
    batch_size: int = 100
    lr: float = 0.1
    momentum: float = 0.9
    eval_every: int = 500
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.method in GREEDY_METHODS, "method", f"one of {GREEDY_METHODS}", self.method)
        check(bool(self.hidden) and all(pos_int(h) for h in self.hidden), "hidden", "a list of positive integers",
              self.hidden)
        for name in ("pretrain_steps", "steps", "batch_size", "eval_every", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive integer", getattr(self, name))
        check(pos_num(self.lr), "lr", "a positive number", self.lr)
        check(0 <= self.momentum < 1, "momentum", "in [0, 1)", self.momentum)
        check(0 <= self.noise < 1, "noise", "in [0, 1)", self.noise)


def run_greedy(config: GreedyConfig, *, seed: int, run_dir: Path | None = None,
               progress: Progress | None = None) -> ParadigmResult:
    """Pretrain (or not) and fine-tune; deterministic for a seed on the CPU."""
    cfg = config
    prev = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, seed, progress)
    finally:
        torch.set_num_threads(prev)


def _run(cfg: GreedyConfig, seed: int, progress: Progress | None) -> ParadigmResult:
    x, y, xt, yt, classes = load_arrays(cfg.dataset)
    x, xt = x.reshape(len(x), -1), xt.reshape(len(xt), -1)
    x, xt = to_unit_interval(x), to_unit_interval(xt, reference=x)
    t0 = time.perf_counter()
    init = None
    if cfg.method != "random":
        noise = cfg.noise if cfg.method == "denoising" else 0.0
        init = greedy_pretrain(x, cfg.hidden, method="rbm" if cfg.method == "rbm" else "autoencoder",
                               steps_per_layer=cfg.pretrain_steps, noise=noise, seed=seed)
    pretrain_seconds = time.perf_counter() - t0
    torch.manual_seed(seed)
    net = deep_sigmoid_mlp([x.shape[1], *cfg.hidden], classes, init=init)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    g = torch.Generator().manual_seed(seed)
    history: list[dict[str, Any]] = []
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                acc = float((net(xt).argmax(1) == yt).float().mean())
                train_loss = float(F.cross_entropy(net(x), y))
            row = {"step": step, "seconds": time.perf_counter() - t0, "test_acc": acc, "train_loss": train_loss}
            history.append(row)
            if progress is not None:
                progress(dict(row))
    metrics = {"test_acc": history[-1]["test_acc"], "train_loss": history[-1]["train_loss"],
               "pretrain_seconds": pretrain_seconds, "seconds": time.perf_counter() - t0}
    return ParadigmResult(metrics, history, {"method": cfg.method, "hidden": list(cfg.hidden)})
