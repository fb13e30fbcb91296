"""Gradual magnitude pruning during training on Zhu & Gupta's cubic schedule ("To prune, or not to prune",
arXiv:1710.01878, 2017).

At step ``t`` in {t0, t0 + dt, ..., t_end} the weights of every linear / convolution layer are pruned by magnitude
to ``s_t = s_f + (s_i - s_f)(1 - (t - t0)/(t_end - t0))^3`` (eq. 1), globally or layer by layer; between pruning
steps the masks stay and the pruned weights are set back to zero after every optimizer step (the step's
momentum may have moved them). The masks are the layers' ``weight_mask`` buffers (``tricklab.compress.pruning``):
they are saved with the model in every checkpoint, so a resumed run continues with the same masks.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from tricklab.compress.pruning import (
    MASK,
    apply_masks_,
    check_sparsity,
    magnitude_masks,
    prunable_layers,
    reapply_masks_,
    zhu_gupta_sparsity,
)
from tricklab.errors import ConfigError
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


def _check_step(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"gradual_pruning {name} must be an integer >= {minimum}, got {value!r}")
    return value


@register_technique
class GradualPruning(Technique):
    """Prune linear/conv weights by magnitude on Zhu & Gupta's cubic sparsity schedule; masks are model buffers."""

    name: ClassVar[str] = "gradual_pruning"
    reads = frozenset({"params"})
    # params: pruned weights are zeroed after each step; norm_stats: the masks are model buffers (weight_mask),
    # registered at fit_start and updated at pruning steps; log_row: the current sparsity
    writes = frozenset({"params", "norm_stats", "log_row"})

    def __init__(self, final_sparsity: float = 0.9, start_step: int = 0, end_step: int = 1000, every: int = 100,
                 initial_sparsity: float = 0.0, scope: str = "global",
                 exclude: list[str] | tuple[str, ...] = ()) -> None:
        # exclude is annotated as a list (not Sequence) so that a recipe's YAML list is accepted
        self.final_sparsity = check_sparsity("gradual_pruning final_sparsity", final_sparsity)
        self.initial_sparsity = check_sparsity("gradual_pruning initial_sparsity", initial_sparsity)
        if self.initial_sparsity > self.final_sparsity:
            raise ConfigError(f"gradual_pruning initial_sparsity {initial_sparsity} exceeds final_sparsity "
                              f"{final_sparsity}; the schedule only prunes more over time")
        self.start_step = _check_step("start_step", start_step, 0)
        self.end_step = _check_step("end_step", end_step, self.start_step + 1)
        self.every = _check_step("every", every, 1)
        if scope not in ("global", "layer"):
            raise ConfigError(f"gradual_pruning scope must be 'global' or 'layer', got {scope!r}")
        self.scope = scope
        if isinstance(exclude, str):
            exclude = [exclude]
        self.exclude = tuple(exclude)

    def target(self, step: int) -> float:
        """The sparsity the schedule asks for after ``step`` optimizer steps (held between pruning steps)."""
        if step < self.start_step:
            return 0.0
        if step >= self.end_step:
            last = self.end_step
        else:  # the last pruning step at or before ``step``
            last = self.start_step + (step - self.start_step) // self.every * self.every
        return zhu_gupta_sparsity(last, self.final_sparsity, self.start_step, self.end_step, self.initial_sparsity)

    def is_pruning_step(self, step: int) -> bool:
        return self.start_step <= step <= self.end_step and (
            (step - self.start_step) % self.every == 0 or step == self.end_step)

    @torch.no_grad()
    def on_fit_start(self, state: TrainState) -> None:
        layers = prunable_layers(state.raw_model, self.exclude)
        # all-ones masks where none exist yet (a model pruned before keeps its masks; a resumed run then loads them)
        fresh = {n: torch.ones_like(m.weight, dtype=torch.bool) for n, m in layers.items()
                 if not isinstance(getattr(m, MASK, None), torch.Tensor)}
        if fresh:
            apply_masks_(state.raw_model, fresh)

    @torch.no_grad()
    def on_after_step(self, state: TrainState) -> None:
        model = state.raw_model
        reapply_masks_(model)
        if self.is_pruning_step(state.step):
            layers = prunable_layers(model, self.exclude)
            weights = {n: m.weight for n, m in layers.items()}
            apply_masks_(model, magnitude_masks(weights, self.target(state.step), self.scope))

    def on_log(self, state: TrainState) -> None:
        state.history[-1]["sparsity"] = self.target(state.step)
