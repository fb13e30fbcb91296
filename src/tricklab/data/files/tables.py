"""Tables: CSV and Parquet through pandas (extra ``tables``: pandas + pyarrow).

One column is the target (``target: price``; a list of columns for several regression outputs or 0/1
multi-label indicators; ``label_sep: ";"`` splits one text column into a label list). The features are
``features:`` (default: every other column, less ``drop:``). Numeric columns become one float each,
standardised with the training split's mean and (population) standard deviation; categorical columns
(``categorical: auto`` = the non-numeric ones, or a list) are one-hot or ordinal coded with the categories
of the training split. A category first seen in the validation or test split becomes all zeros (one-hot) or
-1 (ordinal), is counted in ``meta["unseen_categories"]`` and warned about; ``on_unseen: error`` refuses it.
Categories are compared as text, so ``7`` in one file and ``"7"`` in another are the same category.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.data.files.common import Digest, Features, Part, Sources, require
from tricklab.data.files.spec import FileSpec
from tricklab.errors import ConfigError, DataError

__all__ = ["read_frame", "read_tables", "featurize_table", "table_kind"]


def table_kind(path: Path, declared: str) -> str:
    if declared in ("csv", "parquet"):
        return declared
    if path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    return "csv"


def read_frame(path: Path, kind: str, sep: str | None, encoding: str) -> Any:
    """Read one table file into a DataFrame; any parse failure is a DataError naming the file."""
    pd = require("pandas", f"format {kind}")
    if kind == "parquet":
        require("pyarrow", "format parquet")
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a file it cannot read
            raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    if sep is None:
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        return pd.read_csv(path, sep=sep, encoding=encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: byte {exc.start} is not valid {encoding} ({exc.reason}); set encoding: to the "
                        "file's text encoding (e.g. latin-1)") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file with separator {sep!r} ({exc})") from exc


def _as_list(v: Any) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _missing_columns(df: Any, wanted: list[str], path: str, what: str, key: str) -> None:
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        cols = [str(c) for c in df.columns]
        raise DataError(f"{path}: no {what} column{'s' if len(missing) > 1 else ''} {missing}; its columns are "
                        f"{cols}. Set {key}: to the right name")


def target_values(df: Any, targets: list[str], label_sep: str | None, path: str) -> np.ndarray:
    """The raw targets of a frame: 1-D for one column (label lists with ``label_sep``), 2-D for several."""
    pd = require("pandas", "tables")
    if len(targets) > 1:
        if label_sep is not None:
            raise ConfigError("data.label_sep splits one text column into labels; it cannot be used with several "
                              "target columns")
        return df[targets].to_numpy()
    col = df[targets[0]]
    if label_sep is None:
        return col.to_numpy()
    out = np.empty(len(col), dtype=object)
    for i, v in enumerate(col.tolist()):
        # an empty cell (read as NaN) is an item without labels
        out[i] = [] if (v is None or (not isinstance(v, str) and pd.isna(v))) else \
            [t.strip() for t in str(v).split(label_sep) if t.strip()]
    return out


def check_frame_features(df: Any, features: list[str], part: Part) -> None:
    """NaN or infinite values in the feature columns: the first one's row and column."""
    pd = require("pandas", "tables")
    na = df[features].isna().to_numpy()
    if na.any():
        r, c = (int(v) for v in np.argwhere(na)[0])
        raise DataError(f"{part.describe(r)}, column {features[c]!r}: NaN (missing value) in the features "
                        f"({int(na.any(axis=1).sum())} row(s) affected); fill or drop the missing values, or list "
                        "the column under drop:")
    for j, c in enumerate(features):
        s = df[c]
        if pd.api.types.is_float_dtype(s.dtype):
            inf = np.isinf(s.to_numpy(dtype=np.float64))
            if inf.any():
                raise DataError(f"{part.describe(int(np.flatnonzero(inf)[0]))}, column {c!r}: an infinite value in "
                                "the features")


def read_tables(spec: FileSpec, digest: Digest) -> Sources:
    targets = _as_list(spec["target"])
    parts: dict[str, Part] = {}
    features: list[str] | None = None
    for role in ("all", "train", "val", "test"):
        if role not in spec.sources:
            continue
        path = spec.sources[role]["path"]
        digest.add_file(f"{role}:path", path)
        kind = spec.format
        df = read_frame(path, kind, spec.options.get("sep"), spec.options.get("encoding", "utf-8"))
        if len(df) == 0:
            raise DataError(f"{path}: the table has a header but no rows")
        _missing_columns(df, targets, str(path), "target", "target")
        if features is None:  # fixed by the first (training) file; the others must have the same columns
            drop = spec["drop"]
            _missing_columns(df, drop, str(path), "drop", "drop")
            if spec["features"] is not None:
                features = _as_list(spec["features"])
                _missing_columns(df, features, str(path), "feature", "features")
                clash = [c for c in features if c in targets]
                if clash:
                    raise ConfigError(f"data.features lists the target column(s) {clash}")
            else:
                features = [c for c in df.columns if c not in targets and c not in drop]
            if not features:
                raise DataError(f"{path}: no feature columns left after the target {targets} and drop {drop}")
        else:
            _missing_columns(df, features, str(path), "feature", "features")
        part = Part(str(path), df[features].reset_index(drop=True), None, np.arange(len(df)), item="row")
        check_frame_features(df, features, part)
        part.y = target_values(df, targets, spec["label_sep"], str(path))
        parts[role] = part
    names = targets if len(targets) > 1 else None
    return Sources(parts, lambda p: featurize_table(p, spec.options), class_names=names)


