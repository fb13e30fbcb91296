"""Random shift (translation) of each training example by up to ``max_shift`` positions per spatial axis.

``mode="zeros"`` is the pad-and-crop translation used for image classifiers (uncovered positions become 0);
``"circular"`` rolls the signal around. The functional core is :func:`tricklab.data.augment.random_shift`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tricklab.data.augment import random_shift
from tricklab.techniques._seeded import InputAugmentation, check_spatial_dims
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


@register_technique
class RandomShift(InputAugmentation):
    """Shift each example by a uniform integer in [-max_shift, max_shift] per axis (zero-filled or circular)."""

    name: ClassVar[str] = "random_shift"
    writes = frozenset({"batch.inputs.geometric"})

    def __init__(
        self,
        max_shift: int | float | list[int] | None = None,
        mode: str = "zeros",
        spatial_dims: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if isinstance(max_shift, bool) or not (max_shift is None or isinstance(max_shift, (int, float, Sequence))):
            raise TypeError(f"random_shift max_shift must be None, an int, a fraction or a list, got {max_shift!r}")
        if isinstance(max_shift, float) and not 0.0 < max_shift < 1.0:
            raise ValueError(f"random_shift max_shift={max_shift!r}: a float is a fraction of each side, in (0, 1)")
        if isinstance(max_shift, int) and max_shift < 0:
            raise ValueError(f"random_shift max_shift must be >= 0, got {max_shift!r}")
        self.max_shift = list(max_shift) if isinstance(max_shift, Sequence) else max_shift
        if mode not in ("zeros", "circular"):
            raise ValueError(f"random_shift mode must be 'zeros' or 'circular', got {mode!r}")
        self.mode = mode
        self.spatial_dims = check_spatial_dims(spatial_dims, "random_shift")

    def on_batch_start(self, state: TrainState) -> None:
        state.inputs = random_shift(state.inputs, self.generator, self.max_shift, mode=self.mode,  # type: ignore[arg-type]
                                    spatial_dims=self.spatial_dims)

    def __repr__(self) -> str:
        return f"RandomShift(max_shift={self.max_shift}, mode={self.mode!r}, seed={self.seed})"
