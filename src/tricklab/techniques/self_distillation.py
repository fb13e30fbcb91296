"""Self-distillation (born-again networks): a student of the teacher's own architecture trained on the teacher's
softened outputs.

Furlanello et al. ("Born-Again Neural Networks", ICML 2018) train a network, then train a second one of the
*same* architecture from a fresh initialisation to match the first one's output distribution, and repeat
(generation k + 1 learns from generation k); the students often end more accurate than their teachers. The loss
is the distillation loss of ``tricklab.losses.distillation`` (the functional core, shared with the
``distillation`` technique):

    L = alpha T^2 KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) CE(s, y)

with, by default, the born-again setting ``T = 1`` and ``alpha = 1`` (the teacher's distribution alone). The
teacher is a saved run folder (the previous generation) or a module; at ``fit_start`` it must have the
student's architecture (the same state-dict names and shapes), otherwise the run is refused before the first
step (a different teacher is the ``distillation`` technique). The teacher is frozen: it holds no resume state.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from torch import nn

from tricklab.compress.pruning import MASK
from tricklab.errors import ConfigError
from tricklab.techniques.distillation import Distillation
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


def architecture_difference(teacher: nn.Module, student: nn.Module) -> str | None:
    """The first difference between the state-dict layouts (names and shapes; pruning masks ignored) of two
    models, in words; None when they have the same architecture."""
    def layout(m: nn.Module) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.endswith(MASK)}

    t, s = layout(teacher), layout(student)
    for k in s:
        if k not in t:
            return f"the student has {k!r}, the teacher has not"
        if t[k] != s[k]:
            return f"{k!r} is {t[k]} in the teacher and {s[k]} in the student"
    extra = [k for k in t if k not in s]
    return f"the teacher has {extra[0]!r}, the student has not" if extra else None


@register_technique
class SelfDistillation(Distillation):
    """Born-again self-distillation: the loss against a frozen teacher of the student's own architecture."""

    name: ClassVar[str] = "self_distillation"

    def __init__(self, teacher: str | Path | nn.Module, temperature: float = 1.0, alpha: float = 1.0) -> None:
        super().__init__(teacher, temperature, alpha)

    def on_fit_start(self, state: TrainState) -> None:
        super().on_fit_start(state)
        assert self.teacher is not None
        diff = architecture_difference(self.teacher, state.raw_model)
        if diff is not None:
            raise ConfigError(f"self_distillation needs a teacher of the student's own architecture, but {diff}; "
                              f"train the teacher with the student's model and arguments, or use the "
                              f"distillation technique for a different teacher")
