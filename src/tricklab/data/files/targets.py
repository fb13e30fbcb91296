"""Targets: from the label values a file holds to int64 class ids, 0/1 indicator rows or float outputs.

Everything is fitted on the training split only: the class list (sorted label values, or the order the user
or the file declares), class weights, the multi-label vocabulary and the regression target's mean/std. A
label that turns up in the validation or test split but never in the training split is an error: the
model could not learn it, and a silent extra class would skew every metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tricklab.data.files.common import Part
from tricklab.errors import ConfigError, DataError

__all__ = ["Targets", "encode_targets", "is_label_list", "resolve_kind"]

_ROLES = ("train", "val", "test")


@dataclass
class Targets:
    kind: str
    y: dict[str, np.ndarray]
    num_outputs: int
    class_names: list[str] | None
    meta: dict[str, Any] = field(default_factory=dict)


def is_label_list(v: Any) -> bool:
    return isinstance(v, (list, tuple, set, frozenset, np.ndarray))


def _py(v: Any) -> Any:
    """A label as a plain Python value: numpy scalars unwrapped, bytes decoded (HDF5 strings)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    return v


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or type(v).__name__ in ("NAType", "NaTType")


def _sort_key(v: Any) -> tuple[int, Any]:
    # numbers before strings, each in natural order, so 2 < 10 and "a" < "b" without comparing int to str
    if isinstance(v, (bool, int, float)):
        return (0, v)
    return (1, str(v))


def resolve_kind(requested: str, y: Any) -> tuple[str, bool]:
    """The target kind and whether it was inferred: ``auto`` reads the training targets' type.

    2-D float -> regression (several outputs); 2-D integer/bool -> multilabel (0/1 indicators); a column of
    label lists -> multilabel; 1-D float -> regression; anything else (ints, strings, bools) -> multiclass.
    """
    if requested != "auto":
        return requested, False
    arr = np.asarray(y) if not isinstance(y, np.ndarray) else y
    if arr.dtype == object and arr.ndim == 1 and len(arr) and any(is_label_list(v) for v in arr.tolist()):
        return "multilabel", True
    if arr.ndim == 2:
        return ("regression" if arr.dtype.kind == "f" else "multilabel"), True
    if arr.dtype.kind == "f":
        return "regression", True
    return "multiclass", True


def encode_targets(kind: str, parts: dict[str, Part], opts: dict[str, Any], classes: list[Any] | None = None,
                   class_names: list[str] | None = None) -> Targets:
    """Encode every split's targets for ``kind``, fitted on ``parts["train"]``.

    ``classes`` (with optional display ``class_names``) is a class order declared by the file (an HF
    ClassLabel, the target columns of a table); ``opts["classes"]`` (the user's) takes precedence.
    """
    if opts.get("classes") is not None:
        classes, class_names = list(opts["classes"]), None
    if kind in ("multiclass", "binary"):
        return _classification(kind, parts, opts, classes, class_names)
    if kind == "multilabel":
        return _multilabel(parts, classes, class_names)
    if opts.get("positive_label") is not None:
        raise ConfigError("data.positive_label applies to binary targets only (target_kind: binary)")
    if opts.get("classes") is not None:
        raise ConfigError("data.classes applies to class targets; these targets are a regression")
    return _regression(parts, bool(opts.get("standardize_target")))


