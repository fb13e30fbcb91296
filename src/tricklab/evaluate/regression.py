"""Regression metrics: MSE, RMSE, MAE and the coefficient of determination R^2.

Predictions and targets are ``(N,)`` or ``(N, D)`` float tensors of one shape (a ``(N, 1)`` prediction is
accepted for ``(N,)`` targets). Everything is computed in float64. With several outputs each metric is the
unweighted mean over the outputs, as ``multioutput="uniform_average"`` in scikit-learn; RMSE is the square
root of that mean MSE.

Optional ``scale`` / ``shift`` undo a standardisation of the targets (``y = z * scale + shift``) before the
metrics are computed, so they are reported in the target's own units whatever the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from tricklab.errors import UserError

__all__ = ["match_shapes", "r2_score", "regression_metrics"]


def match_shapes(preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``preds`` shaped like ``targets``: a ``(N, 1)`` output against ``(N,)`` targets is squeezed.

    Raises UserError when the shapes cannot be matched (a model with the wrong number of outputs).
    """
    if preds.dim() == targets.dim() + 1 and preds.shape[-1] == 1:
        preds = preds.squeeze(-1)
    if preds.shape != targets.shape:
        raise UserError(f"regression: predictions of shape {tuple(preds.shape)} do not match targets of shape "
                        f"{tuple(targets.shape)}; the model needs one output per target column")
    return preds, targets


def _prepare(preds: Tensor, targets: Tensor, scale: Sequence[float] | None,
             shift: Sequence[float] | None) -> tuple[Tensor, Tensor]:
    if not isinstance(preds, Tensor) or not isinstance(targets, Tensor):
        raise UserError("regression metrics take tensors of predictions and targets")
    preds, targets = match_shapes(preds.detach().to(torch.float64).cpu(), targets.detach().to(torch.float64).cpu())
    if targets.numel() == 0:
        raise UserError("regression metrics need at least one sample")
    if scale is not None:
        s = torch.as_tensor(list(scale), dtype=torch.float64)
        b = torch.as_tensor(list(shift) if shift is not None else [0.0] * len(s), dtype=torch.float64)
        if targets.dim() == 1:  # one output: scale/shift are one-element lists
            s, b = s.reshape(()), b.reshape(())
        preds, targets = preds * s + b, targets * s + b
    # (N, D) from here: one column per output
    return preds.reshape(len(preds), -1), targets.reshape(len(targets), -1)


def r2_score(preds: Tensor, targets: Tensor) -> float:
    """Coefficient of determination, ``R^2 = 1 - SS_res / SS_tot`` per output, averaged over outputs.

    ``SS_res = sum_i (y_i - yhat_i)^2``, ``SS_tot = sum_i (y_i - mean(y))^2``. An output with constant
    targets (``SS_tot = 0``) scores 1.0 when predicted exactly and 0.0 otherwise, as scikit-learn's
    ``r2_score`` (``force_finite=True``).
    """
    p, y = _prepare(preds, targets, None, None)
    return _r2(p, y)


def _r2(p: Tensor, y: Tensor) -> float:
    ss_res = ((y - p) ** 2).sum(dim=0)
    ss_tot = ((y - y.mean(dim=0)) ** 2).sum(dim=0)
    per = torch.where(ss_tot > 0, 1 - ss_res / ss_tot.clamp_min(1e-300),
                      torch.where(ss_res == 0, torch.ones_like(ss_res), torch.zeros_like(ss_res)))
    return float(per.mean())


def regression_metrics(preds: Tensor, targets: Tensor, scale: Sequence[float] | None = None,
                       shift: Sequence[float] | None = None) -> dict[str, Any]:
    """``mse``, ``rmse``, ``mae`` and ``r2`` (plus ``per_output_mse`` with several outputs) as Python floats.

    ``MSE = mean_i,d (y - yhat)^2``, ``MAE = mean_i,d |y - yhat|``, ``RMSE = sqrt(MSE)``; equal to
    scikit-learn's ``mean_squared_error``, ``mean_absolute_error`` and ``r2_score`` (uniform average).
    """
    p, y = _prepare(preds, targets, scale, shift)
    err = y - p
    per_mse = (err ** 2).mean(dim=0)
    mse = float(per_mse.mean())
    out: dict[str, Any] = {"mse": mse, "rmse": math.sqrt(mse), "mae": float(err.abs().mean()), "r2": _r2(p, y)}
    if y.shape[1] > 1:
        out["per_output_mse"] = [float(v) for v in per_mse]
    return out
