"""``run_continual``: one continual learner on a split or permuted MNIST-1D task stream, shaped for the lab's task
kinds (PARADIGMS.md).

The learner sees tasks one after the other (``steps_per_task`` Adam steps each, batches of ``batch_size``) and never
returns to an old task's data, except through its replay buffer. After each task it is tested on every task, which
fills the accuracy matrix R (R[i][j]: accuracy on task j after task i). Methods:

* ``finetune``: plain training on the current task (the forgetting baseline);
* ``ewc``: + the EWC penalty (lambda ``ewc_lambda``; exact diagonal Fisher on ``fisher_samples`` training examples
  of each finished task; ``ewc_online`` for the online variant with decay ``ewc_gamma``);
* ``replay``: each step adds a batch drawn from a reservoir buffer of ``replay_capacity`` examples of the earlier
  tasks;
* ``progressive``: a progressive network, one column per task.

``split`` streams are task-incremental: only the current task's classes compete in the softmax (the task is
known at test time, as progressive networks need). ``permuted`` streams share one 10-way head.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.evaluate.declared import MetricSpec
from tricklab.paradigms.common import ParadigmResult, Progress, check, mlp, mnist1d_arrays, pos_int, pos_num, \
    write_json
from tricklab.paradigms.continual.ewc import EWC, diagonal_fisher
from tricklab.paradigms.continual.metrics import average_accuracy, backward_transfer, forgetting
from tricklab.paradigms.continual.progressive import ProgressiveNet
from tricklab.paradigms.continual.replay import ReservoirBuffer
from tricklab.paradigms.continual.streams import ContinualTask, permuted_stream, split_stream

__all__ = ["CONTINUAL_METHODS", "CONTINUAL_METRICS", "ContinualConfig", "run_continual"]

CONTINUAL_METHODS: tuple[str, ...] = ("finetune", "ewc", "replay", "progressive")

CONTINUAL_METRICS: list[MetricSpec] = [
    MetricSpec("average_accuracy", "average accuracy over all tasks after the last", True),
    MetricSpec("forgetting", "average forgetting", False),
    MetricSpec("backward_transfer", "backward transfer", True),
    MetricSpec("first_task_accuracy", "task-0 accuracy after the last task", True),
    MetricSpec("train_seconds", "training time", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class ContinualConfig:
    """One continual learner on a 5-task MNIST-1D stream."""

    stream: str = "split"
    method: str = "finetune"
    num_tasks: int = 5
    steps_per_task: int = 500
    batch_size: int = 64
    lr: float = 1e-3
    hidden: int = 100
    ewc_lambda: float = 100.0
    ewc_online: bool = False
    ewc_gamma: float = 1.0
    fisher_samples: int = 500
    replay_capacity: int = 200
    replay_batch: int = 64
    permutation_seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.stream in ("split", "permuted"), "stream", "'split' or 'permuted'", self.stream)
        check(self.method in CONTINUAL_METHODS, "method", f"one of {CONTINUAL_METHODS}", self.method)
        for name in ("num_tasks", "steps_per_task", "batch_size", "hidden", "fisher_samples", "replay_capacity",
                     "replay_batch", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        check(self.num_tasks >= 2, "num_tasks", ">= 2", self.num_tasks)
        check(self.stream != "split" or 10 % self.num_tasks == 0, "num_tasks",
              "a divisor of 10 (2, 5 or 10) for the split stream", self.num_tasks)
        check(pos_num(self.lr), "lr", "a positive number", self.lr)
        check(isinstance(self.ewc_lambda, (int, float)) and self.ewc_lambda >= 0, "ewc_lambda", ">= 0",
              self.ewc_lambda)
        check(isinstance(self.ewc_gamma, (int, float)) and 0 < self.ewc_gamma <= 1, "ewc_gamma", "in (0, 1]",
              self.ewc_gamma)


def _masks(tasks: list[ContinualTask], split: bool) -> Tensor:
    """(T, 10) bool: the classes that compete in each task's softmax."""
    m = torch.zeros(len(tasks), 10, dtype=torch.bool)
    for t, task in enumerate(tasks):
        m[t, list(task.classes)] = True
    return m if split else torch.ones_like(m)


