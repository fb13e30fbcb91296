"""Input checks shared by the metrics and calibration modules.

They live apart from both so that ``metrics`` can use calibration's binning and ``calibration`` the checks
without importing each other. Every check raises :class:`tricklab.errors.UserError` naming the argument, the
expected shape and what was received.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tricklab.errors import UserError

# Tolerance for "each row of probabilities sums to 1". Loose enough for float16/bfloat16 softmax
# outputs, tight enough to catch logits passed where probabilities are expected.
_PROB_SUM_ATOL = 1e-3


def _is_integer_dtype(dtype: torch.dtype) -> bool:
    # torch has no dtype.is_integer; bool is excluded because True/False are not class indices.
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


def _check_tensor(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x.detach()


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def _check_targets(targets: Any, n: int | None, num_classes: int | None) -> Tensor:
    """Check that ``targets`` is a 1-D integer tensor of length ``n`` with values in ``[0, num_classes)``."""
    targets = _check_tensor(targets, "targets")
    want = f"N={n}" if n is not None else "N"
    if targets.dim() != 1 or not _is_integer_dtype(targets.dtype):
        raise UserError(
            f"targets must be a 1-D integer tensor of length {want} (class indices), "
            f"got shape {tuple(targets.shape)} and dtype {targets.dtype}"
        )
    if n is not None and targets.shape[0] != n:
        raise UserError(
            f"targets must be a 1-D integer tensor of length {want} (one per prediction), "
            f"got shape {tuple(targets.shape)}"
        )
    if targets.numel() == 0:
        raise UserError("targets is empty: metrics need at least one sample")
    if num_classes is not None:
        lo, hi = int(targets.min()), int(targets.max())
        if lo < 0 or hi >= num_classes:
            raise UserError(
                f"targets must hold class indices in [0, {num_classes}) for num_classes={num_classes}, "
                f"got values in [{lo}, {hi}]"
            )
    return targets


def _check_scores(scores: Any, name: str, num_classes: int | None) -> Tensor:
    """Check that ``scores`` is a floating (N, C) tensor with N >= 1 and C == num_classes if given."""
    scores = _check_tensor(scores, name)
    if scores.dim() != 2 or not scores.dtype.is_floating_point:
        raise UserError(
            f"{name} must be a floating tensor of shape (N, C), got shape {tuple(scores.shape)} "
            f"and dtype {scores.dtype}"
        )
    if scores.shape[0] == 0:
        raise UserError(f"{name} is empty: metrics need at least one sample")
    if num_classes is not None and scores.shape[1] != num_classes:
        raise UserError(
            f"{name} must have shape (N, C) with C=num_classes={num_classes}, got shape {tuple(scores.shape)}"
        )
    return scores


def _check_probs(probs: Any, name: str = "probs") -> Tensor:
    """Check that ``probs`` is (N, C) with entries in [0, 1] and rows summing to 1; return it as float64."""
    probs = _check_scores(probs, name, None).to(torch.float64)
    if not torch.isfinite(probs).all():
        raise UserError(f"{name} contains NaN or infinite values")
    if probs.min() < -_PROB_SUM_ATOL or probs.max() > 1 + _PROB_SUM_ATOL:
        raise UserError(
            f"{name} must hold probabilities in [0, 1], got values in "
            f"[{float(probs.min()):.4g}, {float(probs.max()):.4g}]; pass softmax(logits), not logits"
        )
    row_sums = probs.sum(dim=1)
    worst = float((row_sums - 1).abs().max())
    if worst > _PROB_SUM_ATOL:
        off = float(row_sums[(row_sums - 1).abs().argmax()])
        raise UserError(
            f"each row of {name} must sum to 1 (got a row summing to {off:.6g}); "
            "pass softmax(logits), not logits"
        )
    return probs


def _to_labels(preds: Any, name: str, num_classes: int | None) -> Tensor:
    """Turn (N, C) scores into arg-max labels, or check (N,) integer labels; returns int64 (N,)."""
    preds = _check_tensor(preds, name)
    if preds.dim() == 2:
        # argmax of logits == argmax of probabilities (softmax is monotone), so either may be passed.
        return _check_scores(preds, name, num_classes).argmax(dim=1)
    if preds.dim() == 1 and _is_integer_dtype(preds.dtype):
        if preds.numel() == 0:
            raise UserError(f"{name} is empty: metrics need at least one sample")
        if num_classes is not None:
            lo, hi = int(preds.min()), int(preds.max())
            if lo < 0 or hi >= num_classes:
                raise UserError(
                    f"{name} must hold class indices in [0, {num_classes}) for num_classes={num_classes}, "
                    f"got values in [{lo}, {hi}]"
                )
        return preds.long()
    raise UserError(
        f"{name} must be either scores of shape (N, C) (logits or probabilities) or a 1-D integer tensor "
        f"of predicted labels of shape (N,), got shape {tuple(preds.shape)} and dtype {preds.dtype}"
    )
