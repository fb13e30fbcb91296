"""Evaluating a frozen backbone: a linear probe and k-nearest-neighbour accuracy on its features.

Linear probe (the SimCLR / MoCo / BYOL protocol): features of the frozen encoder, standardised with the training
set's mean and standard deviation, then a multinomial logistic regression trained on the labelled training
features (full batch, Adam, weight decay) and scored on the test features. k-NN (Wu et al. 2018, "Unsupervised
Feature Learning via Non-Parametric Instance Discrimination"): cosine similarity of L2-normalised features, a
majority vote of the k nearest training examples (ties to the smaller class id).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = ["encode", "knn_accuracy", "linear_probe"]


@torch.no_grad()
def encode(encoder: nn.Module, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Features (N, D) of ``x`` in eval mode (BatchNorm with running statistics); the mode is restored."""
    was = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).float()
    finally:
        encoder.train(was)


def linear_probe(f_train: Tensor, y_train: Tensor, f_test: Tensor, y_test: Tensor, *, steps: int = 500,
                 lr: float = 0.05, weight_decay: float = 1e-4, seed: int = 0) -> dict[str, float]:
    """Train a linear classifier on fixed features; returns ``{"train_acc", "test_acc"}``."""
    if f_train.ndim != 2 or f_test.ndim != 2 or f_train.shape[1] != f_test.shape[1]:
        raise ConfigError(f"linear_probe needs (N, D) features of equal D, got {tuple(f_train.shape)} and "
                          f"{tuple(f_test.shape)}")
    mean, std = f_train.mean(0), f_train.std(0).clamp_min(1e-6)
    a, b = (f_train - mean) / std, (f_test - mean) / std
    classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    g = torch.Generator().manual_seed(seed)
    head = nn.Linear(a.shape[1], classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(a), y_train).backward()
        opt.step()
    with torch.no_grad():
        return {"train_acc": float((head(a).argmax(1) == y_train).float().mean()),
                "test_acc": float((head(b).argmax(1) == y_test).float().mean())}


@torch.no_grad()
def knn_accuracy(f_train: Tensor, y_train: Tensor, f_test: Tensor, y_test: Tensor, k: int = 20) -> float:
    """Accuracy of a k-NN majority vote with cosine similarity."""
    if not 1 <= k <= len(f_train):
        raise ConfigError(f"k must be in [1, {len(f_train)}] (the number of training examples), got {k}")
    a, b = F.normalize(f_train, dim=1), F.normalize(f_test, dim=1)
    classes = int(max(int(y_train.max()), int(y_test.max()))) + 1
    correct = 0
    for i in range(0, len(b), 500):
        sim = b[i:i + 500] @ a.T  # (n, N)
        idx = sim.topk(k, dim=1).indices  # (n, k)
        votes = F.one_hot(y_train[idx], classes).sum(1)  # (n, C)
        correct += int((votes.argmax(1) == y_test[i:i + 500]).sum())  # argmax: first maximum, the smaller id
    return correct / len(b)
