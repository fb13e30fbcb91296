"""Small tabular/image data sets bundled with scikit-learn: ``digits``, ``wine``, ``breast-cancer``.

scikit-learn ships these inside the package, so they load offline. None has an official test split, so a
fixed random 80/20 split is drawn here with ``numpy.random.default_rng(seed)`` (``seed=0`` by default;
PCG64 streams are stable across numpy versions, so the split is too). The test size is
``ceil(test_fraction * n)``, the same rounding as ``sklearn.model_selection.train_test_split``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.errors import DataError

__all__ = ["load_digits", "load_wine", "load_breast_cancer", "split_indices"]

_INSTALL_HINT = 'pip install "tricklab[sklearn]"'


def _sklearn_loader(fn_name: str) -> Callable[..., Any]:
    try:
        import sklearn.datasets as skd
    except ImportError as exc:
        raise DataError(
            f"this data set comes from scikit-learn, which cannot be imported ({exc}): {_INSTALL_HINT}"
        ) from exc
    return getattr(skd, fn_name)


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random (train, test) index split; both parts sorted so sample order follows the source."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = math.ceil(test_fraction * n)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _build(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    input_shape: tuple[int, ...],
    class_names: list[str],
    *,
    standardise: bool,
    test_fraction: float,
    seed: int,
    source: str,
) -> ArrayDataset:
    train, test = split_indices(len(y), test_fraction, seed)
    x = x.astype(np.float64)
    x_train, x_test = x[train], x[test]
    if standardise:
        # Statistics from the training part only, so nothing about the test set leaks into the inputs.
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std == 0] = 1.0  # a constant feature stays 0 rather than becoming NaN
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    def feats(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *input_shape)

    def labels(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return ArrayDataset(
        name=name,
        x_train=feats(x_train),
        y_train=labels(y[train]),
        x_test=feats(x_test),
        y_test=labels(y[test]),
        num_classes=len(class_names),
        input_shape=input_shape,
        class_names=class_names,
        meta={"source": source, "split_seed": seed, "test_fraction": test_fraction},
    )


@DATASETS.register("digits", summary="scikit-learn 8x8 digits: 1437/360 images, scaled to [0, 1]")
def load_digits(data_dir: str | None = None, *, seed: int = 0, test_fraction: float = 0.2) -> ArrayDataset:
    """The UCI optical digits bundled with scikit-learn: 1797 8x8 images with 17 grey levels (0..16).

    Pixels are divided by 16 (range [0, 1]), shaped ``(1, 8, 8)``. ``data_dir`` is ignored.
    """
    bunch = _sklearn_loader("load_digits")()
    return _build(
        "digits",
        bunch.data / 16.0,
        bunch.target,
        (1, 8, 8),
        [str(c) for c in bunch.target_names],
        standardise=False,
        test_fraction=test_fraction,
        seed=seed,
        source="sklearn.datasets.load_digits",
    )


@DATASETS.register("wine", summary="scikit-learn wine: 142/36 samples, 13 standardised features, 3 classes")
def load_wine(data_dir: str | None = None, *, seed: int = 0, test_fraction: float = 0.2) -> ArrayDataset:
    """The UCI wine recognition data (178 samples, 13 chemical measurements), standardised by train stats."""
    bunch = _sklearn_loader("load_wine")()
    return _build(
        "wine",
        bunch.data,
        bunch.target,
        (13,),
        [str(c) for c in bunch.target_names],
        standardise=True,
        test_fraction=test_fraction,
        seed=seed,
        source="sklearn.datasets.load_wine",
    )


@DATASETS.register(
    "breast-cancer", summary="scikit-learn breast cancer: 455/114 samples, 30 standardised features, 2 classes"
)
def load_breast_cancer(
    data_dir: str | None = None, *, seed: int = 0, test_fraction: float = 0.2
) -> ArrayDataset:
    """The Wisconsin diagnostic breast cancer data (569 samples, 30 features), standardised by train stats."""
    bunch = _sklearn_loader("load_breast_cancer")()
    return _build(
        "breast-cancer",
        bunch.data,
        bunch.target,
        (30,),
        [str(c) for c in bunch.target_names],
        standardise=True,
        test_fraction=test_fraction,
        seed=seed,
        source="sklearn.datasets.load_breast_cancer",
    )
