"""MNIST-1D (Greydanus & Kobak, 2020), generated offline and cached as ``.npz``.

The ``mnist1d`` package builds the data set procedurally from ten 1-D digit templates, so nothing is
downloaded. Generation takes a few seconds, so the arrays are cached in the user cache folder
(see :func:`tricklab.data.base.cache_dir`) under a file name derived from the generation arguments:
the plain and the shuffled variant, or any other argument set, each get their own file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tricklab.data.base import DATASETS, ArrayDataset, cache_dir
from tricklab.errors import DataError

__all__ = ["load_mnist1d", "load_mnist1d_shuffled", "MNIST1D_DEFAULTS"]

log = logging.getLogger(__name__)

_INSTALL_HINT = 'pip install "tricklab[mnist1d]"'
# Bumped when the cached file layout changes, so old cache files are ignored rather than misread.
_CACHE_FORMAT = 1

# The generation arguments of the paper / ``mnist1d.data.get_dataset_args()``. Kept here so a cache hit
# needs no import of mnist1d (which pulls in matplotlib and takes about a second). On a miss every one of
# these is written onto the package's args, so the cache key fully describes what was generated.
MNIST1D_DEFAULTS: dict[str, Any] = {
    "num_samples": 5000,
    "train_split": 0.8,
    "template_len": 12,
    "padding": [36, 60],
    "scale_coeff": 0.4,
    "max_translation": 48,
    "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2,
    "shear_scale": 0.75,
    "shuffle_seq": False,
    "final_seq_length": 40,
    "seed": 42,
}


def _mnist1d_version() -> str:
    try:
        return metadata.version("mnist1d")
    except metadata.PackageNotFoundError:
        raise DataError(
            f"the MNIST-1D data set needs the 'mnist1d' package, which is not installed: {_INSTALL_HINT}"
        ) from None


def _cache_path(folder: Path, args: dict[str, Any], version: str) -> Path:
    key = json.dumps({"args": args, "mnist1d": version, "format": _CACHE_FORMAT}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    variant = "shuffled" if args["shuffle_seq"] else "plain"
    return folder / f"mnist1d-{variant}-{digest}.npz"


def _generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    # mnist1d imports matplotlib; a headless default backend keeps it from looking for a display.
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise DataError(f"cannot import the 'mnist1d' package ({exc}): {_INSTALL_HINT}") from exc
    pkg_args = get_dataset_args()
    for k, v in args.items():
        setattr(pkg_args, k, v)
    # make_dataset reseeds the global `random` and numpy RNGs; restore them so loading data does not
    # change what the caller's own seeded code draws next.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(pkg_args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x_train": np.ascontiguousarray(d["x"], dtype=np.float32),
        "y_train": np.ascontiguousarray(d["y"], dtype=np.int64),
        "x_test": np.ascontiguousarray(d["x_test"], dtype=np.float32),
        "y_test": np.ascontiguousarray(d["y_test"], dtype=np.int64),
    }


def _read_cache(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except Exception as exc:  # a damaged cache is regenerated, never fatal
        log.warning("ignoring unreadable MNIST-1D cache %s (%s); regenerating", path, exc)
        return None
    return arrays


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Temp file in the same folder + os.replace: a reader (another process, a crashed run) never sees a
    # half-written file, and two concurrent writers just replace one complete file with another.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a read-only cache folder costs time, not correctness
        log.warning("could not write MNIST-1D cache %s (%s)", path, exc)


def _load(name: str, data_dir: str | None, shuffle_seq: bool, overrides: dict[str, Any]) -> ArrayDataset:
    unknown = sorted(set(overrides) - set(MNIST1D_DEFAULTS))
    if unknown:
        raise DataError(
            f"unknown MNIST-1D argument(s) {unknown}; known: {', '.join(sorted(MNIST1D_DEFAULTS))}"
        )
    if "shuffle_seq" in overrides:
        raise DataError("use the data set name 'mnist1d' or 'mnist1d-shuffled' instead of shuffle_seq")
    args = dict(MNIST1D_DEFAULTS, **overrides, shuffle_seq=bool(shuffle_seq))
    version = _mnist1d_version()
    folder = Path(data_dir).expanduser() if data_dir else cache_dir()
    path = _cache_path(folder, args, version)
    arrays = _read_cache(path)
    if arrays is None:
        arrays = _generate(args)
        _write_cache(path, arrays)
    length = int(arrays["x_train"].shape[1])
    return ArrayDataset(
        name=name,
        x_train=torch.from_numpy(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"]),
        x_test=torch.from_numpy(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"]),
        num_classes=10,
        input_shape=(length,),
        class_names=[str(i) for i in range(10)],
        meta={"source": f"mnist1d {version} (generated)", "cache_file": str(path), "args": args},
    )


@DATASETS.register("mnist1d", summary="MNIST-1D: 4000/1000 1-D digit signals of length 40, generated offline")
def load_mnist1d(data_dir: str | None = None, **overrides: Any) -> ArrayDataset:
    """MNIST-1D with the paper's default arguments (4000 train / 1000 test, length 40, seed 42).

    ``data_dir`` replaces the cache folder. Keyword arguments override generation arguments
    (names as in :data:`MNIST1D_DEFAULTS`, e.g. ``num_samples=10000``); each set is cached separately.
    """
    return _load("mnist1d", data_dir, False, overrides)


@DATASETS.register(
    "mnist1d-shuffled", summary="MNIST-1D with the spatial dimension permuted (the paper's shuffled variant)"
)
def load_mnist1d_shuffled(data_dir: str | None = None, **overrides: Any) -> ArrayDataset:
    """MNIST-1D with ``shuffle_seq=True``: one fixed permutation of the 40 positions for all samples.

    It destroys spatial locality while keeping the information, so it separates models that exploit
    locality (CNNs) from those that do not (MLPs).
    """
    return _load("mnist1d-shuffled", data_dir, True, overrides)
