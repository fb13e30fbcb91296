"""Mixup (Zhang et al. 2018): train on convex combinations of example pairs and of their targets.

Each training batch becomes ``lam x + (1 - lam) x[perm]`` with targets ``lam y + (1 - lam) y[perm]``,
``lam ~ Beta(alpha, alpha)`` drawn once per batch and ``perm`` a random pairing of the batch. The functional
core is :func:`tricklab.data.augment.mixup` / :func:`~tricklab.data.augment.sample_mixup`; the bases shared
by every augmentation technique (:class:`SeededTechnique`: its own generator, saved in its state for exact
resume; :class:`~tricklab.techniques._seeded.BatchMixer`) live in :mod:`tricklab.techniques._seeded`.
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.data.augment import mixup
from tricklab.techniques._seeded import BatchMixer, SeededTechnique, check_alpha, require_num_classes
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState

# SeededTechnique and require_num_classes are re-exported: they were first defined in this module.
__all__ = ["Mixup", "SeededTechnique", "require_num_classes"]


@register_technique
class Mixup(BatchMixer):
    """Mixup: train on lam*x + (1-lam)*x[perm] against lam*y + (1-lam)*y[perm], lam ~ Beta(alpha, alpha)."""

    name: ClassVar[str] = "mixup"

    def __init__(self, alpha: float = 0.2, num_classes: int | None = None, prob: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed, num_classes=num_classes, prob=prob)
        self.alpha = check_alpha(alpha, "mixup alpha")

    def on_batch_start(self, state: TrainState) -> None:
        x = state.inputs
        # draws per batch, in order: apply coin, lam, pairing (always all three: the stream is fixed)
        apply = self._coin(self.prob)
        lam, perm = self._draw_pairing(x.shape[0], self.alpha)
        if apply:
            state.inputs, state.targets = mixup(x, state.targets, lam, perm, self.num_classes)
        else:
            self._leave_unmixed(state)

    def __repr__(self) -> str:
        return f"Mixup(alpha={self.alpha}, num_classes={self.num_classes}, prob={self.prob}, seed={self.seed})"
