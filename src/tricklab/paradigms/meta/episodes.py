"""N-way K-shot episodes (Vinyals et al., 2016) from any labelled tensor set, over a fixed subset of classes, so
that meta-training and meta-testing can use disjoint classes.

An episode draws ``ways`` classes from ``classes``, then ``shots`` support and ``queries`` query examples of each
(without replacement inside a class). Labels are relabelled 0..ways-1 in the order the classes were drawn, so a
learner can never use the global class identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tricklab.errors import ConfigError

__all__ = ["Episode", "EpisodeSampler", "split_classes"]


@dataclass(frozen=True)
class Episode:
    """Support (ways*shots, ...) and query (ways*queries, ...) sets with labels in 0..ways-1; ``classes``: the
    original class of each episode label."""

    x_support: Tensor
    y_support: Tensor
    x_query: Tensor
    y_query: Tensor
    classes: tuple[int, ...]


def split_classes(num_classes: int, num_test: int) -> tuple[list[int], list[int]]:
    """Meta-train classes 0..num_classes-num_test-1 and held-out meta-test classes after them."""
    if not 0 < num_test < num_classes:
        raise ConfigError(f"num_test must be in 1..{num_classes - 1} for {num_classes} classes, got {num_test}")
    return list(range(num_classes - num_test)), list(range(num_classes - num_test, num_classes))


class EpisodeSampler:
    """Draws episodes from (x, y) restricted to ``classes`` with its own seeded generator."""

    def __init__(self, x: Tensor, y: Tensor, classes: list[int], ways: int, shots: int, queries: int,
                 seed: int = 0) -> None:
        if ways > len(classes):
            raise ConfigError(f"ways ({ways}) exceeds the {len(classes)} classes available ({classes}); "
                              "lower ways or hold out more classes")
        self.x, self.ways, self.shots, self.queries = x, ways, shots, queries
        self.classes = list(classes)
        self.index = {c: torch.nonzero(y == c).flatten() for c in self.classes}
        for c, idx in self.index.items():
            if len(idx) < shots + queries:
                raise ConfigError(f"class {c} has {len(idx)} examples, fewer than shots + queries = "
                                  f"{shots + queries}; lower shots or queries")
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self) -> Episode:
        pick = torch.randperm(len(self.classes), generator=self.gen)[: self.ways]
        chosen = [self.classes[int(i)] for i in pick]
        sup, qry = [], []
        for c in chosen:
            idx = self.index[c]
            perm = idx[torch.randperm(len(idx), generator=self.gen)[: self.shots + self.queries]]
            sup.append(perm[: self.shots])
            qry.append(perm[self.shots:])
        s, q = torch.cat(sup), torch.cat(qry)
        labels = torch.arange(self.ways)
        return Episode(self.x[s], labels.repeat_interleave(self.shots), self.x[q],
                       labels.repeat_interleave(self.queries), tuple(chosen))
