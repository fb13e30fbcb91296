"""Task streams for continual learning from one labelled data set (van de Ven & Tolias, 2019 scenarios):

* ``split_stream``: the classes cut into consecutive groups (MNIST-1D: 5 tasks of 2 classes), each task
  keeping its own train and test examples; evaluated task-incrementally (the learner is told the task and
  only that task's classes compete).
* ``permuted_stream``: every task is the whole data set with its input positions shuffled by a fixed
  permutation (task 0: identity), all tasks sharing the 10-way output (Goodfellow et al., 2013).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tricklab.errors import ConfigError

__all__ = ["ContinualTask", "split_stream", "permuted_stream"]


@dataclass(frozen=True)
class ContinualTask:
    """One task: its train/test tensors and the classes that compete in its output (``classes``)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[int, ...]


def split_stream(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, num_tasks: int,
                 num_classes: int = 10) -> list[ContinualTask]:
    """``num_tasks`` tasks of ``num_classes // num_tasks`` consecutive classes each."""
    if num_tasks < 2 or num_classes % num_tasks:
        raise ConfigError(f"num_tasks must be >= 2 and divide the {num_classes} classes, got {num_tasks}")
    per = num_classes // num_tasks
    tasks = []
    for t in range(num_tasks):
        cls = tuple(range(t * per, (t + 1) * per))
        tr, te = torch.isin(y, torch.tensor(cls)), torch.isin(y_test, torch.tensor(cls))
        tasks.append(ContinualTask(x[tr], y[tr], x_test[te], y_test[te], cls))
    return tasks


def permuted_stream(x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, num_tasks: int, seed: int = 0,
                    num_classes: int = 10) -> list[ContinualTask]:
    """``num_tasks`` tasks; task t permutes the last input axis with permutation t (identity for t = 0)."""
    if num_tasks < 2:
        raise ConfigError(f"num_tasks must be >= 2, got {num_tasks}")
    gen = torch.Generator().manual_seed(seed)
    tasks = []
    for t in range(num_tasks):
        perm = torch.arange(x.shape[-1]) if t == 0 else torch.randperm(x.shape[-1], generator=gen)
        tasks.append(ContinualTask(x[..., perm], y, x_test[..., perm], y_test, tuple(range(num_classes))))
    return tasks
