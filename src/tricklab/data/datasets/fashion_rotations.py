"""``fashion-mnist-rot40``: 40 classes made by code from Fashion-MNIST, for N-way one-shot with N up to 20 on
classes never seen in training.

Each image (training and test set alike) is turned by ``k`` quarter turns counter-clockwise, ``k`` drawn uniformly
from {0, 1, 2, 3} with a generator seeded by ``seed`` (default 0; the training and the test set get their own
streams), and labelled ``garment + 10 k``: class 0 is an upright T-shirt/top, class 13 a Dress turned by 90
degrees, class 39 an Ankle boot turned by 270 degrees. Every image appears once (60000 / 10000, about 1500 / 250
per class). Treating rotated copies as new classes is the augmentation Santoro et al. (2016) and Vinyals et al.
(2016) used to enlarge Omniglot; here it makes 40 visually distinct classes from Fashion-MNIST's 10 (the garments
are far from rotation-symmetric: trousers, dresses and boots point one way).

``meta["class_group"][c]`` is the garment of class c (``c % 10``): a split *by group* (see
:func:`tricklab.data.low_label.group_class_split`) keeps every rotation of a garment on one side, so the classes of
an evaluation episode are garments the network never saw in any orientation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from tricklab.errors import DataError

__all__ = ["ROTATIONS", "load_fashion_mnist_rot40", "rotate_classes"]

ROTATIONS = (0, 90, 180, 270)


def rotate_classes(x: Tensor, y: Tensor, generator: torch.Generator, num_classes: int = 10) -> tuple[Tensor, Tensor]:
    """Turn each image of ``x`` (N, C, H, W), H = W, by k quarter turns (k uniform in 0..3 from ``generator``);
    return the turned images and the labels ``y + num_classes * k``."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise DataError(f"rotate_classes needs square images (N, C, H, H), got shape {tuple(x.shape)}")
    k = torch.randint(0, len(ROTATIONS), (len(x),), generator=generator)
    out = x.clone()
    for q in range(1, len(ROTATIONS)):
        idx = (k == q).nonzero().flatten()
        out[idx] = torch.rot90(x[idx], q, dims=(-2, -1))  # counter-clockwise, as numpy.rot90
    return out, y + num_classes * k


@DATASETS.register("fashion-mnist-rot40", summary="Fashion-MNIST x 4 rotations = 40 classes (made by code, seeded), "
                   "for one-shot over unseen garments")
def load_fashion_mnist_rot40(data_dir: str | None = None, seed: int = 0) -> ArrayDataset:
    """Fashion-MNIST with every image turned by a seeded random multiple of 90 degrees; 40 classes."""
    base = load_fashion_mnist(data_dir)
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = rotate_classes(base.x_train, base.y_train, g)
    x_test, y_test = rotate_classes(base.x_test, base.y_test, g)
    names = [f"{n} {r}deg" for r in ROTATIONS for n in FASHION_MNIST_CLASSES]
    return ArrayDataset(name="fashion-mnist-rot40", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        num_classes=40, input_shape=(1, 28, 28), class_names=names,
                        meta={**base.meta, "seed": seed, "class_group": [c % 10 for c in range(40)],
                              "group_names": list(FASHION_MNIST_CLASSES)})
