"""L1 / L2 weight penalty added to the loss: ``l1 * sum |w| + l2 / 2 * sum w^2``.

Its gradient is ``l1 * sign(w) + l2 * w`` on top of the data gradient. The L2 part is the classic weight decay
(Krogh & Hertz, "A Simple Weight Decay Can Improve Generalization", NIPS 1991) *as a loss term*: with SGD it
equals decoupled weight decay, but with adaptive optimizers (Adam) it is rescaled per parameter and differs from
AdamW's decoupled decay (Loshchilov & Hutter, ICLR 2019). The L1 part (Tibshirani 1996, the lasso) pulls
every weight toward 0 by the same amount whatever its size, so small weights end at 0: a sparse model.

By default biases and normalisation parameters are left out: they set offsets and scales, not the capacity the
penalty is meant to limit, and shrinking a norm's gain toward 0 only fights the next layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import nn

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

#: torch's normalisation modules, whose parameters (affine scale and shift) are excluded by default.
NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.InstanceNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm,
)


def penalized_parameters(model: nn.Module, exclude_bias_and_norm: bool = True) -> list[nn.Parameter]:
    """The trainable parameters the penalty applies to.

    With ``exclude_bias_and_norm`` a parameter is skipped when it is named ``bias``, belongs to a torch norm
    module, or is 1-D (biases and per-channel scales of custom norm layers are 1-D; weights are >= 2-D).
    """
    out: list[nn.Parameter] = []
    seen: set[int] = set()  # tied weights count once
    for module in model.modules():
        is_norm = isinstance(module, NORM_MODULES)
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if exclude_bias_and_norm and (is_norm or pname == "bias" or pname.endswith("_bias") or p.ndim <= 1):
                continue
            out.append(p)
    return out


def weight_penalty(params: Iterable[torch.Tensor], l1: float = 0.0, l2: float = 0.0) -> torch.Tensor:
    """``l1 * sum_w |w| + l2 / 2 * sum_w w^2`` over ``params`` (a scalar tensor; 0 when there are none).

    The 1/2 makes the L2 gradient exactly ``l2 * w`` (the usual weight-decay coefficient).
    """
    _check_coef("l1", l1)
    _check_coef("l2", l2)
    params = list(params)
    if not params:
        return torch.zeros(())
    total = params[0].new_zeros(())
    for p in params:
        if l1:
            total = total + l1 * p.abs().sum()
        if l2:
            total = total + (0.5 * l2) * p.pow(2).sum()
    return total


def _check_coef(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"weight_penalty {name} must be a number >= 0, got {value!r}")
    return float(value)


@register_technique
class WeightPenalty(Technique):
    """Adds l1 * sum |w| + l2 / 2 * sum w^2 over the weights to the loss (biases and norms excluded by default)."""

    name: ClassVar[str] = "weight_penalty"
    reads = frozenset({"params"})
    # adds a term to the loss: the loss pipeline (loss_fn -> loss) runs it after any technique that replaces
    # the loss function, so the penalty is added to the final data loss
    writes = frozenset({"loss"})

    def __init__(self, l1: float = 0.0, l2: float = 0.0, exclude_bias_and_norm: bool = True) -> None:
        self.l1 = _check_coef("l1", l1)
        self.l2 = _check_coef("l2", l2)
        self.exclude_bias_and_norm = bool(exclude_bias_and_norm)

    def on_loss(self, state: TrainState) -> None:
        if not (self.l1 or self.l2):
            return
        params = penalized_parameters(state.raw_model, self.exclude_bias_and_norm)
        if params:
            # backward scales state.loss by 1/accum_steps per micro-batch, so the penalty is counted once per step
            state.loss = state.loss + weight_penalty(params, self.l1, self.l2).to(state.loss.dtype)

    def __repr__(self) -> str:
        return f"WeightPenalty(l1={self.l1}, l2={self.l2}, exclude_bias_and_norm={self.exclude_bias_and_norm})"