def featurize_table(parts: dict[str, Part], opts: dict[str, Any]) -> Features:
    """Fit the column encoders on ``parts["train"]`` and apply them to every split."""
    pd = require("pandas", "tables")
    train = parts["train"].x
    cols = [str(c) for c in train.columns]
    is_num = {c: bool(pd.api.types.is_numeric_dtype(train[c].dtype)) for c in train.columns}
    cat_opt = opts["categorical"]
    if cat_opt == "auto":
        cats = [c for c in train.columns if not is_num[c]]
    else:
        cats = _as_list(cat_opt)
        unknown = [c for c in cats if c not in train.columns]
        if unknown:
            raise ConfigError(f"data.categorical names {unknown}, which are not feature columns {cols}")
        for c in train.columns:
            if c not in cats and not is_num[c]:
                text_rows = np.flatnonzero(pd.to_numeric(train[c], errors="coerce").isna().to_numpy())
                i = int(text_rows[0]) if len(text_rows) else 0
                raise DataError(f"{parts['train'].describe(i)}, column {c!r}: holds text ({train[c].iloc[i]!r}) but "
                                f"is not listed under categorical {cats}; list it there or drop it")
    numeric = [c for c in train.columns if c not in cats]

    def numbers(part: Part, c: Any) -> np.ndarray:
        s = part.x[c]
        if pd.api.types.is_numeric_dtype(s.dtype):
            return s.to_numpy(dtype=np.float64)
        conv = pd.to_numeric(s, errors="coerce")
        bad = np.flatnonzero(conv.isna().to_numpy() & ~s.isna().to_numpy())
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{part.describe(i)}, column {c!r}: {s.iloc[i]!r} is not a number (the column is "
                            "numeric in the training split); fix the value or list the column under categorical")
        return conv.to_numpy(dtype=np.float64)

    num = {role: (np.stack([numbers(p, c) for c in numeric], axis=1) if numeric
                  else np.zeros((len(p), 0))) for role, p in parts.items()}
    meta: dict[str, Any] = {"numeric_columns": [str(c) for c in numeric], "categorical_columns": [str(c) for c in cats]}
    if opts["standardize"] and numeric:
        mean = num["train"].mean(axis=0)
        std = num["train"].std(axis=0)
        std = np.where(std == 0, 1.0, std)  # a constant column stays 0 rather than NaN
        num = {role: (v - mean) / std for role, v in num.items()}
        meta["standardize"] = {"columns": [str(c) for c in numeric], "mean": mean.tolist(), "std": std.tolist()}
    categories = {c: sorted({str(v) for v in train[c].tolist()}) for c in cats}
    onehot = opts["categorical_encoding"] == "onehot"
    unseen: dict[str, dict[str, dict[str, int]]] = {}
    codes: dict[str, dict[Any, np.ndarray]] = {}
    for role, p in parts.items():
        codes[role] = {}
        for c in cats:
            index = {v: j for j, v in enumerate(categories[c])}
            text = [str(v) for v in p.x[c].tolist()]
            code = np.fromiter((index.get(v, -1) for v in text), dtype=np.int64, count=len(text))
            bad = np.flatnonzero(code < 0)
            if len(bad):
                if opts["on_unseen"] == "error":
                    i = int(bad[0])
                    raise DataError(f"{p.describe(i)}, column {c!r}: category {text[i]!r} never appears in the "
                                    f"training split (categories: {categories[c][:20]}); on_unseen: encode codes "
                                    "it as unknown instead")
                counts: dict[str, int] = {}
                for i in bad:
                    counts[text[i]] = counts.get(text[i], 0) + 1
                unseen.setdefault(role, {})[str(c)] = counts
            codes[role][c] = code
    names: list[str] = []
    for c in train.columns:
        if c in cats:
            names += [f"{c}={v}" for v in categories[c]] if onehot else [str(c)]
        else:
            names.append(str(c))
    xs: dict[str, np.ndarray] = {}
    for role, p in parts.items():
        blocks = []
        for c in train.columns:
            if c in cats:
                code = codes[role][c]
                if onehot:
                    block = np.zeros((len(p), len(categories[c])), dtype=np.float64)
                    ok = code >= 0
                    block[np.flatnonzero(ok), code[ok]] = 1.0  # an unseen category stays all zeros
                else:
                    block = code[:, None].astype(np.float64)  # unseen -> -1
            else:
                block = num[role][:, [numeric.index(c)]]
            blocks.append(block)
        xs[role] = np.concatenate(blocks, axis=1).astype(np.float32)
    meta.update({"feature_names": names, "categories": {str(c): v for c, v in categories.items()},
                 "categorical_encoding": opts["categorical_encoding"]})
    if unseen:
        meta["unseen_categories"] = unseen
        what = "; ".join(f"{role}: " + ", ".join(f"{c} {sorted(v)[:5]}" for c, v in d.items())
                         for role, d in unseen.items())
        warnings.warn(f"categories not seen in the training split were coded as unknown "
                      f"({'all zeros' if onehot else '-1'}): {what}", UserWarning, stacklevel=2)
    return Features(xs, (len(names),), meta)
