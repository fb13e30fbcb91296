"""Fashion-MNIST collages: a detection data set made by code, with every box and class known exactly.

Each image is a ``canvas`` x ``canvas`` black canvas with 1 to ``max_objects`` Fashion-MNIST items pasted at
random positions and scales. An item is the 28x28 image resized (bilinear, antialiased) to s x s pixels,
s uniform in [``min_size``, ``max_size``], and pasted with a pixel-wise maximum (overlaps stay visible). Its box
is the tight box around the pixels of the resized item that are >= ``box_threshold`` (the item's silhouette, not
its square), placed on the canvas; a placement whose box overlaps an earlier one with IoU > ``max_iou`` is
redrawn (up to 50 times, then the item is left out, so an image may hold fewer objects than drawn).

Training collages are made from the Fashion-MNIST training images and test collages from the test images, so no
test item is ever seen in training. Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``
(the test split from ``seed + 1``): the same arguments give bit-identical data.

Targets come as padded tensors: ``boxes`` (N, max_objects, 4) = (cx, cy, w, h) normalised by the canvas size
(DETR's format) and ``labels`` (N, max_objects) with -1 in empty slots; :meth:`DetectionDataset.targets` packs
them as (N, max_objects, 5) = (class, cx, cy, w, h) for the trainer's loaders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.data.base import DATASETS
from tricklab.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from tricklab.errors import ConfigError

__all__ = ["DetectionDataset", "load_fashion_collage", "make_collages"]


@dataclass
class DetectionDataset:
    """Images with padded box targets. ``boxes_*`` (N, M, 4) cxcywh in [0, 1]; ``labels_*`` (N, M), -1 = empty."""

    name: str
    x_train: Tensor
    boxes_train: Tensor
    labels_train: Tensor
    x_test: Tensor
    boxes_test: Tensor
    labels_test: Tensor
    num_classes: int
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, b, lab = (getattr(self, f"{k}_{split}") for k in ("x", "boxes", "labels"))
            if x.dim() != 4 or b.dim() != 3 or b.shape[-1] != 4 or lab.shape != b.shape[:2] or x.shape[0] != b.shape[0]:
                raise ValueError(f"{self.name}: {split} split needs x (N, C, H, W), boxes (N, M, 4), labels (N, M); "
                                 f"got {tuple(x.shape)}, {tuple(b.shape)}, {tuple(lab.shape)}")
            if lab.dtype != torch.int64:
                raise ValueError(f"{self.name}: labels_{split} must be int64 (-1 for empty slots), got {lab.dtype}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def max_objects(self) -> int:
        return int(self.boxes_train.shape[1])

    def targets(self, split: str) -> Tensor:
        """(N, M, 5) float targets (class, cx, cy, w, h), class -1 in empty slots (see losses/detection.py)."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        lab, boxes = getattr(self, f"labels_{split}"), getattr(self, f"boxes_{split}")
        return torch.cat([lab[..., None].to(boxes.dtype), boxes], dim=-1)

    def fingerprint(self) -> str:
        """SHA-256 of every tensor's shape, dtype and bytes (see ArrayDataset.fingerprint)."""
        h = hashlib.sha256()
        for key in ("x_train", "boxes_train", "labels_train", "x_test", "boxes_test", "labels_test"):
            t = getattr(self, key).detach().cpu().contiguous()
            h.update(key.encode() + repr((tuple(t.shape), str(t.dtype))).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def summary(self) -> str:
        n_obj = int((self.labels_train >= 0).sum())
        return (f"{self.name}: train {self.x_train.shape[0]} ({n_obj} objects), test {self.x_test.shape[0]}, "
                f"canvas {tuple(self.x_train.shape[1:])}, {self.num_classes} classes")


def _iou_xyxy(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def make_collages(images: Tensor, labels: Tensor, n: int, rng: np.random.Generator, *, canvas: int = 64,
                  min_objects: int = 1, max_objects: int = 4, min_size: int = 16, max_size: int = 32,
                  max_iou: float = 0.2, box_threshold: float = 0.1) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` collages from ``images`` (K, 28, 28) or (K, 1, 28, 28) in [0, 1] with ``labels`` (K,).

    Returns canvases (n, 1, canvas, canvas), boxes (n, max_objects, 4) normalised cxcywh (zeros in empty
    slots) and labels (n, max_objects) int64 (-1 in empty slots). Draw order per image: the object count, then per
    object the source index, the size, then positions until one is accepted.
    """
    src = images.reshape(images.shape[0], 28, 28).float()
    out = torch.zeros(n, 1, canvas, canvas)
    boxes = torch.zeros(n, max_objects, 4)
    labs = torch.full((n, max_objects), -1, dtype=torch.int64)
    resized: dict[tuple[int, int], Tensor] = {}
    for i in range(n):
        count = int(rng.integers(min_objects, max_objects + 1))
        placed: list[np.ndarray] = []
        for _ in range(count):
            k = int(rng.integers(0, src.shape[0]))
            s = int(rng.integers(min_size, max_size + 1))
            item = resized.get((k, s))
            if item is None:
                item = F.interpolate(src[k][None, None], size=(s, s), mode="bilinear", align_corners=False,
                                     antialias=True)[0, 0].clamp_(0, 1)
                if len(resized) < 200_000:
                    resized[(k, s)] = item
            on = (item >= box_threshold).nonzero()
            if on.numel() == 0:
                continue  # an item with no visible pixel has no box: skip it
            (r0, c0), (r1, c1) = on.min(0).values.tolist(), on.max(0).values.tolist()
            for _ in range(50):
                y = int(rng.integers(0, canvas - s + 1))
                x = int(rng.integers(0, canvas - s + 1))
                box = np.array([x + c0, y + r0, x + c1 + 1, y + r1 + 1], dtype=np.float64)  # pixel edges, xyxy
                if all(_iou_xyxy(box, p) <= max_iou for p in placed):
                    break
            else:
                continue
            j = len(placed)
            placed.append(box)
            region = out[i, 0, y:y + s, x:x + s]
            torch.maximum(region, item, out=region)
            x0, y0, x1, y1 = (box / canvas).tolist()
            boxes[i, j] = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0])
            labs[i, j] = int(labels[k])
    return out, boxes, labs


@DATASETS.register("fashion-collage", summary="Fashion-MNIST items pasted at random positions and scales on a "
                                              "canvas: boxes and classes known exactly (detection)")
def load_fashion_collage(data_dir: str | None = None, *, num_train: int = 10_000, num_test: int = 1_000,
                         canvas: int = 64, min_objects: int = 1, max_objects: int = 4, min_size: int = 16,
                         max_size: int = 32, max_iou: float = 0.2, box_threshold: float = 0.1,
                         seed: int = 0) -> DetectionDataset:
    """Collages from Fashion-MNIST in ``data_dir`` (default /usr/share/datasets/fashion-mnist); see the module
    docstring. Making 10,000 + 1,000 64x64 collages takes a few seconds."""
    for name, v in (("num_train", num_train), ("num_test", num_test), ("canvas", canvas),
                    ("min_objects", min_objects), ("max_objects", max_objects), ("min_size", min_size),
                    ("max_size", max_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"fashion-collage: {name} must be a positive int, got {v!r}")
    if min_objects > max_objects:
        raise ConfigError(f"fashion-collage: min_objects ({min_objects}) must be <= max_objects ({max_objects})")
    if not min_size <= max_size <= canvas:
        raise ConfigError(f"fashion-collage: need min_size <= max_size <= canvas, got {min_size}, {max_size}, "
                          f"{canvas}")
    if not 0.0 <= max_iou <= 1.0 or not 0.0 < box_threshold < 1.0:
        raise ConfigError(f"fashion-collage: max_iou must be in [0, 1] and box_threshold in (0, 1), got {max_iou}, "
                          f"{box_threshold}")
    fm = load_fashion_mnist(data_dir)
    args = dict(canvas=canvas, min_objects=min_objects, max_objects=max_objects, min_size=min_size,
                max_size=max_size, max_iou=max_iou, box_threshold=box_threshold)
    x_tr, b_tr, l_tr = make_collages(fm.x_train, fm.y_train, num_train, np.random.default_rng(seed), **args)
    x_te, b_te, l_te = make_collages(fm.x_test, fm.y_test, num_test, np.random.default_rng(seed + 1), **args)
    return DetectionDataset("fashion-collage", x_tr, b_tr, l_tr, x_te, b_te, l_te, 10, list(FASHION_MNIST_CLASSES),
                            meta={"source": fm.meta.get("source"), "seed": seed, **args})
