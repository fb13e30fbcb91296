"""Random erasing (Zhong et al. 2020): with probability p, overwrite a random box with random values.

The box has an area fraction drawn in ``scale`` and an aspect ratio in ``[ratio, 1/ratio]`` (1-D: a length
fraction); the paper's defaults ``p=0.5, s_l=0.02, s_h=0.4, r_1=0.3`` and random fill. The functional core is
:func:`tricklab.data.augment.random_erasing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from tricklab.data.augment import random_erasing
from tricklab.techniques._seeded import InputAugmentation, check_prob, check_spatial_dims
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState


@register_technique
class RandomErasing(InputAugmentation):
    """Random erasing: with probability p replace a random box (area in scale, aspect in [ratio, 1/ratio])."""

    name: ClassVar[str] = "random_erasing"
    writes = frozenset({"batch.inputs.erased"})  # after geometric transforms, before batch mixing

    def __init__(
        self,
        p: float = 0.5,
        scale: tuple[float, float] = (0.02, 0.4),
        ratio: float = 0.3,
        fill: float | str = "random",
        spatial_dims: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self.p = check_prob(p, "random_erasing p")
        sc = tuple(scale) if isinstance(scale, Sequence) and not isinstance(scale, str) else ()
        if len(sc) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sc) or not (
            0.0 < sc[0] <= sc[1] <= 1.0
        ):
            raise ValueError(f"random_erasing scale must be [s_l, s_h] with 0 < s_l <= s_h <= 1, got {scale!r}")
        self.scale = (float(sc[0]), float(sc[1]))
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
            raise ValueError(f"random_erasing ratio must be r_1 in (0, 1] (aspect in [r_1, 1/r_1]), got {ratio!r}")
        self.ratio = float(ratio)
        if not (fill == "random" or (isinstance(fill, (int, float)) and not isinstance(fill, bool))):
            raise ValueError(f"random_erasing fill must be a number or 'random', got {fill!r}")
        self.fill = fill if fill == "random" else float(fill)
        self.spatial_dims = check_spatial_dims(spatial_dims, "random_erasing")

    def on_batch_start(self, state: TrainState) -> None:
        state.inputs = random_erasing(state.inputs, self.generator, self.p, scale=self.scale, ratio=self.ratio,
                                      fill=self.fill, spatial_dims=self.spatial_dims)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return (f"RandomErasing(p={self.p}, scale={self.scale}, ratio={self.ratio}, fill={self.fill!r}, "
                f"seed={self.seed})")