# --------------------------------------------------------------------------------------------- classes
def _labels(part: Part) -> list[Any]:
    y = part.y
    if y is None:
        raise DataError(f"{part.file}: no targets were read")
    arr = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
    if arr.ndim == 2 and arr.shape[1] > 1:
        # a one-hot matrix stated as multiclass: exactly one 1 per row becomes its column index
        num = np.asarray(arr, dtype=np.float64)
        ok = np.isin(num, (0.0, 1.0)).all(axis=1) & (num.sum(axis=1) == 1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(f"{part.describe(i)}: a 2-D target for multiclass must be one-hot (exactly one 1 per "
                            f"row), got {arr[i].tolist()}; for several labels per item use target_kind: multilabel")
        return num.argmax(axis=1).tolist()
    if arr.ndim == 2:
        arr = arr[:, 0]
    vals = [_py(v) for v in arr.tolist()]
    for i, v in enumerate(vals):
        if _missing(v):
            raise DataError(f"{part.describe(i)}: the target is missing; fill or drop the rows without a label")
        if is_label_list(v):
            raise DataError(f"{part.describe(i)}: the target is a list of labels {list(v)!r}; "
                            "use target_kind: multilabel")
    return vals


def _classification(kind: str, parts: dict[str, Part], opts: dict[str, Any], declared: list[Any] | None,
                    declared_names: list[str] | None) -> Targets:
    vals = {role: _labels(parts[role]) for role in _ROLES if role in parts}
    if declared is not None:
        classes = list(declared)
    else:
        classes = sorted(set(vals["train"]), key=_sort_key)
    names = list(declared_names) if declared_names is not None else [str(c) for c in classes]
    if kind == "binary":
        if len(classes) != 2:
            raise DataError(f"{parts['train'].file}: target_kind binary needs exactly 2 classes, the training split "
                            f"has {len(classes)}: {classes[:20]}; use target_kind: multiclass")
        pos = opts.get("positive_label")
        if pos is not None:
            hit = [i for i, c in enumerate(classes) if c == pos or str(c) == str(pos)]
            if not hit:
                raise ConfigError(f"data.positive_label {pos!r} is not one of the two classes {classes}")
            if hit[0] == 0:  # the positive class is id 1
                classes, names = classes[::-1], names[::-1]
    elif opts.get("positive_label") is not None:
        raise ConfigError("data.positive_label applies to binary targets only (target_kind: binary)")
    index = {c: i for i, c in enumerate(classes)}
    ids: dict[str, np.ndarray] = {}
    for role, v in vals.items():
        ids[role] = np.fromiter((index.get(c, -1) for c in v), dtype=np.int64, count=len(v))
        bad = np.flatnonzero(ids[role] < 0)
        if len(bad):
            i = int(bad[0])
            if role == "train":
                raise DataError(f"{parts[role].describe(i)}: label {v[i]!r} is not one of the declared classes "
                                f"{classes[:20]}; add it to classes: or fix the label")
            raise DataError(_only_in(parts[role], role, i, v[i], classes, len(bad)))
    counts = np.bincount(ids["train"], minlength=len(classes))
    for role in ("val", "test"):
        if role in ids:
            absent = np.flatnonzero(counts[ids[role]] == 0)
            if len(absent):
                i = int(absent[0])
                raise DataError(_only_in(parts[role], role, i, vals[role][i], [c for c, n in zip(classes, counts)
                                                                                if n > 0], len(absent)))
    if int((counts > 0).sum()) < 2:
        raise DataError(f"{parts['train'].file}: the training split holds a single class ({classes[0]!r}); "
                        "a classifier needs at least two")
    n = int(counts.sum())
    # sklearn's "balanced" weights n / (C * n_c): the loss weight that makes every class count equally
    present = counts > 0
    weights = np.where(present, n / (int(present.sum()) * np.maximum(counts, 1)), 0.0)
    meta: dict[str, Any] = {
        "label_map": {str(c): i for i, c in enumerate(classes)},
        "class_counts": counts.tolist(),
        "class_weights": weights.tolist(),
    }
    absent_train = [names[i] for i in np.flatnonzero(~present)]
    if absent_train:
        meta["classes_absent_from_train"] = absent_train
    if kind == "binary":
        meta["positive_class"] = names[1]
        # BCE-with-logits pos_weight = negatives / positives on the training split
        meta["pos_weight"] = float(counts[0] / counts[1])
    return Targets(kind, ids, len(classes), names, meta)


def _only_in(part: Part, role: str, i: int, label: Any, train_classes: list[Any], n_bad: int) -> str:
    return (f"{part.describe(i)}: label {label!r} appears in the {role} split ({n_bad} item(s)) but never in the "
            f"training split, so a model cannot learn it. Training classes: {train_classes[:20]}"
            f"{' ...' if len(train_classes) > 20 else ''}. Move some of its items into the training data or "
            f"drop them")


# ------------------------------------------------------------------------------------------ multi-label
def _indicators(part: Part) -> np.ndarray | None:
    y = part.y
    if isinstance(y, np.ndarray) and y.ndim == 2 and y.dtype != object:
        return y
    return None


def _multilabel(parts: dict[str, Part], declared: list[Any] | None, declared_names: list[str] | None) -> Targets:
    ind = {role: _indicators(parts[role]) for role in _ROLES if role in parts}
    mats: dict[str, np.ndarray] = {}
    if all(v is not None for v in ind.values()):
        width = ind["train"].shape[1]
        for role, m in ind.items():
            part = parts[role]
            if m.shape[1] != width:
                raise DataError(f"{part.file}: {m.shape[1]} label columns, the training split has {width}")
            num = m.astype(np.float64, copy=False)
            bad = ~np.isin(num, (0.0, 1.0))
            if bad.any():
                r, c = (int(v) for v in np.argwhere(bad)[0])
                raise DataError(f"{part.describe(r)}, label column {c}: multi-label indicators must be 0 or 1, "
                                f"got {m[r, c]!r}")
            mats[role] = num.astype(np.float32)
        if declared_names is not None:
            names = list(declared_names)
        elif declared is not None:
            names = [str(c) for c in declared]
        else:
            names = [str(i) for i in range(width)]
        if len(names) != width:
            raise ConfigError(f"data.classes names {len(names)} labels but the targets have {width} columns")
    else:
        lists: dict[str, list[list[Any]]] = {}
        for role in ind:
            part = parts[role]
            out = []
            for i, v in enumerate(np.asarray(part.y, dtype=object).tolist()):
                v = _py(v)
                if _missing(v):
                    raise DataError(f"{part.describe(i)}: the target is missing (use an empty list for no labels)")
                if not is_label_list(v):
                    raise DataError(f"{part.describe(i)}: a multi-label target must be a list of labels (or a string "
                                    f"split by label_sep), got {v!r}")
                out.append([_py(t) for t in (v.tolist() if isinstance(v, np.ndarray) else v)])
            lists[role] = out
        vocab = list(declared) if declared is not None else \
            sorted({t for row in lists["train"] for t in row}, key=_sort_key)
        names = list(declared_names) if declared_names is not None else [str(c) for c in vocab]
        index = {c: j for j, c in enumerate(vocab)}
        for role, rows in lists.items():
            m = np.zeros((len(rows), len(vocab)), dtype=np.float32)
            for i, row in enumerate(rows):
                for t in row:
                    j = index.get(t)
                    if j is None:
                        if role == "train":
                            raise DataError(f"{parts[role].describe(i)}: label {t!r} is not one of the declared "
                                            f"classes {vocab[:20]}")
                        raise DataError(_only_in(parts[role], role, i, t, vocab, 1))
                    m[i, j] = 1.0
            mats[role] = m
    if not mats["train"].shape[1]:
        raise DataError(f"{parts['train'].file}: the training split has no labels at all")
    pos = mats["train"].sum(axis=0)
    for role in ("val", "test"):
        if role in mats:
            hit = (mats[role] > 0) & (pos[None, :] == 0)
            if hit.any():
                i, j = (int(v) for v in np.argwhere(hit)[0])
                raise DataError(_only_in(parts[role], role, i, names[j], [nm for nm, p in zip(names, pos) if p > 0],
                                         int(hit.any(axis=1).sum())))
    n = mats["train"].shape[0]
    meta = {
        "label_map": {nm: j for j, nm in enumerate(names)},
        "label_counts": pos.astype(np.int64).tolist(),
        # BCE-with-logits pos_weight per label = negatives / positives on the training split
        "pos_weight": np.where(pos > 0, (n - pos) / np.maximum(pos, 1), 0.0).tolist(),
    }
    return Targets("multilabel", mats, len(names), names, meta)


# ------------------------------------------------------------------------------------------- regression
def _floats(part: Part) -> np.ndarray:
    y = part.y
    arr = y if isinstance(y, np.ndarray) else np.asarray(y, dtype=object)
    if arr.ndim not in (1, 2):
        raise DataError(f"{part.file}: regression targets must be 1-D or 2-D (several outputs), got shape "
                        f"{arr.shape}")
    if arr.dtype.kind in "biuf":
        out = arr.astype(np.float64)
    else:
        flat = arr.reshape(len(arr), -1)
        out = np.empty(flat.shape, dtype=np.float64)
        for i in range(flat.shape[0]):
            for j in range(flat.shape[1]):
                v = _py(flat[i, j])
                try:
                    out[i, j] = float(v) if not _missing(v) else math.nan
                except (TypeError, ValueError):
                    raise DataError(f"{part.describe(i)}: regression target {v!r} is not a number") from None
        out = out.reshape(arr.shape)
    bad = ~np.isfinite(out.reshape(len(out), -1))
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        raise DataError(f"{part.describe(i)}: the regression target is missing or not finite; fill or drop it")
    return out


def _regression(parts: dict[str, Part], standardize: bool) -> Targets:
    ys = {role: _floats(parts[role]) for role in _ROLES if role in parts}
    width = 1 if ys["train"].ndim == 1 else ys["train"].shape[1]
    for role, y in ys.items():
        if (1 if y.ndim == 1 else y.shape[1]) != width or y.ndim != ys["train"].ndim:
            raise DataError(f"{parts[role].file}: {role} targets have shape {y.shape[1:]}, the training split "
                            f"{ys['train'].shape[1:]}")
    meta: dict[str, Any] = {"target_standardized": standardize}
    if standardize:
        mean = ys["train"].mean(axis=0)
        std = ys["train"].std(axis=0)
        std = np.where(std == 0, 1.0, std)  # a constant target stays 0 instead of NaN
        ys = {role: (y - mean) / std for role, y in ys.items()}
        meta["target_mean"] = np.atleast_1d(mean).tolist()
        meta["target_std"] = np.atleast_1d(std).tolist()
    return Targets("regression", {r: y.astype(np.float32) for r, y in ys.items()}, width, None, meta)
