"""Gradient reversal and domain-adversarial training (DANN).

Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015 (and Ganin et al., JMLR 2016,
"Domain-Adversarial Training of Neural Networks"): features ``f = G_f(x)`` feed a label predictor ``G_y`` and,
through a gradient reversal layer R_lambda, a domain classifier ``G_d``. The GRL is the identity forward and
multiplies the gradient by ``-lambda`` backward (JMLR eq. 13-14: ``R(x) = x``, ``dR/dx = -lambda I``), so one
backward pass of ``L_y + L_d`` gives the saddle-point updates of eq. (10)-(12)::

    theta_f <- theta_f - mu (dL_y/dtheta_f - lambda dL_d/dtheta_f)   (features: fool the domain classifier)
    theta_y <- theta_y - mu dL_y/dtheta_y
    theta_d <- theta_d - mu dL_d/dtheta_d                             (domain classifier: tell domains apart)

The adaptation factor grows from 0 to 1 over training, JMLR sec. 5.2.2: ``lambda_p = 2 / (1 + exp(-gamma p)) - 1``
with ``gamma = 10`` and ``p`` the training progress in [0, 1] (:func:`dann_lambda`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = ["DomainClassifier", "GradientReversal", "dann_lambda", "dann_loss", "grad_reverse"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, lambd: float) -> Tensor:
        ctx.lambd = lambd
        return x.view_as(x)  # identity (a view, so autograd records this node)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambd * grad, None


def grad_reverse(x: Tensor, lambd: float = 1.0) -> Tensor:
    """``R_lambda(x)``: ``x`` forward, ``-lambda * grad`` backward."""
    if not isinstance(lambd, (int, float)) or not math.isfinite(lambd) or lambd < 0:
        raise ConfigError(f"gradient reversal lambda must be a finite number >= 0, got {lambd!r}")
    return _GradReverse.apply(x, float(lambd))


class GradientReversal(nn.Module):
    """The GRL as a layer; set ``self.lambd`` during training (e.g. from :func:`dann_lambda`)."""

    def __init__(self, lambd: float = 1.0) -> None:
        super().__init__()
        self.lambd = float(lambd)

    def forward(self, x: Tensor) -> Tensor:
        return grad_reverse(x, self.lambd)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """``2 / (1 + exp(-gamma p)) - 1`` for progress ``p`` in [0, 1] (Ganin et al. 2016, sec. 5.2.2)."""
    if not 0.0 <= progress <= 1.0:
        raise ConfigError(f"DANN progress must be in [0, 1] (step / total steps), got {progress!r}")
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class DomainClassifier(nn.Module):
    """``G_d``: GRL, then an MLP ``features -> hidden -> ReLU -> 1`` domain logit (source 0, target 1)."""

    def __init__(self, in_features: int, hidden: int = 64, lambd: float = 1.0) -> None:
        super().__init__()
        self.grl = GradientReversal(lambd)
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, features: Tensor) -> Tensor:
        return self.net(self.grl(features)).squeeze(-1)


def dann_loss(logits_source: Tensor, y_source: Tensor, features_source: Tensor, features_target: Tensor,
              domain_head: nn.Module, weight: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """``L_y + weight * L_d``: cross-entropy on the labelled source batch plus the domain classifier's binary
    cross-entropy over both batches (source label 0, target label 1). With a GRL inside ``domain_head`` one
    backward pass gives the DANN updates. Returns the loss and its parts (floats, for logging)."""
    if features_source.shape[1:] != features_target.shape[1:]:
        raise ConfigError(f"source and target features differ in shape: {tuple(features_source.shape)} vs "
                          f"{tuple(features_target.shape)}")
    task = F.cross_entropy(logits_source, y_source)
    d_logits = domain_head(torch.cat([features_source, features_target]))
    d_labels = torch.cat([torch.zeros(len(features_source)), torch.ones(len(features_target))]).to(d_logits)
    domain = F.binary_cross_entropy_with_logits(d_logits, d_labels)
    with torch.no_grad():
        d_acc = float(((d_logits > 0).to(d_labels) == d_labels).float().mean())
    parts = {"task_loss": float(task.detach()), "domain_loss": float(domain.detach()), "domain_acc": d_acc}
    return task + weight * domain, parts
