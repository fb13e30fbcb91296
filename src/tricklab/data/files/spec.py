"""The data spec a recipe carries: ``{format: ..., path: ..., <options>}``, checked into a :class:`FileSpec`.

Every key is checked here, before any file is opened: an unknown key, a value of the wrong type or a missing
file is a :class:`~tricklab.errors.ConfigError` / :class:`~tricklab.errors.DataError` that names the key, so
a typo never silently falls back to a default. Locations are either one ``path`` (split by the loader) or the
user's own ``train`` / ``val`` / ``test`` files; every path is resolved against ``data_dir`` when relative.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import ConfigError, DataError

__all__ = ["FORMATS", "ROLES", "TARGET_KIND_CHOICES", "FileSpec", "format_options", "parse_spec"]

FORMATS = ("npz", "npy", "hdf5", "csv", "parquet", "image_folder", "text", "text_table", "hf_disk")
ROLES = ("train", "val", "test")
TARGET_KIND_CHOICES = ("auto", "multiclass", "binary", "multilabel", "regression")
LOCATION_KEYS = ("path", "train", "val", "test")

_SUFFIX_FORMAT = {".npz": "npz", ".npy": "npy", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".csv": "csv",
                  ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".txt": "text"}


# ------------------------------------------------------------------------------------------ value checkers
def _choice(*choices: Any) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> Any:
        if v not in choices:
            raise ConfigError(f"data.{key} must be one of {list(choices)}, got {v!r}")
        return v
    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"data.{key} must be true or false, got {v!r}")
    return v


def _opt_bool(key: str, v: Any) -> Any:
    return None if v is None else _bool(key, v)


def _pos_int(allow_none: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> Any:
        if v is None and allow_none:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"data.{key} must be a positive integer{' or null' if allow_none else ''}, got {v!r}")
        return v
    return check


def _fraction(key: str, v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) < 1.0:
        raise ConfigError(f"data.{key} must be a number in [0, 1), got {v!r}")
    return float(v)


def _int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"data.{key} must be an integer, got {v!r}")
    return v


def _str(allow_none: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> Any:
        if v is None and allow_none:
            return None
        if not isinstance(v, str) or not v:
            raise ConfigError(f"data.{key} must be a non-empty string{' or null' if allow_none else ''}, got {v!r}")
        return v
    return check


def _names(allow_none: bool = True, allow_auto: bool = False) -> Callable[[str, Any], Any]:
    """A column name or a list of names (``auto`` where allowed)."""
    def check(key: str, v: Any) -> Any:
        if v is None and allow_none:
            return None
        if allow_auto and v == "auto":
            return v
        if isinstance(v, str) and v:
            return v
        if isinstance(v, (list, tuple)) and all(isinstance(s, str) and s for s in v):
            return list(v)
        extra = ", 'auto'" if allow_auto else ""
        raise ConfigError(f"data.{key} must be a column name or a list of names{extra}, got {v!r}")
    return check


def _name_list(key: str, v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)) and all(isinstance(s, str) and s for s in v):
        return list(v)
    raise ConfigError(f"data.{key} must be a list of column names, got {v!r}")


def _classes(key: str, v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or len(v) < 1 or len({repr(c) for c in v}) != len(v):
        raise ConfigError(f"data.{key} must be a list of distinct label values (the class order), got {v!r}")
    return list(v)


def _label(key: str, v: Any) -> Any:
    if v is not None and not isinstance(v, (str, int, float, bool)):
        raise ConfigError(f"data.{key} must be a label value (string or number), got {v!r}")
    return v


def _size(key: str, v: Any) -> Any:
    """Image size: an int (square) or [height, width]."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return (v, v)
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in v)):
        return (int(v[0]), int(v[1]))
    raise ConfigError(f"data.{key} must be a positive int or [height, width], got {v!r}")


def _extensions(key: str, v: Any) -> list[str]:
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(s, str) and s for s in v):
        raise ConfigError(f"data.{key} must be a list of file suffixes such as ['.png', '.jpg'], got {v!r}")
    return [s.lower() if s.startswith(".") else "." + s.lower() for s in v]


def _sep(key: str, v: Any) -> Any:
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ConfigError(f"data.{key} must be a non-empty string such as ',' or ';', got {v!r}")
    return v


def _encoding_name(key: str, v: Any) -> str:
    import codecs

    if not isinstance(v, str):
        raise ConfigError(f"data.{key} must be a text encoding name such as 'utf-8', got {v!r}")
    try:
        codecs.lookup(v)
    except LookupError:
        raise ConfigError(f"data.{key}: unknown text encoding {v!r} (try 'utf-8' or 'latin-1')") from None
    return v


