"""Mean teacher (Tarvainen & Valpola 2017): a consistency cost between the student and an EMA of its weights.

Tarvainen & Valpola, "Mean teachers are better role models", NeurIPS 2017, sec. 2: the teacher's weights are an
exponential moving average ``theta'_t = alpha theta'_{t-1} + (1 - alpha) theta_t`` (eq. 1) of the student's; the
consistency cost ``J = E ||f(x, theta', eta') - f(x, theta, eta)||^2`` on softmax outputs under different noise
``eta, eta'`` is added to the classification cost, with weight ramped up by ``exp(-5 (1 - t/T)^2)`` (Laine & Aila
2017, used by the paper). The squared difference is summed over classes and divided by their number, averaged
over the batch (the reference code's ``softmax_mse_loss / num_classes``).

Here the student's output is the trainer's ``state.outputs`` (on the inputs after every input technique); the
teacher gets its own weak view (flip/shift, from this technique's generator) and runs in training mode (its own
dropout noise) on a copy of the student's buffers, so nothing of the student changes. It applies to every example
(labelled or not), as in the paper; targets ``-100`` mark unlabelled ones for the task loss. Evaluation uses the
student (put ``ema`` beside it to evaluate averaged weights).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.func import functional_call

from tricklab.techniques._seeded import SeededTechnique
from tricklab.techniques.ema import ema_update_
from tricklab.techniques.pseudo_label import unlabelled_mask
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.data.views import weak_view

__all__ = ["MeanTeacher", "consistency_mse", "sigmoid_rampup"]


def consistency_mse(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``mean_b sum_c (softmax(s)_bc - softmax(t)_bc)^2 / C``; the teacher side is a constant."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs "
                         f"{tuple(teacher_logits.shape)}")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    diff = student_logits.softmax(-1) - teacher_logits.detach().softmax(-1)
    return diff.pow(2).sum(-1).mean() / student_logits.shape[-1]


def sigmoid_rampup(step: int, length: int) -> float:
    """``exp(-5 (1 - t/T)^2)`` for ``t < T``, then 1 (Laine & Aila 2017)."""
    if length <= 0 or step >= length:
        return 1.0
    return math.exp(-5.0 * (1.0 - max(step, 0) / length) ** 2)


@register_technique
class MeanTeacher(SeededTechnique):
    """Add the consistency cost between the student's and the EMA teacher's softmax outputs."""

    name: ClassVar[str] = "mean_teacher"
    reads = frozenset({"batch.inputs", "batch.outputs", "batch.targets", "params", "skip_step"})
    writes = frozenset({"loss", "rng"})  # the teacher's forward draws its dropout noise from the global RNG

    def __init__(self, weight: float = 1.0, decay: float = 0.99, rampup_steps: int = 0, on: str = "all",
                 seed: int = 0) -> None:
        super().__init__(seed)
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ValueError(f"mean_teacher weight must be a number >= 0, got {weight!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"mean_teacher decay must be in (0, 1), got {decay!r}")
        if not (isinstance(rampup_steps, int) and rampup_steps >= 0):
            raise ValueError(f"mean_teacher rampup_steps must be an integer >= 0, got {rampup_steps!r}")
        if on not in ("unlabelled", "all"):
            raise ValueError(f"mean_teacher on must be 'all' or 'unlabelled', got {on!r}")
        self.weight, self.decay, self.rampup_steps, self.on = float(weight), float(decay), rampup_steps, on
        self.names: list[str] = []
        self.shadow: list[Tensor] = []
        self.num_updates = 0

    def on_fit_start(self, state: TrainState) -> None:
        named = [(n, p) for n, p in state.raw_model.named_parameters() if p.dtype.is_floating_point]
        self.names = [n for n, _ in named]
        self.shadow = [p.detach().clone() for _, p in named]
        self.num_updates = 0

    def teacher_logits(self, state: TrainState, x: Tensor) -> Tensor:
        """The teacher's outputs on ``x``: the averaged weights, a copy of the student's buffers (BatchNorm
        statistics the teacher's batch may move but that are then dropped)."""
        model = state.raw_model
        tensors = {n: b.detach().clone() for n, b in model.named_buffers()}
        tensors.update(zip(self.names, self.shadow))
        with torch.no_grad():
            return functional_call(model, tensors, (x,))

    def on_loss(self, state: TrainState) -> None:
        w = self.weight * sigmoid_rampup(state.step, self.rampup_steps)
        if w == 0.0:
            return
        mask = unlabelled_mask(state.targets, self.on)
        x = state.inputs[mask]
        if x.shape[0] == 0:
            return
        teacher = self.teacher_logits(state, weak_view(x.cpu(), self.generator).to(x))
        state.loss = state.loss + w * consistency_mse(state.outputs[mask], teacher)

    def on_after_step(self, state: TrainState) -> None:
        if state.skip_step:
            return
        # eq. (1); the paper ramps alpha from 0.99 to 0.999; here min(decay, 1 - 1/(t+1)) so early averages follow
        decay = min(self.decay, 1.0 - 1.0 / (self.num_updates + 1))
        params = dict(state.raw_model.named_parameters())
        ema_update_(self.shadow, [params[n] for n in self.names], decay)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "shadow": list(self.shadow),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].detach().cpu().clone())
        self.num_updates = int(state["num_updates"])
        if self.shadow and len(state["shadow"]) != len(self.shadow):
            raise ValueError(f"mean_teacher state has {len(state['shadow'])} tensors, the model has "
                             f"{len(self.shadow)}")
        self.shadow = [t.detach().clone() for t in state["shadow"]]
