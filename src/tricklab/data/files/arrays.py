"""Arrays: ``.npz`` (named arrays), ``.npy`` (one file for x, one for y) and HDF5 (through h5py, extra ``hdf5``).

Arrays are read with ``allow_pickle=False``: a file holding Python objects is refused rather than unpickled
(unpickling runs arbitrary code). The feature array is named by ``x`` and the targets by ``y`` (defaults
``x``/``y``); a file that holds ``x_train``/``y_train`` (and optionally ``x_val``/``y_val``,
``x_test``/``y_test``) instead brings its own splits. Features become float32 (or int64 token ids with
``x_dtype: int64``); ``standardize: true`` subtracts the training split's per-feature mean and divides by its
standard deviation.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.data.files.common import Digest, Features, Part, Sources, check_finite, require
from tricklab.data.files.spec import FileSpec
from tricklab.errors import DataError

__all__ = ["read_arrays", "featurize_arrays", "standardize_fit"]

_SPLIT_SUFFIX = {"train": "_train", "val": "_val", "test": "_test"}


class _Npz:
    """An npz file opened without pickles; ``keys`` are its array names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc})") from exc
        if not hasattr(self._f, "files"):
            raise DataError(f"{path}: holds a single array (an .npy file?); use format: npy")
        self.keys = list(self._f.files)

    def get(self, key: str) -> np.ndarray:
        try:
            return self._f[key]
        except ValueError as exc:  # object arrays need pickle
            raise DataError(f"{self.path}: array {key!r} holds Python objects, which tricklab does not unpickle; "
                            "save numbers or fixed-width strings (np.array(labels, dtype=str))") from exc

    def close(self) -> None:
        self._f.close()


class _Hdf5:
    def __init__(self, path: Path) -> None:
        h5py = require("h5py", "format hdf5")
        self.path = path
        try:
            self._f = h5py.File(path, "r")
        except OSError as exc:
            raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
        keys: list[str] = []
        self._f.visititems(lambda name, obj: keys.append(name) if isinstance(obj, h5py.Dataset) else None)
        self.keys = keys

    def get(self, key: str) -> np.ndarray:
        arr = np.asarray(self._f[key][()])
        if arr.dtype == object:  # variable-length strings come back as bytes objects
            arr = np.array([v.decode("utf-8") if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()],
                           dtype=object).reshape(arr.shape)
        return arr

    def close(self) -> None:
        self._f.close()


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path}: holds Python objects, which tricklab does not unpickle; save numbers or "
                        "fixed-width strings") from exc
    except OSError as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{path}: holds several arrays (an .npz file?); use format: npz")
    return arr


def _check_pair(x: np.ndarray, y: np.ndarray, where: str, xname: str, yname: str) -> None:
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(f"{where}: {xname if x.ndim == 0 else yname} is a single value, not an array of items")
    if len(x) != len(y):
        raise DataError(f"{where}: {xname} has {len(x)} items but {yname} has {len(y)}; they must have one "
                        "target per item")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: {xname} has dtype {x.dtype}; features must be numbers")
    if len(x) == 0:
        raise DataError(f"{where}: {xname} holds no items")


def _part(file: str, x: np.ndarray, y: np.ndarray) -> Part:
    if x.ndim == 1:
        x = x[:, None]  # one feature per item
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column of targets, as np.save(y[:, None]) writes, is one target per item
    part = Part(file, x, y, np.arange(len(x)), item="index")
    check_finite(x, part)
    return part


def read_arrays(spec: FileSpec, digest: Digest) -> Sources:
    parts: dict[str, Part] = {}
    fmt = spec.format
    for role, loc in spec.sources.items():
        path = loc["path"]
        if fmt == "npy":
            digest.add_file(f"{role}:x", path)
            digest.add_file(f"{role}:y", loc["y"])
            x, y = _load_npy(path), _load_npy(loc["y"])
            _check_pair(x, y, f"{path} / {loc['y']}", f"x ({path.name})", f"y ({loc['y'].name})")
            parts[role] = _part(str(path), x, y)
            continue
        digest.add_file(f"{role}:path", path)
        f: Any = _Npz(path) if fmt == "npz" else _Hdf5(path)
        try:
            xk, yk = spec["x"], spec["y"]
            if role == "all" and xk not in f.keys and f"{xk}_train" in f.keys:
                # the file brings its own splits: x_train/y_train (+ x_val/y_val, x_test/y_test)
                for r, suf in _SPLIT_SUFFIX.items():
                    if f"{xk}{suf}" in f.keys or f"{yk}{suf}" in f.keys:
                        parts[r] = _named(f, f"{xk}{suf}", f"{yk}{suf}")
                continue
            parts[role] = _named(f, xk, yk)
        finally:
            f.close()
    return Sources(parts, lambda p: featurize_arrays(p, spec["standardize"], spec["x_dtype"]))


def _named(f: Any, xk: str, yk: str) -> Part:
    for key in (xk, yk):
        if key not in f.keys:
            raise DataError(f"{f.path}: no array {key!r}; it holds {f.keys}. Name the features with x: and the "
                            "targets with y: (or save them as x/y, or x_train/y_train/x_test/y_test)")
    x, y = f.get(xk), f.get(yk)
    _check_pair(x, y, str(f.path), repr(xk), repr(yk))
    return _part(str(f.path), x, y)


def standardize_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and (population) standard deviation over axis 0; a constant feature gets std 1."""
    x64 = x.astype(np.float64, copy=False)
    mean, std = x64.mean(axis=0), x64.std(axis=0)
    return mean, np.where(std == 0, 1.0, std)


def featurize_arrays(parts: dict[str, Part], standardize: bool, x_dtype: str = "float32") -> Features:
    """Features as float32 (standardised with the training split's statistics if asked) or int64 token ids."""
    shape = parts["train"].x.shape[1:]
    for role, p in parts.items():
        if p.x.shape[1:] != shape:
            raise DataError(f"{p.file}: {role} items have shape {p.x.shape[1:]}, training items {shape}")
    meta: dict[str, Any] = {}
    if x_dtype == "int64":
        if standardize:
            raise DataError("data.standardize cannot be used with x_dtype: int64 (token ids are not scaled)")
        out = {}
        for role, p in parts.items():
            x = p.x
            if x.dtype.kind == "f" and not np.array_equal(x, np.round(x)):
                r = int(np.argwhere(x.reshape(len(x), -1) != np.round(x.reshape(len(x), -1)))[0][0])
                raise DataError(f"{p.describe(r)}: x_dtype int64 needs whole numbers, got fractional values")
            out[role] = x.astype(np.int64)
        return Features(out, tuple(shape), meta)
    xs = {role: p.x.astype(np.float32) for role, p in parts.items()}
    if standardize:
        mean, std = standardize_fit(parts["train"].x)
        xs = {role: ((p.x - mean) / std).astype(np.float32) for role, p in parts.items()}
        meta["standardize"] = {"mean": mean.tolist(), "std": std.tolist()}
    return Features(xs, tuple(shape), meta)