# option -> (default, checker). Common to every format:
_COMMON: dict[str, tuple[Any, Callable[[str, Any], Any]]] = {
    "name": (None, _str(allow_none=True)),
    "seed": (0, _int),
    "test_fraction": (None, _fraction),
    "val_fraction": (None, _fraction),
    "stratify": (True, _bool),
    "target_kind": ("auto", _choice(*TARGET_KIND_CHOICES)),
    "classes": (None, _classes),
    "positive_label": (None, _label),
    "standardize_target": (False, _bool),
}
_ARRAY = {
    "x": ("x", _str()),
    "y": ("y", _str()),
    "standardize": (False, _bool),
    "x_dtype": ("float32", _choice("float32", "int64")),
}
_TABLE_FEATURES = {
    "features": (None, _names()),
    "drop": ([], _name_list),
    "categorical": ("auto", _names(allow_none=False, allow_auto=True)),
    "categorical_encoding": ("onehot", _choice("onehot", "ordinal")),
    "standardize": (True, _bool),
    "on_unseen": ("encode", _choice("encode", "error")),
}
_READ_TABLE = {
    "sep": (None, _sep),
    "encoding": ("utf-8", _encoding_name),
    "table_format": ("auto", _choice("auto", "csv", "parquet")),
}
_TARGET = {"target": ("label", _names(allow_none=False)), "label_sep": (None, _sep)}
_IMAGE = {
    "size": (None, _size),
    "mode": ("auto", _choice("auto", "rgb", "grayscale")),
    "resample": ("bilinear", _choice("nearest", "bilinear", "bicubic", "lanczos")),
    "extensions": ([".png", ".jpg", ".jpeg"], _extensions),
}
_TOKENS = {
    "tokenizer": ("char", _choice("char", "word")),
    "lowercase": (False, _bool),
    "min_count": (1, _pos_int()),
    "max_vocab": (None, _pos_int(allow_none=True)),
}
_FORMAT_OPTIONS: dict[str, dict[str, tuple[Any, Callable[[str, Any], Any]]]] = {
    "npz": _ARRAY,
    "npy": {k: v for k, v in _ARRAY.items() if k not in ("x", "y")},
    "hdf5": _ARRAY,
    "csv": {**_TARGET, **_TABLE_FEATURES, **{k: v for k, v in _READ_TABLE.items() if k != "table_format"}},
    "parquet": {**_TARGET, **_TABLE_FEATURES},
    "image_folder": _IMAGE,
    "text": {**_TOKENS, "block_size": (128, _pos_int()), "stride": (None, _pos_int(allow_none=True)),
             "max_train_windows": (None, _pos_int(allow_none=True)), "encoding": ("utf-8", _encoding_name)},
    "text_table": {**_TARGET, **_TOKENS, **_READ_TABLE, "text": ("text", _str()),
                   "max_len": (None, _pos_int(allow_none=True))},
    # standardize: null means "true for table inputs, false for array inputs" (the defaults of csv and npz)
    "hf_disk": {**_TARGET, **_TOKENS, **_TABLE_FEATURES, **_IMAGE, "x": (None, _names()),
                "standardize": (None, _opt_bool),
                "input": ("auto", _choice("auto", "table", "image", "text", "array")),
                "max_len": (None, _pos_int(allow_none=True))},
}
# Options that do not apply to a format even though they are common (text LM has no labels to stratify by).
_NOT_FOR = {"text": {"stratify", "target_kind", "classes", "positive_label", "standardize_target"}}


def format_options(fmt: str) -> dict[str, Any]:
    """Every option ``fmt`` accepts (beyond the locations) with its default: for docs and error messages."""
    opts = {**_COMMON, **_FORMAT_OPTIONS[fmt]}
    return {k: d for k, (d, _) in opts.items() if k not in _NOT_FOR.get(fmt, set())}


@dataclass(frozen=True)
class FileSpec:
    """A checked data spec.

    ``sources`` maps a role to its files: ``"all"`` (one ``path``, split by the loader) or any of ``"train"``,
    ``"val"``, ``"test"`` (the user's own splits). Each entry maps a location key to a resolved path: ``path``
    for every format, plus ``y`` (the labels file) for ``npy``. ``options`` holds every option of the format,
    defaults filled in; ``given`` is the spec as written (locations as strings).
    """

    format: str
    sources: dict[str, dict[str, Path]]
    options: dict[str, Any]
    given: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    @property
    def name(self) -> str:
        if self.options.get("name"):
            return str(self.options["name"])
        first = self.sources.get("all") or self.sources["train"]
        return f"files:{first['path'].name}"

    def canonical(self) -> str:
        """The options as canonical JSON, locations and name left out (the files are hashed by content instead)."""
        opts = {k: _jsonable(v) for k, v in self.options.items() if k != "name"}
        return json.dumps({"format": self.format, **opts}, sort_keys=True, separators=(",", ":"))

    def describe_sources(self) -> dict[str, Any]:
        return {role: {k: str(p) for k, p in locs.items()} for role, locs in self.sources.items()}


def _plain(v: Any) -> Any:
    """The spec as plain JSON values (paths as strings, tuples as lists), for the run's record."""
    if isinstance(v, os.PathLike):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, Path):
        return str(v)
    return v


def _resolve(value: Any, key: str, data_dir: str | os.PathLike[str] | None) -> Path:
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"data.{key} must be a file or folder path, got {value!r}")
    p = Path(value).expanduser()
    if not p.is_absolute() and data_dir:
        p = Path(data_dir).expanduser() / p
    if not p.exists():
        where = f" (relative paths are read from data_dir {data_dir})" if data_dir else \
            f" (relative paths are read from the working folder {Path.cwd()})"
        raise DataError(f"data.{key}: {p} does not exist{where}")
    return p


