"""Shared helpers of the loss families: reduction handling, target checks, and the example-input record the
loss contract test (tests/contracts/test_losses.py) sweeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


@dataclass(frozen=True)
class LossExample:
    """Small example inputs for one registered loss.

    Attributes:
        args: positional inputs of ``forward`` (predictions first, then targets/labels).
        kwargs: constructor arguments of the loss class (besides ``reduction``).
        trainable: indices into ``args`` of the floating-point inputs that should receive gradients (the
            contract test turns them into free parameters and checks the loss falls when optimising them).
        none_shape: the shape of the output with ``reduction="none"``.
    """

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    trainable: tuple[int, ...] = (0,)
    none_shape: tuple[int, ...] = ()


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction`` to a per-element loss (``"mean"`` averages over every element)."""
    check_reduction(reduction)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def check_float(name: str, t: Any, min_ndim: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (logits or embeddings), got dtype {t.dtype}")
    if t.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(t.shape)}")
    return t


def check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def target_probs(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """Targets as class probabilities shaped like ``logits`` (N, C, d1, ...).

    Class indices (N, d1, ...) become one-hot; floating-point targets must already be probabilities with the
    logits' shape (e.g. soft targets from mixup).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    c = logits.shape[1]
    if target.is_floating_point():
        if target.shape != logits.shape:
            raise ValueError(
                f"soft (probability) targets must have the logits' shape {tuple(logits.shape)}, got "
                f"{tuple(target.shape)}; pass class indices of shape {(logits.shape[0], *logits.shape[2:])} instead"
            )
        return target.to(logits.dtype)
    check_class_indices(target, logits)
    # one_hot appends the class axis last: (N, d1, ..., C) -> (N, C, d1, ...)
    return F.one_hot(target.long(), c).movedim(-1, 1).to(logits.dtype)


def check_class_indices(target: torch.Tensor, logits: torch.Tensor) -> None:
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"class-index targets must be an integer tensor, got dtype {target.dtype}")
    expected = (logits.shape[0], *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"class-index targets must have shape {expected} for logits of shape {tuple(logits.shape)} "
            f"(classes on dim 1), got {tuple(target.shape)}"
        )
    c = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= c):
        raise ValueError(f"class-index targets must lie in [0, {c - 1}], got range "
                         f"[{int(target.min())}, {int(target.max())}]")
