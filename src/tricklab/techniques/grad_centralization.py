"""Gradient centralization (Yong et al., ECCV 2020) as a trainer technique.

At ``after_backward`` (gradients complete and unscaled) every weight gradient with ndim > 1 is replaced by
g - mean(g) over all dimensions but the first (eq. 3 of the paper; ``tricklab.optim.centralize_``), so any
optimizer then steps with centralized gradients. It runs after ``mixed_precision`` (which unscales and checks
the gradients first) and before ``grad_clip`` (so the norm that is clipped is the norm of what is applied).
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.optim.centralize import centralize_
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


class GradCentralization(Technique):
    """Centralize weight gradients (ndim > 1) to zero mean per output unit before the optimizer step."""

    name: ClassVar[str] = "grad_centralization"
    reads = frozenset({"grads"})
    writes = frozenset({"grads"})
    after = frozenset({"mixed_precision"})
    before = frozenset({"grad_clip"})

    def on_after_backward(self, state: TrainState) -> None:
        if state.skip_step:
            return  # an overflowing fp16 step is skipped anyway
        centralize_([p.grad for g in state.optimizer.param_groups for p in g["params"]])
