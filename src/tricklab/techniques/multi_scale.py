"""Multi-scale training: each training batch is resized to an input size drawn from ``sizes`` (images: square
sides; 1-D signals: lengths).

The functional core is :mod:`tricklab.data.multiscale` (:func:`choose_size`, :func:`resize_images`); evaluation at
several resolutions is :func:`tricklab.data.multiscale.accuracy_at_sizes`. The model must accept any input size
(every classifier of tricklab.models.vision does).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from tricklab.data.multiscale import SCHEDULES, check_sizes, choose_size, resize_images
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

# (seed, interval) -> one generator seed; a large odd stride keeps the pairs apart (as data/loader.py does)
_STRIDE = 1_000_003
#: default sizes for 28 px images: 20-32 px around the native 28
DEFAULT_SIZES: tuple[int, ...] = (20, 24, 28, 32)


@register_technique
class MultiScale(Technique):
    """Resize each training batch to a size from ``sizes``: random per batch, cycled or progressive."""

    name: ClassVar[str] = "multi_scale"
    # a resize is a geometric transform of the inputs: its stage runs before erasing and the batch mixers, so
    # they act on the resized batch (tricklab.train.events.PIPELINES)
    writes = frozenset({"batch.inputs.geometric"})
    # progressive: the run length in optimizer steps, read after the owner of accum_steps has set it
    reads = frozenset({"accum_steps"})
    # within the stage, the per-example shift and flip run first, at the native resolution their arguments
    # (max_shift in pixels) are written for; the data flow cannot say this, hence the explicit order
    after: ClassVar[frozenset[str]] = frozenset({"random_shift", "random_flip"})

    def __init__(self, sizes: list[int] | None = None, schedule: str = "random", every: int = 1,
                 mode: str = "bilinear", seed: int = 0) -> None:
        self.sizes = check_sizes(DEFAULT_SIZES if sizes is None else sizes, "multi_scale")
        if schedule not in SCHEDULES:
            raise ValueError(f"multi_scale schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"multi_scale every must be a positive int (steps per size), got {every!r}")
        if mode not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"multi_scale mode must be 'bilinear', 'bicubic' or 'nearest', got {mode!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"multi_scale seed must be a non-negative int, got {seed!r}")
        self.schedule, self.every, self.mode, self.seed = schedule, every, mode, seed
        self.total_steps: int | None = None

    def on_fit_start(self, state: TrainState) -> None:
        if self.schedule == "progressive":
            self.total_steps = state.planned_steps()
            if self.total_steps is None:
                raise ValueError("multi_scale schedule='progressive' needs a budget in steps or epochs (not seconds)")

    def size_at(self, step: int) -> int:
        """The size of optimizer step ``step``. A pure function of (seed, step): every micro-batch of a step gets
        the same size and a resumed run draws what an uninterrupted one would, with no state to save."""
        generator = None
        if self.schedule == "random":
            generator = torch.Generator().manual_seed(self.seed * _STRIDE + step // self.every)
        return choose_size(self.sizes, step, schedule=self.schedule, every=self.every, generator=generator,
                           total_steps=self.total_steps)

    def on_batch_start(self, state: TrainState) -> None:
        x = state.inputs
        if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3, 4):
            raise ValueError(f"multi_scale resizes images (B, C, H, W) or signals (B, L) / (B, C, L); got inputs "
                             f"of shape {tuple(getattr(x, 'shape', ()))}")
        state.inputs = resize_images(x, self.size_at(state.step), self.mode)

    def __repr__(self) -> str:
        return (f"MultiScale(sizes={list(self.sizes)}, schedule={self.schedule!r}, every={self.every}, "
                f"mode={self.mode!r}, seed={self.seed})")
