"""Sharpness-aware minimization (Foret et al. 2021; adaptive: Kwon et al. 2021) in the trainer.

SAM needs a second forward/backward pass at the perturbed weights w + e_w, e_w = rho g / ||g|| (ASAM:
rho T_w^2 g / ||T_w g||, T_w = |w|). The technique does it at ``after_backward``, first in that event after
``mixed_precision``:

1. perturb: w <- w + e_w from the gradients at w (skipped when the step is already being skipped);
2. zero the gradients and run ``state.forward_backward()``: the ``forward`` and ``loss`` handlers apply
   again, and the new gradients (taken at w + e_w) are unscaled like the first ones;
3. with a plain optimizer, put w back now; the trainer's usual ``optimizer.step()`` then applies the base
   update with the SAM gradients. With a ``tricklab.optim.SAM`` optimizer, w stays perturbed and the
   trainer's ``optimizer.step()`` is SAM's ``second_step`` (restore, then base step).

Because the SAM gradients are in ``.grad`` when the rest of ``after_backward`` runs, gradient
centralization, clipping and the NaN guard act on the gradients the update uses. If a later technique skips
the step, ``after_step`` restores the weights a SAM optimizer still holds perturbed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from tricklab.errors import ConfigError
from tricklab.optim.sam import SAM, sam_perturbation
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class SAMTechnique(Technique):
    """Sharpness-aware minimization: a second forward/backward at w + rho g/||g|| gives the update's gradients.

    Works with any optimizer (``rho`` / ``adaptive`` from here, default 0.05 / False) or with a
    ``tricklab.optim.SAM`` optimizer (its per-group ``rho`` / ``adaptive``; then leave them unset here).
    """

    name: ClassVar[str] = "sam"
    # Reads the raw gradients (the ascent direction) and the batch; recomputes the gradients at the perturbed
    # weights (the recomputed stage: after checks of the raw gradients, before transforms, clipping and the
    # NaN guard). The second pass rewrites the outputs and the loss, updates BatchNorm statistics and draws
    # dropout masks; with a SAM optimizer it takes over the step and leaves the weights perturbed.
    reads = frozenset({"grads.raw", "params", "batch.inputs", "batch.targets", "skip_step", "accum_steps"})
    writes = frozenset({"optimizer", "grads.recomputed", "params", "batch.outputs", "loss", "norm_stats", "rng"})

    def __init__(self, rho: float | None = None, adaptive: bool | None = None) -> None:
        if rho is not None and not rho >= 0.0:
            raise ValueError(f"sam rho must be non-negative, got {rho!r}")
        self.rho = rho
        self.adaptive = adaptive

    def on_fit_start(self, state: TrainState) -> None:
        if state.accum_steps != 1:
            raise ConfigError("sam needs a second forward/backward on the same batch: it cannot be combined "
                              "with grad_accumulation")
        if isinstance(state.optimizer, SAM) and (self.rho is not None or self.adaptive is not None):
            raise ConfigError("sam: the optimizer is a SAM optimizer, which sets rho/adaptive; do not also "
                              "set them on the technique")

    def on_after_backward(self, state: TrainState) -> None:
        if state.skip_step:
            return
        opt = state.optimizer
        second_pass = state.forward_backward
        if second_pass is None:
            raise ConfigError("sam needs the trainer's second forward/backward pass (state.forward_backward)")
        if isinstance(opt, SAM):
            opt.first_step(zero_grad=True)
            second_pass()
            return  # the trainer's optimizer.step() is SAM.second_step
        params = state.params_with_grad()
        if not params:
            return
        rho = 0.05 if self.rho is None else self.rho
        with torch.no_grad():
            e_w = sam_perturbation(params, [p.grad for p in params], rho, bool(self.adaptive))
            saved = torch._foreach_mul(params, 1.0)
            torch._foreach_add_(params, e_w)
        opt.zero_grad(set_to_none=True)
        try:
            second_pass()
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, saved)  # back to w exactly; the step uses the SAM gradients

    def on_after_step(self, state: TrainState) -> None:
        opt = state.optimizer
        if isinstance(opt, SAM) and opt.pending:
            opt.restore()  # the step was skipped: do not keep training from the perturbed point

    def state_dict(self) -> dict[str, Any]:
        return {}
