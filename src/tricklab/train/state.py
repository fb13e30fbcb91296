"""The mutable state the trainer and its techniques share during ``fit``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class TrainState:
    """What a technique sees at each event (see ``tricklab.train.events`` for the per-event contract).

    Which slot of the contract each field belongs to is in ``tricklab.train.events.SLOT_TABLE``; fields no
    slot names (counters of the loop, the budget, the device, the services) are the trainer's alone.
    """

    model: nn.Module  # the model being trained (DDP-wrapped under multi-process training)
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    run_dir: Path | None = None
    rank: int = 0
    world_size: int = 1

    # counters and budget (the trainer's)
    step: int = 0  # optimizer steps completed (skipped steps included: they consumed a batch)
    micro_step: int = 0  # micro-batches processed
    epoch: int = 0
    max_steps: int | None = None
    max_epochs: int | None = None
    max_seconds: float | None = None
    batches_per_epoch: int | None = None  # micro-batches per epoch (len of the training loader)

    # the current batch and its results (slots batch.*, loss_fn / loss)
    inputs: Any = None
    targets: Any = None
    outputs: Any = None
    loss: torch.Tensor | None = None

    # knobs techniques set
    accum_steps: int = 1  # slot accum_steps: micro-batches per optimizer step (gradient accumulation)
    grad_scale: float = 1.0  # slot loss_scale: loss multiplier before backward (dynamic loss scaling)
    skip_step: bool = False  # slot skip_step: set before the step to skip it (non-finite gradients)
    should_stop: bool = False  # slot stop, with stop_reason
    stop_reason: str | None = None

    # results
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0  # wall time spent in training steps (evaluation excluded)
    counters: dict[str, int] = field(default_factory=dict)  # e.g. skipped non-finite steps
    resumed_from: str | None = None  # the checkpoint file this run resumed from (set before checkpoint_load)

    # services the trainer provides (None outside a Trainer, e.g. in a hand-built state)
    #: runs forward, loss and backward again on the current batch; gradients accumulate into .grad and are
    #: unscaled like the ones after_backward sees; returns the detached loss (SAM's second pass)
    forward_backward: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    #: everything needed to resume exactly (what a checkpoint holds), consistent at checkpoint_save
    snapshot: Callable[[], dict[str, Any]] | None = field(default=None, repr=False)
    #: up to n training input batches (all when None) in a fixed order, read without moving the loader
    #: (SWA recomputes BatchNorm statistics on them)
    train_batches: Callable[[int | None], list[torch.Tensor]] | None = field(default=None, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def raw_model(self) -> nn.Module:
        """The model without a DistributedDataParallel wrapper."""
        return self.model.module if hasattr(self.model, "module") and isinstance(
            self.model, nn.parallel.DistributedDataParallel
        ) else self.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def at_accumulation_boundary(self) -> bool:
        return self.micro_step % self.accum_steps == 0

    def params_with_grad(self) -> list[torch.Tensor]:
        """The optimizer's parameters that have a gradient, in param-group order."""
        return [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]

    def grads(self) -> list[torch.Tensor]:
        """The gradients of :meth:`params_with_grad` (the tensors in ``.grad``, not copies)."""
        return [p.grad for p in self.params_with_grad()]

    def planned_steps(self) -> int | None:
        """Optimizer steps the budget allows: ``max_steps``, else ``max_epochs`` x batches per epoch /
        ``accum_steps``; None for a wall-clock budget. Read it once the owner of ``accum_steps`` has set it
        (its fit_start)."""
        if self.max_steps is not None:
            return self.max_steps
        if self.max_epochs is not None and self.batches_per_epoch is not None:
            return self.max_epochs * self.batches_per_epoch // self.accum_steps
        return None
