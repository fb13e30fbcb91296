"""Low-label views of a classification data set: k labels per class, the rest unlabelled.

``low_label_split`` draws k training examples per class (stratified, with a private generator seeded by
``seed``); the other training examples become unlabelled. Unlabelled targets are ``-100``, the ``ignore_index``
of ``F.cross_entropy``, so the task's own loss trains on the labelled examples only and the semi-supervised
techniques (pseudo_label, mean_teacher, fixmatch) find the unlabelled ones by that value.

``SemiSupervisedLoader`` yields batches of ``labelled_batch`` labelled examples followed by
``mu * labelled_batch`` unlabelled ones (FixMatch's ratio mu, Sohn et al. 2020 sec. 4), so every batch has
labels however few there are; an epoch is one pass over the unlabelled examples, the labelled ones cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tricklab.data.loader import InMemoryLoader
from tricklab.errors import DataError

__all__ = ["LowLabelSplit", "SemiSupervisedLoader", "UNLABELLED", "class_split", "group_class_split", "low_label_split"]

UNLABELLED = -100


@dataclass(frozen=True)
class LowLabelSplit:
    """Indices into the training set: ``labelled`` (k per class) and ``unlabelled`` (the rest), both sorted."""

    labelled: Tensor
    unlabelled: Tensor
    per_class: int


def low_label_split(y: Tensor, per_class: int, seed: int, num_classes: int | None = None) -> LowLabelSplit:
    """Draw ``per_class`` labelled examples of every class, uniformly without replacement."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise DataError(f"labels per class must be a positive integer, got {per_class!r}")
    if y.ndim != 1 or y.is_floating_point():
        raise DataError(f"low_label_split needs (N,) integer class labels, got {tuple(y.shape)} {y.dtype}")
    classes = int(y.max()) + 1 if num_classes is None else num_classes
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(classes):
        idx = (y == c).nonzero().flatten()
        if len(idx) < per_class:
            raise DataError(f"class {c} has {len(idx)} training examples, fewer than {per_class} labels per class")
        chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    labelled = torch.cat(chosen).sort().values
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[labelled] = False
    return LowLabelSplit(labelled, keep.nonzero().flatten(), per_class)


class SemiSupervisedLoader:
    """``labelled_batch`` labelled examples then ``mu * labelled_batch`` unlabelled ones per batch (targets -100
    for the latter); resumable like :class:`~tricklab.data.loader.InMemoryLoader` (the trainer's position API)."""

    def __init__(self, x_labelled: Tensor, y_labelled: Tensor, x_unlabelled: Tensor, labelled_batch: int,
                 mu: int = 7, seed: int = 0) -> None:
        if isinstance(mu, bool) or not isinstance(mu, int) or mu < 1:
            raise DataError(f"mu (unlabelled per labelled example in a batch) must be a positive integer, got {mu!r}")
        if labelled_batch > len(x_labelled):
            raise DataError(f"labelled_batch {labelled_batch} exceeds the {len(x_labelled)} labelled examples")
        self.labelled = InMemoryLoader(x_labelled, y_labelled, labelled_batch, seed=seed)
        fill = torch.full((len(x_unlabelled),), UNLABELLED, dtype=torch.long)
        self.unlabelled = InMemoryLoader(x_unlabelled, fill, mu * labelled_batch, seed=seed + 1)

    @property
    def epoch(self) -> int:
        return self.unlabelled.epoch

    @property
    def batch_index(self) -> int:
        return self.unlabelled.batch_index

    def __len__(self) -> int:
        return len(self.unlabelled)

    def next_batch(self) -> tuple[Tensor, Tensor]:
        if self.labelled.batch_index >= len(self.labelled):
            self.labelled.start_next_epoch()  # labelled examples cycle: many passes per unlabelled epoch
        xl, yl = self.labelled.next_batch()
        xu, yu = self.unlabelled.next_batch()
        return torch.cat([xl, xu]), torch.cat([yl, yu])

    def start_next_epoch(self) -> None:
        self.unlabelled.start_next_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"labelled": self.labelled.state_dict(), "unlabelled": self.unlabelled.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labelled.load_state_dict(state["labelled"])
        self.unlabelled.load_state_dict(state["unlabelled"])


def class_split(num_classes: int, num_train: int, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of the class ids ``0..num_classes-1`` into ``num_train`` training classes and the rest."""
    if not 0 < num_train < num_classes:
        raise DataError(f"num_train must be in [1, {num_classes - 1}] to leave classes for evaluation, "
                        f"got {num_train}")
    perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[:num_train]), sorted(perm[num_train:])


def group_class_split(groups: Sequence[int], num_train_groups: int, seed: int) -> tuple[list[int], list[int]]:
    """Split classes by group: ``groups[c]`` is the group of class c (e.g. the garment of a rotated Fashion-MNIST
    class); ``num_train_groups`` groups, drawn by :func:`class_split` with ``seed``, give all their classes to the
    training side, the other groups all theirs to the evaluation side, so no group is on both sides."""
    ids = sorted(set(int(gr) for gr in groups))
    if ids != list(range(len(ids))):
        raise DataError(f"groups must be numbered 0..G-1, got {ids}")
    train_groups, _ = class_split(len(ids), num_train_groups, seed)
    train = [c for c, gr in enumerate(groups) if int(gr) in train_groups]
    return train, [c for c, gr in enumerate(groups) if int(gr) not in train_groups]
