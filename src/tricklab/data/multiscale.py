"""Multi-scale inputs: resize image (or signal) batches to a resolution drawn per batch; evaluate at several sizes.

Training a network that accepts any input size (global pooling; interpolated position tables) on several
resolutions makes it robust to the scale it is tested at, and lets a cheap low resolution carry part of the
training: YOLOv2 draws a new input size every 10 batches from {320, 352, ..., 608} (Redmon & Farhadi 2017,
"YOLO9000", sec. "Multi-Scale Training"); progressive resizing grows the size over training (Howard, fast.ai
DAWNBench 2018; Tan & Le 2021, EfficientNetV2, sec. 4); Touvron et al. 2019 ("Fixing the train-test resolution
discrepancy", NeurIPS) show that the resolution seen at test time matters as much as the one trained at.

Pure functions: :func:`resize_images` (the deterministic core), :func:`choose_size` (which size a step uses:
random from a generator, cycled, or progressive), :func:`accuracy_at_sizes` (evaluation of any callable model at
several resolutions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["SCHEDULES", "accuracy_at_sizes", "check_sizes", "choose_size", "resize_images"]

#: how :func:`choose_size` picks: uniformly at random, cycling through the list, or growing over training
SCHEDULES: tuple[str, ...] = ("random", "cycle", "progressive")


def check_sizes(sizes: object, who: str = "multi_scale") -> tuple[int, ...]:
    """A non-empty list of positive int sizes (square sides), as a tuple; ValueError naming ``who`` otherwise."""
    if isinstance(sizes, int) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        out = tuple(sizes)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{who}: sizes must be a list of ints (square image sides), got {sizes!r}") from None
    if not out or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in out):
        raise ValueError(f"{who}: sizes must be a non-empty list of positive ints, got {sizes!r}")
    return out


def resize_images(x: Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Resize a batch of images (B, C, H, W) to ``size`` (an int for square, or (h, w)), or of 1-D signals
    (B, L) / (B, C, L) to length ``size`` (MNIST-1D; a channel-less image batch (B, H, W) is read as signals, as in
    :mod:`tricklab.data.augment`).

    Bilinear/bicubic (linear for signals) with ``align_corners=False`` (pixel centres map to pixel centres) and, for
    images, antialiasing when shrinking (a low-pass before subsampling, so downscaled strokes survive);
    ``"nearest"`` keeps the pixel values. The same size returns ``x`` itself.
    """
    if not isinstance(x, Tensor) or x.dim() not in (2, 3, 4):
        raise ValueError(f"resize_images: expected images (B, C, H, W) or signals (B, L) / (B, C, L), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if mode not in ("bilinear", "bicubic", "nearest"):
        raise ValueError(f"resize_images: mode must be 'bilinear', 'bicubic' or 'nearest', got {mode!r}")
    if x.dim() < 4:
        if not isinstance(size, int):
            raise ValueError(f"resize_images: a signal batch {tuple(x.shape)} takes one int length, got {size!r}")
        if size == x.shape[-1]:
            return x
        if mode == "bicubic":
            raise ValueError("resize_images: mode 'bicubic' needs images (B, C, H, W); use 'bilinear' for signals")
        sig = x if x.dim() == 3 else x[:, None]
        if mode == "nearest":
            out = F.interpolate(sig, size=size, mode="nearest")
        else:
            out = F.interpolate(sig, size=size, mode="linear", align_corners=False)
        return out if x.dim() == 3 else out[:, 0]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if (h, w) == tuple(x.shape[-2:]):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=(h, w), mode="nearest")
    shrink = h < x.shape[-2] or w < x.shape[-1]
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=False, antialias=shrink)


def choose_size(sizes: Sequence[int], step: int, *, schedule: str = "random", every: int = 1,
                generator: torch.Generator | None = None, total_steps: int | None = None) -> int:
    """The input size for optimizer step ``step`` (0-based).

    ``random``: one uniform draw from ``sizes`` per call (one ``torch.randint`` on ``generator``; call it once per
    batch). ``cycle``: sizes[(step // every) % len(sizes)]. ``progressive``: the sizes in order, each for an equal
    share of ``total_steps`` (then the last). ``every`` > 1 keeps a size for that many consecutive steps under
    ``cycle``; under ``random`` the caller draws only when step % every == 0.
    """
    if schedule == "random":
        if generator is None:
            raise ValueError("choose_size(schedule='random') needs a torch.Generator")
        return int(sizes[int(torch.randint(len(sizes), (1,), generator=generator))])
    if schedule == "cycle":
        return int(sizes[(step // every) % len(sizes)])
    if schedule == "progressive":
        if total_steps is None or total_steps < 1:
            raise ValueError("choose_size(schedule='progressive') needs total_steps >= 1")
        return int(sizes[min(step * len(sizes) // total_steps, len(sizes) - 1)])
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


@torch.no_grad()
def accuracy_at_sizes(model: Callable[[Tensor], Tensor], inputs: Tensor, targets: Tensor, sizes: Sequence[int],
                      *, batch_size: int = 1000, mode: str = "bilinear") -> dict[int, float]:
    """Top-1 accuracy of ``model`` (logits (B, C)) on ``inputs`` (N, C, H, W) (or signals) resized to each size.

    Put the model in eval mode first; inputs are resized batch by batch, so memory stays at one batch."""
    sizes = check_sizes(sizes, "accuracy_at_sizes")
    out = {}
    for s in sizes:
        correct = 0
        for i in range(0, len(inputs), batch_size):
            logits = model(resize_images(inputs[i:i + batch_size], s, mode))
            correct += int((logits.argmax(-1) == targets[i:i + batch_size].to(logits.device)).sum())
        out[s] = correct / max(len(inputs), 1)
    return out
