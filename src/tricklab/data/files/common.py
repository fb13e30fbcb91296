"""Pieces every format shares: a :class:`Part` of a data set before fitting, the :class:`Digest` of the files
read, the import of optional extras, and the check for non-finite features."""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tricklab.errors import DataError

__all__ = ["Features", "Part", "Digest", "Sources", "check_finite", "require"]

_CHUNK = 1 << 20

# extra -> the modules it provides, for the install hint when one is missing
_EXTRA_OF = {"pandas": "tables", "pyarrow": "tables", "h5py": "hdf5", "PIL": "images", "datasets": "hf"}


def require(module: str, what: str) -> ModuleType:
    """Import an optional extra or raise DataError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA_OF.get(module.split(".")[0], "files")
        raise DataError(f"{what} needs the {module.split('.')[0]!r} package, which cannot be imported ({exc}): "
                        f'pip install "tricklab[{extra}]"') from exc


@dataclass
class Part:
    """One split's items before anything is fitted: features in the reader's raw form, targets as read.

    ``x`` is an ndarray (arrays, decoded images, texts as an object array) or a pandas DataFrame (tables).
    ``rows`` are the items' positions in ``file`` so a message about an item of a carved split still points at
    the right row; ``paths`` (images) names each item's own file instead.
    """

    file: str
    x: Any
    y: Any
    rows: np.ndarray
    item: str = "row"
    paths: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.rows))

    def take(self, idx: np.ndarray) -> Part:
        idx = np.asarray(idx, dtype=np.int64)
        x = self.x.iloc[idx].reset_index(drop=True) if hasattr(self.x, "iloc") else self.x[idx]
        y = None if self.y is None else self.y[idx]
        paths = None if self.paths is None else self.paths[idx]
        return Part(self.file, x, y, self.rows[idx], self.item, paths)

    def describe(self, i: int) -> str:
        """Where item ``i`` came from, for messages: ``file.csv: row 17`` or the image's own path."""
        if self.paths is not None:
            return str(self.paths[i])
        return f"{self.file}: {self.item} {int(self.rows[i])}"


@dataclass
class Features:
    """What a featurizer returns: one array per split, the shape of one sample and what it fitted."""

    x: dict[str, np.ndarray]
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sources:
    """What a reader returns: the parts by role (``all`` or train/val/test) and how to turn them into features.

    ``classes``/``class_names`` are a class order the file declares (an HF ClassLabel), or None.
    """

    parts: dict[str, Part]
    featurize: Callable[[dict[str, Part]], Features]
    classes: list[Any] | None = None
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Digest:
    """SHA-256 over the spec's options and the bytes of every file read, each under a stable name.

    Names are the role and, inside a folder, the path relative to it (``train:cat/001.png``), never the
    absolute path, so moving a data folder keeps its digest while renaming a class folder changes it.
    """

    def __init__(self, canonical_spec: str) -> None:
        self._spec = canonical_spec
        self._files: dict[str, str] = {}

    def add_bytes(self, name: str, data: bytes) -> None:
        self._files[name] = hashlib.sha256(data).hexdigest()

    def add_file(self, name: str, path: Path) -> None:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        self._files[name] = h.hexdigest()

    def add_tree(self, role: str, root: Path) -> None:
        """Every file under ``root`` (sorted relative paths), e.g. a dataset saved with ``save_to_disk``."""
        for p in sorted(q for q in root.rglob("*") if q.is_file()):
            self.add_file(f"{role}:{p.relative_to(root).as_posix()}", p)

    @property
    def num_files(self) -> int:
        return len(self._files)

    def hexdigest(self) -> str:
        h = hashlib.sha256(self._spec.encode())
        for name in sorted(self._files):
            h.update(b"\0" + name.encode() + b"\0" + self._files[name].encode())
        return h.hexdigest()


def check_finite(x: np.ndarray, part: Part, columns: list[str] | None = None) -> None:
    """Raise DataError at the first NaN/inf feature: the item and the column (or the position in a sample)."""
    if x.dtype.kind not in "fc":
        return
    flat = x.reshape(len(x), -1)
    bad = ~np.isfinite(flat)
    if not bad.any():
        return
    r, c = (int(v) for v in np.argwhere(bad)[0])
    what = "NaN" if np.isnan(flat[r, c]) else "an infinite value"
    if columns is not None:
        col = f"column {columns[c]!r}"
    elif x.ndim == 2:
        col = f"column {c}"
    else:
        col = f"position {tuple(int(i) for i in np.unravel_index(c, x.shape[1:]))} of the sample"
    n_bad = int(bad.any(axis=1).sum())
    raise DataError(f"{part.describe(r)}, {col}: {what} in the features ({n_bad} item(s) affected); "
                    "fill or drop the missing values before loading")
