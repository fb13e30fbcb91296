"""CutMix (Yun et al. 2019): paste a box from a paired example and mix the targets by the pasted area.

Per batch: ``lam ~ Beta(alpha, alpha)``, a box of ``(1 - lam)`` of the area (sides ``sqrt(1 - lam)`` of the
image's; ``1 - lam`` of the length in 1-D) at a uniform centre, clipped at the borders, cut from ``x[perm]``
into ``x``; targets mix with the area actually pasted. The functional core is
:func:`tricklab.data.augment.cutmix`.
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.data.augment import Box, cutmix, infer_spatial_dims
from tricklab.techniques._seeded import BatchMixer, check_alpha, check_spatial_dims
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


@register_technique
class CutMix(BatchMixer):
    """CutMix: paste a random box of x[perm] into x; targets mixed by the pasted area."""

    name: ClassVar[str] = "cutmix"

    def __init__(self, alpha: float = 1.0, num_classes: int | None = None, prob: float = 1.0,
                 spatial_dims: int | None = None, seed: int = 0) -> None:
        super().__init__(seed, num_classes=num_classes, prob=prob)
        self.alpha = check_alpha(alpha, "cutmix alpha")
        self.spatial_dims = check_spatial_dims(spatial_dims, "cutmix")
        self.last_box: Box | None = None

    def on_batch_start(self, state: TrainState) -> None:
        x = state.inputs
        infer_spatial_dims(x, self.spatial_dims)  # a clear error before any draw
        # draws per batch, in order: apply coin, lam, pairing, then (when applied) the box centre
        apply = self._coin(self.prob)
        lam, perm = self._draw_pairing(x.shape[0], self.alpha)
        if apply:
            state.inputs, state.targets, self.last_box = cutmix(
                x, state.targets, lam, perm, self.generator, num_classes=self.num_classes,
                spatial_dims=self.spatial_dims,
            )
        else:
            self._leave_unmixed(state)
            self.last_box = None

    def __repr__(self) -> str:
        return f"CutMix(alpha={self.alpha}, num_classes={self.num_classes}, prob={self.prob}, seed={self.seed})"
