"""N-way K-shot episodes over classes never seen in training, a siamese embedding network, and the one-shot
evaluation protocol.

Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image Recognition", ICML 2015 deep learning
workshop, sec. 4.3: a network trained to tell whether two examples share a class (on the *training* classes) is
evaluated on N-way one-shot tasks built from *other* classes: one support example for each of N new classes and a
query; the prediction is the support class most similar to the query. :class:`FewShotEpisodeSampler` draws such
episodes from a fixed set of evaluation classes only (:func:`tricklab.data.low_label.class_split` keeps the two sets
disjoint), so an episode can never contain a training class. With K > 1 shots the class score is the mean embedding
of its K supports (the prototype of Snell et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = ["FewShotEpisode", "FewShotEpisodeSampler", "SiameseNet", "episode_accuracy", "sample_pairs"]


@dataclass(frozen=True)
class FewShotEpisode:
    """Indices into the data set: ``support`` (n_way * k_shot, class-major) and ``query`` (n_way * n_query);
    ``support_labels`` / ``query_labels`` are episode labels 0..n_way-1; ``classes`` the original class ids."""

    support: Tensor
    support_labels: Tensor
    query: Tensor
    query_labels: Tensor
    classes: list[int]


class FewShotEpisodeSampler:
    """Draws N-way K-shot episodes (with ``n_query`` queries per class) from ``classes`` only."""

    def __init__(self, y: Tensor, classes: Sequence[int], n_way: int, k_shot: int = 1, n_query: int = 1,
                 seed: int = 0) -> None:
        self.classes = sorted(int(c) for c in classes)
        if not 2 <= n_way <= len(self.classes):
            raise ConfigError(f"n_way must be in [2, {len(self.classes)}] (the evaluation classes), got {n_way}")
        if k_shot < 1 or n_query < 1:
            raise ConfigError(f"k_shot and n_query must be >= 1, got {k_shot}, {n_query}")
        self.by_class = {c: (y == c).nonzero().flatten() for c in self.classes}
        short = {c: len(i) for c, i in self.by_class.items() if len(i) < k_shot + n_query}
        if short:
            raise ConfigError(f"classes {short} have fewer than k_shot + n_query = {k_shot + n_query} examples")
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> FewShotEpisode:
        g = self.generator
        pick = torch.randperm(len(self.classes), generator=g)[: self.n_way].tolist()
        classes = [self.classes[i] for i in pick]
        support, query = [], []
        for c in classes:
            idx = self.by_class[c]
            chosen = idx[torch.randperm(len(idx), generator=g)[: self.k_shot + self.n_query]]
            support.append(chosen[: self.k_shot])
            query.append(chosen[self.k_shot:])
        labels = torch.arange(self.n_way)
        return FewShotEpisode(torch.cat(support), labels.repeat_interleave(self.k_shot), torch.cat(query),
                       labels.repeat_interleave(self.n_query), classes)


@torch.no_grad()
def episode_accuracy(embed: Callable[[Tensor], Tensor], x: Tensor, episode: FewShotEpisode,
                     metric: str = "cosine") -> float:
    """Accuracy of the queries of one episode: nearest class prototype (mean support embedding) by cosine
    similarity or (negative) Euclidean distance."""
    s, q = embed(x[episode.support]), embed(x[episode.query])
    n_way = int(episode.support_labels.max()) + 1
    protos = torch.stack([s[episode.support_labels == c].mean(0) for c in range(n_way)])  # (N, D)
    if metric == "cosine":
        scores = F.normalize(q, dim=1) @ F.normalize(protos, dim=1).T
    elif metric == "euclidean":
        scores = -torch.cdist(q, protos)
    else:
        raise ConfigError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    return float((scores.argmax(1) == episode.query_labels).float().mean())


def sample_pairs(y: Tensor, classes: Sequence[int], n_pairs: int, generator: torch.Generator) -> tuple[Tensor, Tensor,
                                                                                                       Tensor]:
    """``n_pairs`` index pairs (i, j) from ``classes``, half of the same class (label 0: similar, the convention
    of :func:`tricklab.losses.contrastive_loss`), half of different classes (label 1)."""
    pool = torch.cat([(y == c).nonzero().flatten() for c in classes])
    yp = y[pool]
    i = pool[torch.randint(0, len(pool), (n_pairs,), generator=generator)]
    j = pool[torch.randint(0, len(pool), (n_pairs,), generator=generator)]
    same = torch.arange(n_pairs) % 2 == 0
    for k in same.nonzero().flatten().tolist():  # resample j within i's class for the similar half
        cands = pool[yp == y[i[k]]]
        j[k] = cands[torch.randint(0, len(cands), (1,), generator=generator)]
    return i, j, (y[i] != y[j]).long()


class SiameseNet(nn.Module):
    """Twin embedding network (shared weights): ``embed(x)`` = L2-normalised ``encoder(x)``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def embed(self, x: Tensor) -> Tensor:
        return F.normalize(self.encoder(x), dim=1)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return self.embed(x1), self.embed(x2)
