"""Benchmark tasks: a data set, a default model, the loss and the metrics, registered by name."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from tricklab.evaluate import classification_metrics
from tricklab.registry import Registry

#: target id that marks "no prediction here" in per-token targets (as F.cross_entropy's ignore_index)
IGNORE_INDEX = -100


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the scored positions of per-token targets.

    logits (B, T, V), targets (B, T) with IGNORE_INDEX where nothing is predicted (padding, prompt tokens).
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def scored_positions(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, V) logits and (M,) targets of the positions that carry a target (targets != IGNORE_INDEX)."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"per-token task: expected logits (B, T, V) and targets (B, T), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    keep = targets.reshape(-1) != IGNORE_INDEX
    return logits.reshape(-1, logits.shape[-1])[keep], targets.reshape(-1)[keep]


@dataclass(frozen=True)
class Task:
    """A classification task over one registered data set.

    ``kind="classification"``: one label per example, logits (B, C). ``kind="token"``: one label per position
    (language modelling, sequence tasks), logits (B, T, V) against targets (B, T) where IGNORE_INDEX marks
    positions without a target; metrics are computed over the scored positions, plus bits per token
    (``bpc`` = nll / ln 2, bits per character for a character vocabulary).
    """

    name: str
    dataset: str
    default_model: str
    summary: str
    dataset_args: dict[str, Any] = field(default_factory=dict)
    kind: str = "classification"
    #: language models: a prompt to sample a continuation from at the end of each run (kept in its summary)
    sample_prompt: str | None = None

    @property
    def loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return token_cross_entropy if self.kind == "token" else F.cross_entropy

    def metric_fn(self, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]:
        def metrics(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
            if self.kind == "token":
                logits, targets = scored_positions(logits, targets)
            out = classification_metrics(logits, targets, num_classes)
            out["loss"] = out["nll"]
            if self.kind == "token":
                out["bpc"] = out["nll"] / math.log(2.0)
                out["scored_positions"] = int(targets.numel())
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
    Task("shakespeare-char", "shakespeare-char", "gpt",
         "character-level language model on Shakespeare's plays; held-out last 10%, bits per character",
         kind="token", sample_prompt="ROMEO.\n"),
    Task("shakespeare-mlm", "shakespeare-mlm", "bert", "BERT masked-character pretraining on Shakespeare",
         kind="token"),
    Task("shakespeare-plays", "shakespeare-plays", "bert_classifier",
         "which play a 128-character passage comes from (8 plays; passages from disjoint parts of each play)"),
    Task("selective-copying", "selective-copying", "mamba_lm",
         "Mamba paper's selective copying: recall the data tokens scattered among noise, in order", kind="token"),
    Task("seq-reverse", "seq-reverse", "seq2seq_rnn",
         "toy seq2seq: reverse 8..12 random digits (encoder-decoder RNN with attention), teacher-forced tokens",
         kind="token"),
    Task("seq-sort", "seq-sort", "seq2seq_rnn",
         "toy seq2seq: sort 8..12 random digits (encoder-decoder RNN with attention), teacher-forced tokens",
         kind="token"),
    Task("induction-heads", "induction-heads", "mamba_lm",
         "Mamba paper's induction heads: after the trigger token again, recall the token that followed it",
         kind="token"),
):
    TASKS.register(_t.name, _t, summary=_t.summary)

__all__ = ["IGNORE_INDEX", "TASKS", "Task", "scored_positions", "token_cross_entropy"]
