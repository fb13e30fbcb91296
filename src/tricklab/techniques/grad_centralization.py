"""Gradient centralization (Yong et al., ECCV 2020) as a trainer technique.

At ``after_backward`` (gradients complete and unscaled) every weight gradient with ndim > 1 is replaced by
g - mean(g) over all dimensions but the first (eq. 3 of the paper; ``tricklab.optim.centralize_``), so any
optimizer then steps with centralized gradients. It runs after ``mixed_precision`` (which unscales and checks
the gradients first) and before ``grad_clip`` (so the norm that is clipped is the norm of what is applied).
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.optim.centralize import centralize_
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class GradCentralization(Technique):
    """Centralize weight gradients (ndim > 1) to zero mean per output unit before the optimizer step."""

    name: ClassVar[str] = "grad_centralization"
    # the transform stage: after a check of the raw gradients (loss scaler) and a recomputation (SAM), before
    # clipping (so the norm that is clipped is the norm of what is applied)
    reads = frozenset({"skip_step"})
    writes = frozenset({"grads.transformed"})

    def on_after_backward(self, state: TrainState) -> None:
        if state.skip_step:
            return  # an overflowing fp16 step is skipped anyway
        centralize_(state.grads())
