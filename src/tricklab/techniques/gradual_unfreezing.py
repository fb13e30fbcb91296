"""Gradual unfreezing (ULMFiT): fine-tune the top layer group first, then unfreeze one more group at a time.

Howard & Ruder, "Universal Language Model Fine-tuning for Text Classification", ACL 2018, sec. 3.3: "we first
unfreeze the last layer and fine-tune all unfrozen layers for one epoch. We then unfreeze the next lower frozen
layer and repeat, until we fine-tune all layers until convergence at the last iteration." With G layer groups
``g_1 .. g_G`` (input side first), during epoch ``e`` (0-based) the trainable groups are the last
``min(G, e + 1)`` ones: ``g_{G-e} .. g_G``; from epoch ``G - 1`` on the whole network trains. ``every_steps``
counts optimizer steps instead of epochs (stage ``floor(step / every_steps)``), for runs budgeted in steps.

Freezing sets ``requires_grad = False``: a frozen parameter gets no gradient, so the optimizer leaves it alone
(AdamW applies no weight decay to a parameter without a gradient). Only parameters that were trainable when
training started are ever unfrozen (a LoRA or adapter model keeps its frozen base). Build the optimizer over all
parameters (as usual); pair with ``discriminative_param_groups`` (:mod:`tricklab.transfer.finetune`) for ULMFiT's
per-group learning rates.

The stage is a pure function of the epoch or step, applied at the start of every batch, so a resumed run freezes
exactly what the uninterrupted one did (nothing to save).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from torch import nn

from tricklab.errors import ConfigError
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["GradualUnfreezing", "apply_unfreezing_", "default_layer_groups", "unfrozen_groups"]


def unfrozen_groups(stage: int, num_groups: int) -> int:
    """How many groups (from the output side) train at ``stage`` (0-based): ``min(G, stage + 1)``."""
    if num_groups < 1:
        raise ConfigError("gradual unfreezing needs at least one layer group")
    return min(num_groups, max(stage, 0) + 1)


def default_layer_groups(model: nn.Module) -> list[list[str]]:
    """One group per top-level child that owns parameters, input side first (``nn.Sequential``'s order); the
    model's own parameters (not in a child) join the first group; a model without children is one group."""
    groups = [[f"{name}."] for name, child in model.named_children() if any(True for _ in child.parameters())]
    own = [name for name, _ in model.named_parameters(recurse=False)]
    if not groups:
        return [own or [""]]
    groups[0] = own + groups[0]
    return groups


def apply_unfreezing_(model: nn.Module, groups: Sequence[Sequence[str]], count: int,
                      eligible: set[str] | None = None) -> list[str]:
    """Make the parameters of the last ``count`` groups trainable and those of the others frozen; parameters not
    in ``eligible`` (default: all) are left as they are. Returns the names of the trainable parameters. Every
    eligible parameter must match one group's prefixes (name it in a group)."""
    trainable = []
    for name, p in model.named_parameters():
        if eligible is not None and name not in eligible:
            continue
        hit = [g for g, prefixes in enumerate(groups) if name.startswith(tuple(prefixes))]
        if not hit:
            raise ConfigError(f"gradual unfreezing: parameter {name!r} is in no group; add its prefix to one of "
                              f"{[list(g) for g in groups]}")
        on = hit[-1] >= len(groups) - count
        p.requires_grad_(on)
        if on:
            trainable.append(name)
    return trainable


@register_technique
class GradualUnfreezing(Technique):
    """Unfreeze one more layer group (from the output side) every epoch, or every ``every_steps`` steps."""

    name: ClassVar[str] = "gradual_unfreezing"
    reads = frozenset()
    writes = frozenset({"model.structure"})  # which parameters require a gradient

    def __init__(self, groups: Sequence[str | Sequence[str]] | None = None, every_steps: int | None = None) -> None:
        if groups is not None:
            if isinstance(groups, str) or not groups:
                raise ConfigError(f"gradual_unfreezing groups must be a list of name prefixes (or lists of them), "
                                  f"input side first, got {groups!r}")
            groups = [[g] if isinstance(g, str) else list(g) for g in groups]
        if every_steps is not None and (isinstance(every_steps, bool) or not isinstance(every_steps, int)
                                        or every_steps < 1):
            raise ConfigError(f"gradual_unfreezing every_steps must be None (per epoch) or an integer >= 1, got "
                              f"{every_steps!r}")
        self.groups: list[list[str]] | None = groups
        self.every_steps = every_steps
        self.eligible: set[str] = set()

    def on_fit_start(self, state: TrainState) -> None:
        model = state.raw_model
        self.eligible = {n for n, p in model.named_parameters() if p.requires_grad}
        if self.groups is None:
            self.groups = default_layer_groups(model)
        self.apply(state)

    def stage(self, state: TrainState) -> int:
        return state.epoch if self.every_steps is None else state.step // self.every_steps

    def apply(self, state: TrainState) -> list[str]:
        assert self.groups is not None
        count = unfrozen_groups(self.stage(state), len(self.groups))
        return apply_unfreezing_(state.raw_model, self.groups, count, self.eligible)

    def on_batch_start(self, state: TrainState) -> None:
        self.apply(state)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
