"""Benchmark tasks: a data set, a default model, the loss and the metrics, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.registry import Registry


@dataclass(frozen=True)
class Task:
    """A classification task over one registered data set."""

    name: str
    dataset: str
    default_model: str
    summary: str
    dataset_args: dict[str, Any] = field(default_factory=dict)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy

    def metric_fn(self, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]:
        from tricklab.evaluate import classification_metrics

        def metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
            out = classification_metrics(logits, targets, num_classes)
            out["loss"] = out["nll"]
            return out

        return metrics


TASKS: Registry[Task] = Registry("task")
for _t in (
    Task("mnist1d", "mnist1d", "cnn", "MNIST-1D (Greydanus 2020), 4000/1000, 10 classes, length 40"),
    Task("mnist1d-shuffled", "mnist1d-shuffled", "mlp", "MNIST-1D with the spatial order permuted"),
    Task("digits", "digits", "cnn2d", "scikit-learn 8x8 digits, 10 classes"),
    Task("fashion-mnist", "fashion-mnist", "cnn2d", "Fashion-MNIST 28x28, 60000/10000, 10 classes"),
    Task("wine", "wine", "mlp", "scikit-learn wine, 13 features, 3 classes"),
    Task("breast-cancer", "breast-cancer", "mlp", "scikit-learn breast cancer, 30 features, 2 classes"),
    Task("cora", "cora", "gcn", "Cora citation graph, node classification, standard split 140/500/1000"),
    Task("planetoid", "planetoid", "gcn", "any Planetoid folder (--data-dir DIR, data.args.dataset=citeseer...)"),
    Task("karate", "karate", "gcn", "Zachary's karate club (networkx), node classification"),
    Task("synthetic-graphs", "synthetic-graphs", "gcn_graph",
         "code-made graph classification: cycles, stars, trees, random graphs"),
):
    TASKS.register(_t.name, _t, summary=_t.summary)

__all__ = ["TASKS", "Task"]