def _logits(model: nn.Module, x: Tensor, task: int | Tensor, masks: Tensor, progressive: bool) -> Tensor:
    z = model(x, column=int(task)) if progressive else model(x)
    return z.masked_fill(~masks[task], float("-inf"))


@torch.no_grad()
def _accuracy_row(model: nn.Module, tasks: list[ContinualTask], masks: Tensor, progressive: bool,
                  trained: int) -> list[float]:
    """Accuracy on every task after training task ``trained`` (a progressive net answers a future task with its
    newest column)."""
    model.eval()
    row = []
    for j, task in enumerate(tasks):
        col = min(j, trained) if progressive else j
        z = model(task.x_test, column=col) if progressive else model(task.x_test)
        z = z.masked_fill(~masks[j], float("-inf"))
        row.append(float((z.argmax(-1) == task.y_test).double().mean()))
    model.train()
    return row


def run_continual(config: ContinualConfig, *, seed: int, run_dir: Path | None = None,
                  progress: Progress | None = None) -> ParadigmResult:
    """Train ``config.method`` through the task stream (seed ``seed``); report average accuracy, forgetting and
    backward transfer from the accuracy matrix (in ``extras["accuracy_matrix"]``)."""
    torch.set_num_threads(config.threads)
    x, y, xt, yt = mnist1d_arrays()
    if config.stream == "split":
        tasks = split_stream(x, y, xt, yt, config.num_tasks)
    else:
        tasks = permuted_stream(x, y, xt, yt, config.num_tasks, seed=config.permutation_seed)
    masks = _masks(tasks, config.stream == "split")
    torch.manual_seed(seed)
    sizes = [40, config.hidden, config.hidden, 10]
    progressive = config.method == "progressive"
    model: nn.Module = ProgressiveNet(sizes) if progressive else mlp(sizes)
    ewc = EWC(config.ewc_lambda, config.ewc_online, config.ewc_gamma) if config.method == "ewc" else None
    buffer = ReservoirBuffer(config.replay_capacity, seed=seed) if config.method == "replay" else None
    gen = torch.Generator().manual_seed(seed)
    matrix: list[list[float]] = []
    history: list[dict[str, Any]] = []
    train_seconds, t0, step = 0.0, time.perf_counter(), 0
    for t, task in enumerate(tasks):
        if progressive and t > 0:
            model.add_column()  # type: ignore[operator]
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr)
        t1 = time.perf_counter()
        for _ in range(config.steps_per_task):
            idx = torch.randint(0, len(task.x_train), (config.batch_size,), generator=gen)
            xb, yb = task.x_train[idx], task.y_train[idx]
            loss = F.cross_entropy(_logits(model, xb, t, masks, progressive), yb)
            if buffer is not None and len(buffer) and t > 0:
                xr, yr, tr = buffer.sample(config.replay_batch)
                zr = model(xr).masked_fill(~masks[tr], float("-inf"))
                loss = loss + F.cross_entropy(zr, yr)
            if ewc is not None:
                loss = loss + ewc.penalty(model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if buffer is not None:
                buffer.add(xb, yb, task=t)
            step += 1
        if ewc is not None:
            n = min(config.fisher_samples, len(task.x_train))
            sub = torch.randperm(len(task.x_train), generator=gen)[:n]
            ewc.consolidate(model, diagonal_fisher(model, task.x_train[sub], class_mask=masks[t]))
        train_seconds += time.perf_counter() - t1
        matrix.append(_accuracy_row(model, tasks, masks, progressive, t))
        row = {"step": step, "seconds": time.perf_counter() - t0, "task": t,
               "average_accuracy": average_accuracy([r[: t + 1] for r in matrix[: t + 1]]),
               "current_accuracy": matrix[t][t]}
        history.append(row)
        if progress is not None:
            progress(dict(row))
    metrics = {"average_accuracy": average_accuracy(matrix), "forgetting": forgetting(matrix),
               "backward_transfer": backward_transfer(matrix), "first_task_accuracy": matrix[-1][0],
               "train_seconds": train_seconds}
    extras = {"config": asdict(config), "seed": seed, "accuracy_matrix": matrix,
              "parameters": sum(p.numel() for p in model.parameters())}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result
