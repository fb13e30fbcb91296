"""PGD adversarial training (Madry et al. 2018): train on the worst case of each batch within an eps-ball.

Madry et al. cast robust training as the saddle-point problem (their eq. 2.1)

    min_theta  E_(x,y) [ max_{||delta|| <= eps} L(theta, x + delta, y) ]

and solve the inner maximisation approximately with projected gradient descent (PGD): at every training step
the batch is replaced by its PGD adversarial examples, and the optimizer takes its usual step on the loss of
those. The functional core is :func:`tricklab.robust.pgd`; this technique calls it at ``batch_start`` on the
inputs as the model will get them (after every augmentation and mixing stage), against the task's own loss
(``state.loss_fn``: cross-entropy for a classifier, MSE for a regression), with the model in eval mode during
the attack as the MadryLab ``robustness`` library does (BatchNorm statistics are not updated by the attack's
forward passes, and dropout does not draw). One step with ``alpha = eps`` and no random start is FGSM
training (Goodfellow et al. 2015).
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.robust import NORMS, pgd
from tricklab.techniques._seeded import SeededTechnique
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState

__all__ = ["AdversarialTraining"]


@register_technique
class AdversarialTraining(SeededTechnique):
    """PGD adversarial training (Madry et al. 2018): each training batch is replaced by its PGD examples."""

    name: ClassVar[str] = "adversarial_training"
    # reads the weights it attacks and the (possibly mixed) targets; writes the last input stage, so it runs
    # after every augmentation and mixer and before readers of the final inputs
    reads = frozenset({"params", "norm_stats", "batch.targets"})
    writes = frozenset({"batch.inputs"})

    def __init__(self, eps: float = 0.1, steps: int = 7, alpha: float | None = None, norm: str = "linf",
                 random_start: bool = True, clip: list[float] | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"adversarial_training eps must be a positive number (input units), got {eps!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"adversarial_training steps must be a positive int, got {steps!r}")
        if alpha is not None and (isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0):
            raise ValueError(f"adversarial_training alpha must be a positive number or None, got {alpha!r}")
        if norm not in NORMS:
            raise ValueError(f"adversarial_training norm must be one of {NORMS}, got {norm!r}")
        if clip is not None and (len(clip) != 2 or not float(clip[0]) < float(clip[1])):
            raise ValueError(f"adversarial_training clip must be [low, high] with low < high, got {clip!r}")
        self.eps, self.steps, self.norm = float(eps), steps, norm
        # Madry et al.: step 2.5 * eps / steps, so the walk can cross the ball from any start
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / steps
        self.random_start = bool(random_start)
        self.clip = None if clip is None else [float(clip[0]), float(clip[1])]

    def on_batch_start(self, state: TrainState) -> None:
        state.inputs = pgd(state.raw_model, state.inputs, state.targets, self.eps, self.alpha, self.steps,
                           random_start=self.random_start, norm=self.norm, clip=self.clip, loss_fn=state.loss_fn,
                           generator=self.generator)

    def __repr__(self) -> str:
        return (f"AdversarialTraining(eps={self.eps}, steps={self.steps}, alpha={self.alpha}, norm={self.norm!r}, "
                f"random_start={self.random_start}, clip={self.clip}, seed={self.seed})")
