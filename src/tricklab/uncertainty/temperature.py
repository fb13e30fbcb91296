"""Post-hoc calibration by scaling the logits (Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
Networks", ICML 2017, arXiv:1706.04599, section 4.2), fitted on a held-out split by minimising its NLL.

* **Temperature scaling**: ``q = softmax(z / T)``, one scalar ``T > 0`` (parameterised as ``T = exp(t)``).
  Dividing by a positive scalar keeps the order of the logits, so the arg-max and hence the accuracy are
  unchanged (the predictions of :meth:`TemperatureScaler.predict` are taken from the unscaled logits, so this
  holds exactly even where rounding would make two scaled logits tie).
* **Vector scaling**: ``q = softmax(w * z + b)``, ``w, b`` in R^C (may change predictions).
* **Matrix scaling**: ``q = softmax(W z + b)``, ``W`` in R^{C x C} (may change predictions; ``C^2 + C``
  parameters overfit small held-out sets: an L2 penalty pulls ``W`` toward the identity and ``b`` toward 0).

All are fitted with L-BFGS (strong Wolfe line search) on the mean NLL of the held-out logits, in float64, from
the identity map, so the fitted held-out NLL is never above the unscaled one (the line search only accepts
steps that decrease the objective; the fit falls back to the identity if it ever ends worse).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import UserError

__all__ = ["MatrixScaler", "TemperatureScaler", "VectorScaler", "fit_scaler", "fit_temperature"]


def _check(logits: object, targets: object) -> tuple[Tensor, Tensor]:
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.dtype.is_floating_point:
        raise UserError(f"logits must be a floating (N, C) tensor, got {getattr(logits, 'shape', type(logits))}")
    if not isinstance(targets, Tensor) or targets.ndim != 1 or targets.shape[0] != logits.shape[0] or \
            targets.dtype.is_floating_point:
        raise UserError(f"targets must be (N,) class indices matching the logits' N={logits.shape[0]}, got "
                        f"{getattr(targets, 'shape', type(targets))}")
    if logits.shape[0] == 0:
        raise UserError("cannot fit a calibration map on an empty held-out set")
    if not torch.isfinite(logits).all():
        raise UserError("logits contain NaN or inf; calibrate a model whose outputs are finite")
    c = logits.shape[1]
    if int(targets.min()) < 0 or int(targets.max()) >= c:
        raise UserError(f"targets must lie in [0, {c - 1}], got range [{int(targets.min())}, {int(targets.max())}]")
    return logits.detach().to(torch.float64), targets.detach().long()


class _Scaler(nn.Module):
    """Common fitting and prediction of the logit-scaling maps."""

    def penalty(self) -> Tensor:
        return torch.zeros((), dtype=torch.float64)

    def fit(self, logits: Tensor, targets: Tensor, max_iter: int = 100) -> _Scaler:
        """Fit on held-out ``logits`` (N, C) and ``targets`` (N,); returns ``self``."""
        fit_scaler(self, logits, targets, max_iter=max_iter)
        return self

    @torch.no_grad()
    def calibrated_probs(self, logits: Tensor) -> Tensor:
        """``softmax(self(logits))`` (N, C)."""
        return torch.softmax(self(logits.to(torch.float64)), -1)

    @torch.no_grad()
    def predict(self, logits: Tensor) -> Tensor:
        """Predicted classes (N,) after calibration."""
        return self(logits.to(torch.float64)).argmax(-1)


class TemperatureScaler(_Scaler):
    """``z / T`` with ``T = exp(log_t)`` > 0 (Guo et al. 2017)."""

    def __init__(self) -> None:
        super().__init__()
        self.log_t = nn.Parameter(torch.zeros((), dtype=torch.float64))

    @property
    def temperature(self) -> float:
        return float(self.log_t.detach().exp())

    def forward(self, logits: Tensor) -> Tensor:
        return logits / self.log_t.exp().to(logits.dtype)

    @torch.no_grad()
    def predict(self, logits: Tensor) -> Tensor:
        # the arg-max of z / T is the arg-max of z for T > 0; reading it off z keeps accuracy exactly unchanged
        return logits.argmax(-1)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4f}"


class VectorScaler(_Scaler):
    """``w * z + b`` per class (Guo et al. 2017, section 4.2)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise UserError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.w = nn.Parameter(torch.ones(num_classes, dtype=torch.float64))
        self.b = nn.Parameter(torch.zeros(num_classes, dtype=torch.float64))

    def forward(self, logits: Tensor) -> Tensor:
        return logits * self.w.to(logits.dtype) + self.b.to(logits.dtype)


class MatrixScaler(_Scaler):
    """``W z + b`` (Guo et al. 2017, section 4.2), with an optional penalty
    ``l2 * (||W - I||_F^2 + ||b||^2)`` on the held-out NLL against overfitting."""

    def __init__(self, num_classes: int, l2: float = 0.0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise UserError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not (isinstance(l2, (int, float)) and l2 >= 0 and math.isfinite(l2)):
            raise UserError(f"matrix scaling l2 must be a non-negative number, got {l2!r}")
        self.l2 = float(l2)
        self.weight = nn.Parameter(torch.eye(num_classes, dtype=torch.float64))
        self.bias = nn.Parameter(torch.zeros(num_classes, dtype=torch.float64))

    def forward(self, logits: Tensor) -> Tensor:
        return F.linear(logits, self.weight.to(logits.dtype), self.bias.to(logits.dtype))

    def penalty(self) -> Tensor:
        eye = torch.eye(self.weight.shape[0], dtype=torch.float64)
        return self.l2 * (((self.weight - eye) ** 2).sum() + (self.bias**2).sum())


def fit_scaler(scaler: _Scaler, logits: Tensor, targets: Tensor, max_iter: int = 100) -> dict[str, float]:
    """Minimise ``mean NLL(softmax(scaler(logits)), targets) + penalty`` with L-BFGS from the scaler's current
    (identity) parameters. Returns ``{"nll_before", "nll_after"}`` on the held-out set (penalty excluded)."""
    z, y = _check(logits, targets)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise UserError(f"max_iter must be a positive int, got {max_iter!r}")
    params = [p for p in scaler.parameters()]
    start = [p.detach().clone() for p in params]
    with torch.no_grad():
        before = float(F.cross_entropy(scaler(z), y))
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(scaler(z), y) + scaler.penalty()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        after = float(F.cross_entropy(scaler(z), y))
        objective_before = before + float(_penalty_at(scaler, start))
        if not math.isfinite(after) or after + float(scaler.penalty()) > objective_before:
            for p, s in zip(params, start):  # never leave a map worse than the one we started from
                p.copy_(s)
            after = before
    return {"nll_before": before, "nll_after": after}


def _penalty_at(scaler: _Scaler, values: list[Tensor]) -> Tensor:
    params = list(scaler.parameters())
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
        out = scaler.penalty()
        for p, v in zip(params, saved):
            p.copy_(v)
    return out


def fit_temperature(logits: Tensor, targets: Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the held-out NLL of ``softmax(logits / T)``."""
    return TemperatureScaler().fit(logits, targets, max_iter).temperature
