"""Hugging Face ``datasets`` saved with ``save_to_disk`` (extra ``hf``), read with ``datasets.load_from_disk``.

Nothing is fetched from the hub: ``load_from_disk`` reads the Arrow files in the folder. A ``DatasetDict``
brings its splits (``train``; ``validation``/``valid``/``val``/``dev``; ``test``), a single ``Dataset`` is
split like any other source. The target column is ``target:`` (default ``label``); a ``ClassLabel`` target
keeps the file's class ids and names, a list of ``ClassLabel`` is a multi-label target. The inputs are
``x:`` (default: every other column) and are read as one of:

* ``image``: one ``Image`` column, decoded and resized like an image folder;
* ``text``: one string column, tokenised like a (text, label) table;
* ``array``: one list/array column of numbers (fixed length), like an ``npz`` array;
* ``table``: several scalar columns, encoded like a CSV table (categorical strings, standardised numbers).

``input: auto`` picks by the column types (one Image column -> image, one string column -> text, one list
column -> array, otherwise table). The fingerprint hashes every file in the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tricklab.data.files.arrays import featurize_arrays
from tricklab.data.files.common import Digest, Features, Part, Sources, check_finite, require
from tricklab.data.files.images import decode_images, open_image
from tricklab.data.files.spec import FileSpec
from tricklab.data.files.tables import check_frame_features, featurize_table, target_values
from tricklab.data.files.text import featurize_texts, text_column
from tricklab.errors import ConfigError, DataError

__all__ = ["read_hf"]

_SPLIT_NAMES = {"train": "train", "validation": "val", "valid": "val", "val": "val", "dev": "val", "test": "test"}
_LISTS = ("List", "Sequence", "LargeList", "Array2D", "Array3D", "Array4D", "Array5D")


def _kind_of(feature: Any) -> str:
    name = type(feature).__name__
    if name == "Image":
        return "image"
    if name in _LISTS:
        return "array"
    if name == "Value" and str(getattr(feature, "dtype", "")) in ("string", "large_string"):
        return "text"
    return "scalar"


def _open_splits(spec: FileSpec, digest: Digest) -> dict[str, tuple[Any, str]]:
    datasets = require("datasets", "format hf_disk")
    out: dict[str, tuple[Any, str]] = {}
    for role, loc in spec.sources.items():
        path = loc["path"]
        digest.add_tree(role, path)
        try:
            obj = datasets.load_from_disk(str(path))
        except Exception as exc:  # FileNotFoundError, ArrowInvalid, JSON errors, ...
            raise DataError(f"{path}: not a data set saved with save_to_disk ({type(exc).__name__}: {exc})") from exc
        if isinstance(obj, datasets.DatasetDict):
            names = list(obj.keys())
            if role == "all":
                unknown = [n for n in names if n not in _SPLIT_NAMES]
                if unknown or "train" not in names:
                    raise DataError(f"{path}: split names {names}; expected train (and validation/valid/val/dev, "
                                    "test). Save the splits under those names or give each as train:/val:/test:")
                for n in names:
                    out[_SPLIT_NAMES[n]] = (obj[n], f"{path} [{n}]")
            elif len(names) == 1:
                out[role] = (obj[names[0]], str(path))
            else:
                raise DataError(f"{path}: holds the splits {names}; as the {role} split it must hold one data set")
        else:
            out[role] = (obj, str(path))
    return out


def read_hf(spec: FileSpec, digest: Digest) -> Sources:
    o = spec.options
    splits = _open_splits(spec, digest)
    first_ds, first_name = splits.get("all") or splits["train"]
    cols = list(first_ds.column_names)
    targets = [o["target"]] if isinstance(o["target"], str) else list(o["target"])
    feats = first_ds.features
    for ds, name in splits.values():
        missing = [t for t in targets if t not in ds.column_names]
        if missing:
            raise DataError(f"{name}: no target column{'s' if len(missing) > 1 else ''} {missing}; its columns are "
                            f"{list(ds.column_names)}. Set target: to the right name")
    if o["x"] is None:
        xcols = [c for c in cols if c not in targets and c not in o["drop"]]
    else:
        xcols = [o["x"]] if isinstance(o["x"], str) else list(o["x"])
    for ds, name in splits.values():
        missing = [c for c in xcols if c not in ds.column_names]
        if missing:
            raise DataError(f"{name}: no input column{'s' if len(missing) > 1 else ''} {missing}; its columns are "
                            f"{list(ds.column_names)}. Set x: to the input column(s)")
    if not xcols:
        raise DataError(f"{first_name}: no input columns besides the target {targets}")
    kinds = [_kind_of(feats[c]) for c in xcols]
    kind = o["input"]
    if kind == "auto":
        kind = kinds[0] if len(xcols) == 1 and kinds[0] != "scalar" else "table"
    if kind in ("image", "text", "array") and len(xcols) != 1:
        raise ConfigError(f"data.input {kind} reads one column; x: names {xcols}")
    if kind == "table" and any(k in ("image", "array") for k in kinds):
        bad = [c for c, k in zip(xcols, kinds) if k in ("image", "array")]
        raise ConfigError(f"data.input table needs scalar columns; {bad} hold images or lists: name one column "
                          "with x: and set input: image or array")

    classes, class_names = None, None
    tfeat = feats[targets[0]]
    if len(targets) == 1 and type(tfeat).__name__ == "ClassLabel":
        classes, class_names = list(range(tfeat.num_classes)), list(tfeat.names)
    elif len(targets) == 1 and type(tfeat).__name__ in _LISTS:
        inner = getattr(tfeat, "feature", None)
        if type(inner).__name__ == "ClassLabel":
            classes, class_names = list(range(inner.num_classes)), list(inner.names)
    elif len(targets) > 1:
        class_names = targets

    parts: dict[str, Part] = {}
    for role, (ds, name) in splits.items():
        part = Part(name, None, None, np.arange(len(ds)), item="item")
        if len(ds) == 0:
            raise DataError(f"{name}: the data set holds no items")
        part.y = target_values(ds.select_columns(targets).to_pandas(), targets, o["label_sep"], name)
        if kind == "table":
            df = ds.select_columns(xcols).to_pandas()
            check_frame_features(df, xcols, part)
            part.x = df
        elif kind == "text":
            part.x = text_column(list(ds[xcols[0]]), part, xcols[0])
        elif kind == "array":
            try:
                x = np.asarray(ds.with_format("numpy")[xcols[0]])
            except Exception as exc:
                raise DataError(f"{name}: column {xcols[0]!r} is not an array of equal-length rows ({exc})") from exc
            if x.dtype == object or x.dtype.kind not in "biuf":
                raise DataError(f"{name}: column {xcols[0]!r} must hold numbers in rows of one length, got {x.dtype}")
            part.x = x if x.ndim > 1 else x[:, None]
            check_finite(part.x, part)
        else:
            part.x = _image_refs(ds, xcols[0], name)
        parts[role] = part

    if kind == "image":
        order = list(parts)
        imgs = [im for r in order for im in parts[r].x]
        names = [f"{parts[r].file}: item {i}" for r in order for i in range(len(parts[r]))]
        x_all, mode = decode_images(imgs, names, o["size"], o["mode"], o["resample"])
        start = 0
        for r in order:
            n = len(parts[r])
            parts[r].x = x_all[start:start + n]
            start += n

    if o["standardize"] is not None and kind in ("image", "text"):
        raise ConfigError(f"data.standardize applies to table and array inputs, not to {kind} input")
    standardize = (kind == "table") if o["standardize"] is None else o["standardize"]

    def featurize(p: dict[str, Part]) -> Features:
        if kind == "table":
            return featurize_table(p, {**o, "standardize": standardize})
        if kind == "text":
            return featurize_texts(p, o)
        f = featurize_arrays(p, standardize if kind == "array" else False)
        if kind == "image":
            f.meta.update({"image_mode": mode, "image_size": list(f.input_shape[1:])})
        return f

    meta = {"hf_input": kind, "hf_columns": xcols}
    return Sources(parts, featurize, classes=classes, class_names=class_names, meta=meta)


def _image_refs(ds: Any, col: str, name: str) -> list[Any]:
    """The images of ``col`` opened from their stored bytes (not decoded yet), each error naming the item."""
    datasets = require("datasets", "format hf_disk")
    raw = ds.cast_column(col, datasets.Image(decode=False))[col]
    out = []
    for i, rec in enumerate(raw):
        data = rec.get("bytes") if isinstance(rec, dict) else None
        if data is None and isinstance(rec, dict) and rec.get("path"):
            try:
                data = Path(rec["path"]).read_bytes()
            except OSError as exc:
                raise DataError(f"{name}: item {i}: image file {rec['path']} cannot be read ({exc})") from exc
        if data is None:
            raise DataError(f"{name}: item {i}: column {col!r} holds no image")
        out.append(open_image(data, f"{name}: item {i}"))
    return out
