"""Random flip of each training example: horizontal (a 1-D signal is reversed), optionally vertical.

Only label-preserving where the data is symmetric that way: fine for Fashion-MNIST horizontally, not for
digits or for MNIST-1D, whose classes are not reversal-invariant (measure it). The functional core is
:func:`tricklab.data.augment.random_flip`.
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.data.augment import random_flip
from tricklab.techniques._seeded import InputAugmentation, check_prob, check_spatial_dims
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


@register_technique
class RandomFlip(InputAugmentation):
    """Flip each example horizontally (1-D: reverse) with probability p; vertically too if vertical=True."""

    name: ClassVar[str] = "random_flip"
    writes = frozenset({"batch.inputs.geometric"})

    def __init__(self, p: float = 0.5, vertical: bool = False, spatial_dims: int | None = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.p = check_prob(p, "random_flip p")
        if not isinstance(vertical, bool):
            raise TypeError(f"random_flip vertical must be a bool, got {vertical!r}")
        self.vertical = vertical
        self.spatial_dims = check_spatial_dims(spatial_dims, "random_flip")
        if vertical and spatial_dims == 1:
            raise ValueError("random_flip vertical=True needs images (spatial_dims=2)")

    def on_batch_start(self, state: TrainState) -> None:
        state.inputs = random_flip(state.inputs, self.generator, self.p, vertical=self.vertical,
                                   spatial_dims=self.spatial_dims)

    def __repr__(self) -> str:
        return f"RandomFlip(p={self.p}, vertical={self.vertical}, seed={self.seed})"
