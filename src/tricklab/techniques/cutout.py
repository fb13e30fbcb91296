"""Cutout (DeVries & Taylor 2017): zero a square (or a segment of a signal) at a random centre.

A box of side ``size`` centred on a uniformly drawn position of each training example (clipped at the
borders) is set to ``fill`` (0). The functional core is :func:`tricklab.data.augment.cutout`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tricklab.data.augment import cutout
from tricklab.techniques._seeded import InputAugmentation, check_prob, check_spatial_dims
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


@register_technique
class Cutout(InputAugmentation):
    """Cutout: zero a box of side `size` (default a quarter of each side) at a random centre per example."""

    name: ClassVar[str] = "cutout"
    writes = frozenset({"batch.inputs.erased"})  # after geometric transforms, before batch mixing

    def __init__(
        self,
        size: int | float | list[int] | None = None,
        prob: float = 1.0,
        fill: float = 0.0,
        spatial_dims: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if isinstance(size, bool) or not (size is None or isinstance(size, (int, float, Sequence))):
            raise TypeError(f"cutout size must be None, an int, a fraction in (0, 1) or a list of ints, got {size!r}")
        if isinstance(size, float) and not 0.0 < size < 1.0:
            raise ValueError(f"cutout size={size!r}: a float size is a fraction of each side and must be in (0, 1)")
        if isinstance(size, int) and size < 1:
            raise ValueError(f"cutout size must be at least 1, got {size!r}")
        self.size = list(size) if isinstance(size, Sequence) else size
        self.prob = check_prob(prob, "cutout prob")
        if isinstance(fill, bool) or not isinstance(fill, (int, float)):
            raise TypeError(f"cutout fill must be a number, got {fill!r}")
        self.fill = float(fill)
        self.spatial_dims = check_spatial_dims(spatial_dims, "cutout")

    def on_batch_start(self, state: TrainState) -> None:
        state.inputs = cutout(state.inputs, self.generator, self.size, p=self.prob, fill=self.fill,
                              spatial_dims=self.spatial_dims)

    def __repr__(self) -> str:
        return f"Cutout(size={self.size}, prob={self.prob}, seed={self.seed})"
