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
    """What a technique sees at each event (see ``tricklab.train.events`` for the per-event contract)."""

    model: nn.Module  # the model being trained (DDP-wrapped under multi-process training)
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    run_dir: Path | None = None
    rank: int = 0
    world_size: int = 1

    # counters
    step: int = 0  # optimizer steps completed (skipped steps included: they consumed a batch)
    micro_step: int = 0  # micro-batches processed
    epoch: int = 0
    max_steps: int | None = None
    max_epochs: int | None = None
    max_seconds: float | None = None

    # the current batch and its results
    inputs: Any = None
    targets: Any = None
    outputs: Any = None
    loss: torch.Tensor | None = None

    # knobs techniques set
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    grad_scale: float = 1.0  # loss multiplier before backward (dynamic loss scaling)
    skip_step: bool = False  # set before the step to skip it (non-finite gradients)
    should_stop: bool = False
    stop_reason: str | None = None

    # results
    eval_metrics: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0  # wall time spent in training steps (evaluation excluded)
    counters: dict[str, int] = field(default_factory=dict)  # e.g. skipped non-finite steps
    extras: dict[str, Any] = field(default_factory=dict)  # free-form, not checkpointed

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
