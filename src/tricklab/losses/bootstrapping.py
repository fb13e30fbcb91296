"""Bootstrapping for noisy labels (Reed, Lee, Anguelov, Szegedy, Erhan & Rabinovich, "Training Deep Neural
Networks on Noisy Labels with Bootstrapping", ICLR 2015 workshop, arXiv:1412.6596).

With noisy labels, plain cross-entropy forces the model to fit the wrong ones. Bootstrapping trains against a
convex mix of the given label ``y`` and the model's own belief ``p = softmax(z)``, so a confident prediction
that disagrees with a label can override it:

    soft:  L = -sum_c [beta y_c + (1 - beta) p_c] log p_c           (paper: beta = 0.95)
    hard:  L = -sum_c [beta y_c + (1 - beta) z_c] log p_c,  z = onehot(argmax p)   (paper: beta = 0.8)

**Gradient through p (soft).** The paper notes that the soft objective equals cross-entropy plus
``(1 - beta)`` times the entropy of ``p``, i.e. minimum-entropy regularisation (Grandvalet & Bengio 2005); that
equivalence holds only when the gradient also flows through the ``p`` inside the target, so by default it does
(``detach_prediction=False``). ``detach_prediction=True`` gives the "fixed pseudo-target" variant, whose
gradient is ``softmax(z) - q`` like an ordinary cross-entropy. In the hard form the argmax has no gradient.
Labels may be class indices or probabilities (soft labels from a mixer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.losses._common import LossExample, check_float, check_reduction, reduce, target_probs

#: The values the paper used in its experiments: beta = 0.95 for soft and 0.8 for hard bootstrapping.
DEFAULT_BETA: dict[str, float] = {"soft": 0.95, "hard": 0.8}


def _check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"bootstrap beta (weight of the given labels) must be in [0, 1], got {beta!r}")
    return float(beta)


def _prepare(input: torch.Tensor, target: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    check_float("input", input, min_ndim=2)
    check_reduction(reduction)
    return F.log_softmax(input, dim=1), target_probs(target, input)


def soft_bootstrap_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float = 0.95,
    reduction: str = "mean",
    detach_prediction: bool = False,
) -> torch.Tensor:
    """Soft bootstrapping: cross-entropy against ``beta y + (1 - beta) softmax(input)``.

    Args:
        input: logits (N, C) or (N, C, d1, ...).
        target: class indices (N, ...) or probabilities shaped like ``input``.
        beta: weight of the given labels in [0, 1]; 1 gives cross-entropy.
        reduction: "mean", "sum" or "none" (N, ...).
        detach_prediction: stop the gradient through the prediction inside the target (see module docs).
    """
    beta = _check_beta(beta)
    log_p, y = _prepare(input, target, reduction)
    p = log_p.exp()
    if detach_prediction:
        p = p.detach()
    q = beta * y + (1.0 - beta) * p
    return reduce(-(q * log_p).sum(1), reduction)


def hard_bootstrap_loss(
    input: torch.Tensor, target: torch.Tensor, beta: float = 0.8, reduction: str = "mean"
) -> torch.Tensor:
    """Hard bootstrapping: cross-entropy against ``beta y + (1 - beta) onehot(argmax input)``.

    Args as :func:`soft_bootstrap_loss`.
    """
    beta = _check_beta(beta)
    log_p, y = _prepare(input, target, reduction)
    z = F.one_hot(input.detach().argmax(1), input.shape[1]).movedim(-1, 1).to(log_p.dtype)  # MAP label
    q = beta * y + (1.0 - beta) * z
    return reduce(-(q * log_p).sum(1), reduction)


def bootstrap_loss(
    input: torch.Tensor,
    target: torch.Tensor,
    beta: float | None = None,
    mode: str = "soft",
    reduction: str = "mean",
) -> torch.Tensor:
    """Soft or hard bootstrapping; ``beta=None`` takes the paper's value for the mode (0.95 soft, 0.8 hard)."""
    if mode not in DEFAULT_BETA:
        raise ValueError(f"bootstrap mode must be 'soft' or 'hard', got {mode!r}")
    b = DEFAULT_BETA[mode] if beta is None else beta
    fn = soft_bootstrap_loss if mode == "soft" else hard_bootstrap_loss
    return fn(input, target, b, reduction)


class SoftBootstrapLoss(nn.Module):
    """Soft bootstrapping: CE against beta y + (1 - beta) p for noisy labels (Reed et al. 2015)."""

    def __init__(self, beta: float = 0.95, reduction: str = "mean", detach_prediction: bool = False) -> None:
        super().__init__()
        self.beta = _check_beta(beta)
        self.reduction = check_reduction(reduction)
        self.detach_prediction = bool(detach_prediction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_bootstrap_loss(input, target, self.beta, self.reduction, self.detach_prediction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, detach_prediction={self.detach_prediction}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(6, 4, generator=generator)
        target = torch.randint(0, 4, (6,), generator=generator)
        return LossExample((logits, target), {"beta": 0.95}, (0,), (6,))


class HardBootstrapLoss(nn.Module):
    """Hard bootstrapping: CE against beta y + (1 - beta) onehot(argmax p) for noisy labels (Reed et al. 2015)."""

    def __init__(self, beta: float = 0.8, reduction: str = "mean") -> None:
        super().__init__()
        self.beta = _check_beta(beta)
        self.reduction = check_reduction(reduction)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return hard_bootstrap_loss(input, target, self.beta, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        logits = torch.randn(6, 4, generator=generator)
        target = torch.randint(0, 4, (6,), generator=generator)
        return LossExample((logits, target), {"beta": 0.8}, (0,), (6,))
