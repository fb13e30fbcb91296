"""Shifted test sets made by code, for out-of-distribution detection and (later) domain shift.

An :class:`OODSplit` pairs an in-distribution test set (inputs and labels) with a shifted set of inputs of the
same shape that the model should be unsure about:

* ``mnist1d-shuffled``: MNIST-1D test signals against the *shuffled* MNIST-1D test signals (the same generator
  and seed with ``shuffle_seq=True``: one fixed permutation of the 40 positions; the values are those of real
  digits, only their order is destroyed). Needs the ``mnist1d`` extra.
* ``fashion-mnist-digits``: Fashion-MNIST test images against scikit-learn's 8x8 handwritten digits (all 1,797)
  upscaled to 28x28 with bilinear interpolation and scaled to [0, 1] like Fashion-MNIST. Needs the Fashion-MNIST
  files and the ``sklearn`` extra.

Nothing is downloaded. ``SHIFTS`` maps these names to their builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.data.datasets import load_dataset
from tricklab.errors import DataError
from tricklab.registry import Registry

__all__ = ["OODSplit", "SHIFTS", "fashion_vs_digits", "load_shift", "mnist1d_vs_shuffled", "upscale_images"]


@dataclass(frozen=True)
class OODSplit:
    """In-distribution test inputs ``x_in`` (N, ...) with labels ``y_in`` (N,), and shifted inputs ``x_out``
    (M, ...) of the same per-example shape."""

    name: str
    x_in: Tensor
    y_in: Tensor
    x_out: Tensor
    description: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if tuple(self.x_in.shape[1:]) != tuple(self.x_out.shape[1:]):
            raise DataError(f"{self.name}: shifted inputs {tuple(self.x_out.shape[1:])} do not match the "
                            f"in-distribution shape {tuple(self.x_in.shape[1:])}")
        if self.y_in.shape[0] != self.x_in.shape[0]:
            raise DataError(f"{self.name}: {self.x_in.shape[0]} inputs but {self.y_in.shape[0]} labels")


SHIFTS: Registry[Callable[..., OODSplit]] = Registry("shifted set")


@SHIFTS.register("mnist1d-shuffled", summary="MNIST-1D test set vs the shuffled MNIST-1D test set (1000 vs 1000)")
def mnist1d_vs_shuffled(data_dir: str | None = None) -> OODSplit:
    """MNIST-1D test signals (in) against shuffled MNIST-1D test signals (out)."""
    ds = load_dataset("mnist1d", data_dir=data_dir)
    shuffled = load_dataset("mnist1d-shuffled", data_dir=data_dir)
    return OODSplit("mnist1d-shuffled", ds.x_test, ds.y_test, shuffled.x_test,
                    "MNIST-1D test set against the same generator with the 40 positions permuted (shuffle_seq)",
                    {"in": ds.summary(), "out": shuffled.summary()})


def upscale_images(x: Tensor, size: int = 28, mode: str = "bilinear") -> Tensor:
    """Resize images (N, C, H, W) to (N, C, size, size) with ``F.interpolate`` (``align_corners=False``) and clamp
    to the input's value range (bilinear interpolation does not overshoot, bicubic would)."""
    if x.ndim != 4:
        raise DataError(f"upscale_images expects (N, C, H, W) images, got {tuple(x.shape)}")
    if mode not in ("nearest", "bilinear", "bicubic"):
        raise DataError(f"mode must be 'nearest', 'bilinear' or 'bicubic', got {mode!r}")
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(x.float(), size=(size, size), mode=mode, **kw)
    return out.clamp(float(x.min()), float(x.max()))


@SHIFTS.register("fashion-mnist-digits",
                 summary="Fashion-MNIST test set vs sklearn 8x8 digits upscaled to 28x28 (10000 vs 1797)")
def fashion_vs_digits(data_dir: str | None = None, mode: str = "bilinear") -> OODSplit:
    """Fashion-MNIST test images (in) against every scikit-learn digit, upscaled to 1x28x28 (out)."""
    fm = load_dataset("fashion-mnist", data_dir=data_dir)
    digits = load_dataset("digits")
    x_out = upscale_images(torch.cat([digits.x_train, digits.x_test]), 28, mode)  # digits are in [0, 1] already
    return OODSplit("fashion-mnist-digits", fm.x_test, fm.y_test, x_out,
                    f"Fashion-MNIST test set against the 1,797 sklearn 8x8 digits upscaled to 28x28 ({mode})",
                    {"in": fm.summary(), "out": f"digits upscaled, {x_out.shape[0]} images"})


def load_shift(name: str, **kwargs: Any) -> OODSplit:
    """Build the registered shifted set ``name`` (see :data:`SHIFTS`)."""
    return SHIFTS.get(name)(**kwargs)
