"""Gradient clipping by global norm (Pascanu et al. 2013) or by value.

Norm clipping rescales all gradients by min(1, max_norm / ||g||_2) with ||g|| the norm of the concatenated
gradients, which keeps the update direction; value clipping clamps each entry to [-c, c]. Both are torch's
own (``clip_grad_norm_`` / ``clip_grad_value_``); this technique runs them at ``after_backward``, where the
gradients are complete and unscaled.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class GradClip(Technique):
    """Clip gradients by global norm (``max_norm``) and/or by value (``max_value``)."""

    name: ClassVar[str] = "grad_clip"
    # the clipping stage (after any recomputation or transform); adds grad_norm to the logged row
    writes = frozenset({"grads.clipped", "log_row"})

    def __init__(self, max_norm: float | None = 1.0, max_value: float | None = None, norm_type: float = 2.0) -> None:
        if max_norm is None and max_value is None:
            raise ValueError("grad_clip needs max_norm or max_value")
        for label, v in (("max_norm", max_norm), ("max_value", max_value)):
            if v is not None and not v > 0:
                raise ValueError(f"grad_clip {label} must be positive, got {v!r}")
        self.max_norm = max_norm
        self.max_value = max_value
        self.norm_type = float(norm_type)
        self.last_norm: float | None = None
        self._norm: torch.Tensor | None = None

    def on_after_backward(self, state: TrainState) -> None:
        params = state.params_with_grad()
        if not params:
            return
        if self.max_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.max_value)
        if self.max_norm is not None:
            # keep the total norm as a tensor: reading it would force a sync every step
            self._norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)

    def on_log(self, state: TrainState) -> None:
        if self._norm is not None:
            # read the norm only when a row is logged (one sync per row), and keep it for callers
            self.last_norm = float(self._norm)
            state.history[-1]["grad_norm"] = self.last_norm

    def state_dict(self) -> dict[str, Any]:
        return {}