def _infer_format(path: Path) -> str:
    if path.is_dir():
        # save_to_disk writes one of these; anything else is taken for a folder of class folders.
        if any((path / f).is_file() for f in ("dataset_dict.json", "state.json", "dataset_info.json")):
            return "hf_disk"
        return "image_folder"
    fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"data.format is not given and {path.name!r} has no known suffix "
                          f"({', '.join(sorted(_SUFFIX_FORMAT))}); set format: to one of {list(FORMATS)}")
    return fmt


def _source(value: Any, key: str, fmt: str, data_dir: Any) -> dict[str, Path]:
    """One split's location: a path, or for npy a mapping {x: features.npy, y: labels.npy} / a [x, y] pair."""
    if fmt == "npy":
        if isinstance(value, (list, tuple)) and len(value) == 2:
            value = {"x": value[0], "y": value[1]}
        if not isinstance(value, Mapping) or set(value) - {"x", "y", "path"} or "y" not in value \
                or len({"x", "path"} & set(value)) != 1:
            raise ConfigError(f"data.{key}: an npy split names two files, {{x: features.npy, y: labels.npy}} "
                              f"(or [features.npy, labels.npy]); got {value!r}")
        return {"path": _resolve(value.get("x", value.get("path")), f"{key}.x", data_dir),
                "y": _resolve(value["y"], f"{key}.y", data_dir)}
    if isinstance(value, Mapping):
        if set(value) != {"path"}:
            raise ConfigError(f"data.{key}: expected a path (or {{path: ...}}), got {dict(value)!r}")
        value = value["path"]
    return {"path": _resolve(value, key, data_dir)}


def parse_spec(spec: Mapping[str, Any], data_dir: str | os.PathLike[str] | None = None) -> FileSpec:
    """Check a data spec and resolve its paths; raises ConfigError (bad key/value) or DataError (missing file)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"the data spec must be a mapping such as {{format: csv, path: data.csv}}, got {spec!r}")
    spec = dict(spec)
    given = {k: _plain(v) for k, v in spec.items()}
    fmt = spec.pop("format", None)
    if fmt is not None and fmt not in FORMATS:
        close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"data.format {fmt!r} is not a file format{hint} Formats: {', '.join(FORMATS)}")
    locs = {k: spec.pop(k) for k in LOCATION_KEYS if k in spec and spec[k] is not None}
    for k in LOCATION_KEYS:
        spec.pop(k, None)
    npy_xy = {}
    if fmt == "npy":  # the npy locations may be given at the top level as x: / y: file paths
        npy_xy = {k: spec.pop(k) for k in ("x", "y") if k in spec}
        if npy_xy:
            if "path" in locs and "x" in npy_xy:
                raise ConfigError("data: give the npy features file as path: or x:, not both")
            if "path" in locs:
                npy_xy["x"] = locs.pop("path")
            locs["path"] = npy_xy
    if "path" in locs and set(locs) & set(ROLES):
        raise ConfigError("data: give either path: (one source that tricklab splits) or train:/val:/test: "
                          f"(your own splits), not both; got {sorted(locs)}")
    if not locs:
        raise ConfigError("data: no files named: set path: (one file or folder) or train: (and val:, test:)")
    if "path" not in locs and "train" not in locs:
        raise ConfigError(f"data: {sorted(locs)} given without train:; the training split needs its own file")
    if fmt is None:
        first = locs.get("path", locs.get("train"))
        first = first.get("x", first.get("path")) if isinstance(first, Mapping) else first
        fmt = _infer_format(_resolve(first, "path" if "path" in locs else "train", data_dir))

    allowed = format_options(fmt)
    unknown = [k for k in spec if k not in allowed]
    if unknown:
        msgs = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), list(allowed) + list(LOCATION_KEYS), n=1)
            msgs.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"data: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(msgs)} for format "
                          f"{fmt!r}. Its options: {', '.join(['format', *LOCATION_KEYS, *allowed])}")
    checkers = {**_COMMON, **_FORMAT_OPTIONS[fmt]}
    options = {k: checkers[k][1](k, spec[k]) if k in spec else _default(checkers[k][0]) for k in allowed}

    sources = {("all" if k == "path" else k): _source(v, k, fmt, data_dir) for k, v in locs.items()}
    for role, loc in sources.items():
        p = loc["path"]
        wants_dir = fmt in ("image_folder", "hf_disk")
        if wants_dir and not p.is_dir():
            raise DataError(f"data.{'path' if role == 'all' else role}: format {fmt} reads a folder, but {p} is a file")
        if not wants_dir and p.is_dir():
            raise DataError(f"data.{'path' if role == 'all' else role}: format {fmt} reads a file, but {p} is a folder")
    return FileSpec(format=fmt, sources=sources, options=options, given=given)


def _default(v: Any) -> Any:
    return list(v) if isinstance(v, list) else v
