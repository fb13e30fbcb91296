"""Knowledge distillation as a technique: the student trains on Hinton et al.'s loss against a fixed teacher.

At every ``loss`` event the teacher (a saved run folder, or any ``nn.Module``) runs on the batch the student saw,
without gradients and in evaluation mode, and the task loss is replaced by (``tricklab.losses.distillation``)

    L = alpha T^2 KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) CE(s, y)

(Hinton, Vinyals & Dean 2015). A teacher run of the student's own architecture gives self-distillation
(born-again networks, Furlanello et al. 2018). The teacher is fixed: it holds no resume state.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from tricklab.compress.distill import load_teacher
from tricklab.errors import ConfigError
from tricklab.losses.distillation import distillation_loss
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class Distillation(Technique):
    """Replace the loss by the distillation loss against a teacher (a saved run folder or a module)."""

    name: ClassVar[str] = "distillation"
    reads = frozenset({"batch.inputs", "batch.outputs", "batch.targets"})
    writes = frozenset({"loss_fn"})

    def __init__(self, teacher: str | Path | nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> None:
        if not isinstance(teacher, (str, Path, nn.Module)):
            raise ConfigError(f"{self.name} teacher must be a run folder (recipe.yaml + model.safetensors) or an "
                              f"nn.Module, got {type(teacher).__name__}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ConfigError(f"{self.name} temperature must be a positive number, got {temperature!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"{self.name} alpha (weight of the soft term) must be in [0, 1], got {alpha!r}")
        self.teacher_source = teacher
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.teacher: nn.Module | None = teacher if isinstance(teacher, nn.Module) else None

    def on_fit_start(self, state: TrainState) -> None:
        if self.teacher is None:
            self.teacher = load_teacher(self.teacher_source)  # type: ignore[arg-type]
        self.teacher.to(state.device).eval()

    def on_loss(self, state: TrainState) -> None:
        assert self.teacher is not None
        with torch.no_grad():
            teacher_logits = self.teacher(state.inputs)
        state.loss = distillation_loss(state.outputs, teacher_logits.to(state.outputs.dtype), state.targets,
                                       self.temperature, self.alpha)
