"""The Pi-model (Laine & Aila 2017): consistency between two stochastic passes of the same network.

Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, sec. 2.1 and Algorithm 1: every
example is evaluated twice by the network ``f_theta`` under different augmentation and dropout, giving softmax
outputs ``z_i`` and ``z~_i``; the loss is

    loss = -(1/|B|) sum_{i in B and labelled} log z_i[y_i]  +  w(t) (1/(C |B|)) sum_{i in B} ||z_i - z~_i||^2

with ``C`` the number of classes and ``w(t)`` ramped up along the Gaussian curve ``exp(-5 (1 - t/T)^2)``
(sec. 2.1 and appendix A). Both passes are evaluations of the *same* parameters and the gradient flows through
both (Algorithm 1 differentiates the whole loss); ``stop_gradient=True`` treats the second pass as a constant (the
mean teacher with teacher = student, Tarvainen & Valpola 2017 sec. 2).

Here ``z`` is the trainer's ``state.outputs`` (the batch after every input technique) and the second pass runs the
model in training mode (its own dropout draws) on a weak view (flip/shift, from this technique's generator) of the
same inputs, through ``functional_call`` with the live parameters and a *copy* of the buffers, so BatchNorm
running statistics move once per step, as without the technique. Unlabelled examples carry target ``-100``; with
``on="all"`` (the paper) the consistency term covers every example of the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torch.func import functional_call

from tricklab.data.views import weak_view
from tricklab.techniques._seeded import SeededTechnique
from tricklab.techniques.mean_teacher import sigmoid_rampup
from tricklab.techniques.pseudo_label import unlabelled_mask
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState

__all__ = ["PiModel", "pi_consistency"]


def pi_consistency(logits_a: Tensor, logits_b: Tensor, stop_gradient: bool = False) -> Tensor:
    """``(1 / (C B)) sum_i ||softmax(a_i) - softmax(b_i)||^2`` over a batch of B logits with C classes (the Pi-model's
    unsupervised term, Laine & Aila 2017 Algorithm 1); ``stop_gradient`` makes ``b`` a constant."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"the two passes differ in shape: {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    if logits_a.shape[0] == 0:
        return logits_a.sum() * 0.0
    b = logits_b.detach() if stop_gradient else logits_b
    diff = logits_a.softmax(-1) - b.softmax(-1)
    return diff.pow(2).sum() / diff.numel()  # numel = B * C


@register_technique
class PiModel(SeededTechnique):
    """Add ``w(t) * pi_consistency(first pass, second pass)`` to the loss."""

    name: ClassVar[str] = "pi_model"
    reads = frozenset({"batch.inputs", "batch.outputs", "batch.targets", "params"})
    writes = frozenset({"loss", "rng"})  # the second pass draws its dropout noise from the global RNG

    def __init__(self, weight: float = 1.0, rampup_steps: int = 0, on: str = "all", stop_gradient: bool = False,
                 seed: int = 0) -> None:
        super().__init__(seed)
        if not (isinstance(weight, (int, float)) and weight >= 0):
            raise ValueError(f"pi_model weight must be a number >= 0, got {weight!r}")
        if not (isinstance(rampup_steps, int) and rampup_steps >= 0):
            raise ValueError(f"pi_model rampup_steps must be an integer >= 0, got {rampup_steps!r}")
        if on not in ("unlabelled", "all"):
            raise ValueError(f"pi_model on must be 'all' or 'unlabelled', got {on!r}")
        self.weight, self.rampup_steps, self.on = float(weight), rampup_steps, on
        self.stop_gradient = bool(stop_gradient)

    def second_pass(self, state: TrainState, x: Tensor) -> Tensor:
        """The network's outputs on ``x`` with the live parameters (gradient flows) and copied buffers."""
        model = state.raw_model
        tensors: dict[str, Tensor] = {n: b.detach().clone() for n, b in model.named_buffers()}
        tensors.update(dict(model.named_parameters()))
        return functional_call(model, tensors, (x,))

    def on_loss(self, state: TrainState) -> None:
        w = self.weight * sigmoid_rampup(state.step, self.rampup_steps)
        if w == 0.0:
            return
        mask = unlabelled_mask(state.targets, self.on)
        x = state.inputs[mask]
        if x.shape[0] == 0:
            return
        other = self.second_pass(state, weak_view(x.cpu(), self.generator).to(x))
        state.loss = state.loss + w * pi_consistency(state.outputs[mask], other, self.stop_gradient)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"].detach().cpu().clone())
