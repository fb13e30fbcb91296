"""Exponential moving average of the weights (Polyak averaging), used for evaluation.

theta_ema <- d * theta_ema + (1 - d) * theta after each optimizer step. With ``warmup`` the decay is
min(d, (1 + n) / (10 + n)) after n updates, so early averages are not dominated by the random init
(the schedule of TensorFlow's ExponentialMovingAverage with num_updates). Buffers (BatchNorm statistics) are
copied, not averaged. Evaluation swaps the averaged weights in at ``eval_start`` and back at ``eval_end``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@torch.no_grad()
def ema_update_(averages: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    """In place: avg <- decay * avg + (1 - decay) * param, for every pair (one fused foreach op)."""
    if not averages:
        return
    # lerp(avg, p, w) = avg + w (p - avg) = (1 - w) avg + w p with w = 1 - decay
    torch._foreach_lerp_(averages, [p.detach() for p in params], 1.0 - decay)


def ema_decay(decay: float, num_updates: int, warmup: bool) -> float:
    """Effective decay after ``num_updates`` updates."""
    return min(decay, (1.0 + num_updates) / (10.0 + num_updates)) if warmup else decay


def _float_params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.dtype.is_floating_point]


@register_technique
class EMA(Technique):
    """Keep an exponential moving average of the weights; evaluate with it."""

    name: ClassVar[str] = "ema"
    reads = frozenset({"params", "skip_step"})
    writes = frozenset({"eval_weights"})  # swaps the average in at eval_start and the trained weights back

    def __init__(self, decay: float = 0.999, warmup: bool = True, every: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay!r}")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"ema every must be a positive integer, got {every!r}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.every = every
        self.num_updates = 0
        self.shadow: list[torch.Tensor] = []
        self._backup: list[torch.Tensor] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.shadow = [p.detach().clone() for p in _float_params(state.raw_model)]
        self.num_updates = 0

    def on_after_step(self, state: TrainState) -> None:
        if state.skip_step or state.step % self.every:
            return
        ema_update_(self.shadow, _float_params(state.raw_model), ema_decay(self.decay, self.num_updates, self.warmup))
        self.num_updates += 1

    @torch.no_grad()
    def on_eval_start(self, state: TrainState) -> None:
        params = _float_params(state.raw_model)
        self._backup = [p.detach().clone() for p in params]
        torch._foreach_copy_(params, self.shadow)

    @torch.no_grad()
    def on_eval_end(self, state: TrainState) -> None:
        if self._backup is not None:
            torch._foreach_copy_(_float_params(state.raw_model), self._backup)
            self._backup = None

    def averaged_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict with the averaged parameters in place of the trained ones."""
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        names = [n for n, p in model.named_parameters() if p.dtype.is_floating_point]
        for n, avg in zip(names, self.shadow):
            sd[n] = avg.detach().clone()
        return sd

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "shadow": list(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
        if not self.shadow:
            # not set up by fit_start yet (a fresh instance, e.g. loading averaged weights for evaluation)
            self.shadow = [t.detach().clone() for t in state["shadow"]]
            return
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"ema state has {len(state['shadow'])} tensors, the model has {len(self.shadow)}")
        with torch.no_grad():
            for dst, src in zip(self.shadow, state["shadow"]):
                dst.copy_(src)
