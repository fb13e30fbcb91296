"""The one entry point: a data spec in, a fully validated :class:`~tricklab.data.base.ArrayDataset` out.

Order of work, so that nothing half-loaded is ever returned and nothing about the held-out data leaks into
what is fitted: read and check every file (any bad item raises here) -> decide the target kind -> make the
splits (the user's files, or seeded cuts of one source) -> encode the targets (classes, weights, scaling
fitted on the training split) -> fit the feature encoders on the training split and apply them -> build the
tensors. The spec and every byte read go into ``source_digest``, which is part of the data's fingerprint.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from tricklab.data.base import ArrayDataset
from tricklab.data.files.arrays import read_arrays
from tricklab.data.files.common import Digest, Sources
from tricklab.data.files.hf import read_hf
from tricklab.data.files.images import read_image_folders
from tricklab.data.files.spec import FileSpec, parse_spec
from tricklab.data.files.splits import assign_splits, label_codes
from tricklab.data.files.tables import read_tables
from tricklab.data.files.targets import encode_targets, resolve_kind
from tricklab.data.files.text import IGNORE_INDEX, UNK, lm_windows, read_lm, read_text_table

__all__ = ["load_files"]

_READERS: dict[str, Callable[[FileSpec, Digest], Sources]] = {
    "npz": read_arrays, "npy": read_arrays, "hdf5": read_arrays,
    "csv": read_tables, "parquet": read_tables,
    "image_folder": read_image_folders,
    "text_table": read_text_table,
    "hf_disk": read_hf,
}


def load_files(spec: Mapping[str, Any] | None = None, data_dir: str | os.PathLike[str] | None = None,
               **options: Any) -> ArrayDataset:
    """Load a user's data described by ``spec`` (and/or keyword options) into an :class:`ArrayDataset`.

    ``spec`` is what a recipe's data section carries, e.g. ``{"format": "csv", "path": "houses.csv",
    "target": "price"}``; keyword options are merged over it. Relative paths are read from ``data_dir`` when
    given, else from the working folder. See ``docs/data-files.md`` for every format and option.

    Raises:
        ConfigError: an unknown option or a value of the wrong type.
        DataError: a missing or unreadable file, or a bad item in one (the message names the file, the row or
            item, and what is wrong).
    """
    raw = dict(spec or {})
    raw.update(options)
    fs = parse_spec(raw, data_dir)
    digest = Digest(fs.canonical())
    if fs.format == "text":
        return _load_lm(fs, digest)
    src = _READERS[fs.format](fs, digest)
    pool = src.parts["all"] if "all" in src.parts else src.parts["train"]
    kind, inferred = resolve_kind(fs["target_kind"], pool.y)
    stratify_by = _class_codes if kind in ("multiclass", "binary") else None
    parts, split = assign_splits(src.parts, stratify_by, fs.options, fs["stratify"])
    targets = encode_targets(kind, parts, fs.options, src.classes, src.class_names)
    feats = src.featurize(parts)
    meta = _base_meta(fs, digest, split)
    meta.update(target_kind=kind, target_kind_inferred=inferred, **targets.meta, **feats.meta, **src.meta)
    if kind == "regression":
        meta["target_shape"] = list(targets.y["train"].shape[1:])
    x_dtype = torch.int64 if feats.x["train"].dtype == np.int64 else torch.float32
    y_dtype = torch.float32 if kind in ("regression", "multilabel") else torch.int64

    def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return ArrayDataset(
        name=fs.name,
        x_train=t(feats.x["train"], x_dtype), y_train=t(targets.y["train"], y_dtype),
        x_test=t(feats.x["test"], x_dtype), y_test=t(targets.y["test"], y_dtype),
        x_val=t(feats.x["val"], x_dtype) if "val" in parts else None,
        y_val=t(targets.y["val"], y_dtype) if "val" in parts else None,
        num_classes=targets.num_outputs, input_shape=feats.input_shape, class_names=targets.class_names,
        meta=meta, source_digest=digest.hexdigest(),
    )


def _class_codes(part: Any) -> np.ndarray:
    y = part.y
    if isinstance(y, np.ndarray) and y.ndim == 2:  # one-hot stated as multiclass
        y = np.asarray(y, dtype=np.float64).argmax(axis=1)
    return label_codes(y)


def _base_meta(fs: FileSpec, digest: Digest, split: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": "files",
        "format": fs.format,
        "files": fs.describe_sources(),
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in fs.given.items()},
        "split": split,
        "source_digest": digest.hexdigest(),
        "source_files": digest.num_files,
    }


def _load_lm(fs: FileSpec, digest: Digest) -> ArrayDataset:
    ids, vocab, split = read_lm(fs, digest)
    xy = lm_windows(ids, fs.options)
    split["sizes"] = {role: int(xy[role][0].shape[0]) for role in ("train", "val", "test") if role in xy}
    meta = _base_meta(fs, digest, split)
    meta.update(target_kind="multiclass", target_kind_inferred=False, task="token-lm", vocab=vocab,
                unk_id=vocab.index(UNK), ignore_index=IGNORE_INDEX, tokenizer=fs["tokenizer"])
    val = xy.get("val", (None, None))
    return ArrayDataset(
        name=fs.name, x_train=xy["train"][0], y_train=xy["train"][1], x_test=xy["test"][0], y_test=xy["test"][1],
        x_val=val[0], y_val=val[1], num_classes=len(vocab), input_shape=(fs["block_size"],), meta=meta,
        source_digest=digest.hexdigest(),
    )
