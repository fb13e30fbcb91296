"""Data from the user's code: ``data: {code: "mydata:make", code_args: {n: 500}, <options>}``.

``code`` is a ``module:attribute`` reference (see :mod:`tricklab.plugins`) to either a data object or a
function that returns one when called with ``code_args`` (and ``data_dir=`` when it takes that argument).
What it may return:

* an :class:`~tricklab.data.base.ArrayDataset`: used as it is (split and encoded by the code);
* arrays (NumPy arrays, torch tensors or nested lists): ``(x, y)``, ``(x_train, y_train, x_test, y_test)``,
  ``(x_train, y_train, x_val, y_val, x_test, y_test)``, or a mapping with ``x``/``y`` or
  ``x_train``/``y_train`` (+ ``x_val``/``y_val``, ``x_test``/``y_test``);
* a map-style ``torch.utils.data.Dataset`` of ``(input, target)`` items (read once into memory), or a tuple
  / mapping of them by split (``(train, test)``, ``(train, val, test)``, ``{"train": ..., "test": ...}``).

Arrays and data sets then go through the same steps as a file's arrays (:mod:`tricklab.data.files.load`):
the target kind, seeded (stratified) splits where the code gave none, targets and features encoded with what
the training split fits (``standardize: true`` for per-feature scaling), the split recorded. The options are
those of ``npz`` plus ``code_args``. The digest covers the arrays' bytes and the module's source file, so
changed code or changed data is a different experiment.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tricklab.data.base import ArrayDataset
from tricklab.data.files.arrays import _check_pair, _part, featurize_arrays
from tricklab.data.files.common import Digest, Part, Sources
from tricklab.data.files.load import assemble
from tricklab.data.files.spec import _COMMON, _FORMAT_OPTIONS, FileSpec, format_options
from tricklab.errors import ConfigError, DataError
from tricklab.plugins import import_object, is_reference

__all__ = ["check_code_spec", "code_version", "dataset_from", "is_code_spec", "load_code"]

_SPLITS = ("train", "val", "test")


def is_code_spec(spec: Mapping[str, Any] | None) -> bool:
    """Whether a data spec names code (``code: module:attribute``) rather than files."""
    return isinstance(spec, Mapping) and "code" in spec


def _parse(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any], FileSpec]:
    spec = dict(spec)
    ref, args = spec.pop("code"), spec.pop("code_args", None) or {}
    if spec.get("format") == "code":
        spec.pop("format")
    if not is_reference(ref):
        raise ConfigError(f"data.code must be a module:attribute reference (e.g. mydata:make_data), got {ref!r}")
    if not isinstance(args, Mapping) or not all(isinstance(k, str) for k in args):
        raise ConfigError(f"data.code_args must be a mapping of keyword arguments, got {args!r}")
    allowed = format_options("npz")
    unknown = sorted(k for k in spec if k not in allowed)
    if unknown:
        raise ConfigError(f"data: unknown option(s) {unknown} for data from code; its options: code, code_args, "
                          f"{', '.join(allowed)}")
    checkers = {**_COMMON, **_FORMAT_OPTIONS["npz"]}
    options = {k: checkers[k][1](k, spec[k]) if k in spec else checkers[k][0] for k in allowed}
    options["name"] = options["name"] or f"code:{ref}"
    options.update(code=ref, code_args=dict(args))
    given = {"code": ref, "code_args": dict(args), **spec}
    return ref, dict(args), FileSpec(format="code", sources={}, options=options, given=given)


def _takes(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def check_code_spec(spec: Mapping[str, Any]) -> Any:
    """Import the object a code spec names and check ``code_args`` against its signature, without calling
    it; returns the object. A missing module or attribute, or arguments it does not take, is a ConfigError."""
    ref, args, _ = _parse(spec)
    obj = import_object(ref, "data.code")
    if not callable(obj) or isinstance(obj, ArrayDataset) or _is_dataset(obj):
        if args:
            raise ConfigError(f"data.code {ref!r} is a {type(obj).__name__}, not a function: code_args "
                              f"{sorted(args)} apply to nothing")
        return obj
    try:
        inspect.signature(obj).bind(**args)
    except TypeError as e:
        raise ConfigError(f"data.code {ref!r}: {e}; its signature is {ref.split(':')[1]}"
                          f"{inspect.signature(obj)}") from None
    except ValueError:
        pass  # no signature to check (a builtin): checked when called
    return obj


def _is_dataset(obj: Any) -> bool:
    """A map-style data set: ``len()`` and integer indexing (a torch Dataset, or any such sequence of pairs)."""
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(
        obj, (type, np.ndarray, Mapping, list, tuple, str, bytes)) and not _is_tensor(obj)


def _is_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def _array(value: Any, where: str) -> np.ndarray:
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}: cannot be read as an array ({e})") from e
    if arr.dtype == object:
        raise DataError(f"{where}: holds Python objects of mixed shapes or types; return numbers (or strings "
                        f"for labels) of one shape per item")
    return arr


def _from_dataset(ds: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a map-style data set of (input, target) items into two arrays (the data must fit in memory)."""
    n = len(ds)
    if n == 0:
        raise DataError(f"{where}: the data set is empty")
    xs, ys = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DataError(f"{where}: item {i} is a {type(item).__name__}; a data set for tricklab gives "
                            f"(input, target) pairs")
        xs.append(_array(item[0], f"{where}: item {i} input"))
        ys.append(_array(item[1], f"{where}: item {i} target"))
    shape = xs[0].shape
    bad = next((i for i, x in enumerate(xs) if x.shape != shape), None)
    if bad is not None:
        raise DataError(f"{where}: item {bad} has input shape {xs[bad].shape}, item 0 {shape}; every input "
                        f"needs one shape (resize or pad them in the data set)")
    return np.stack(xs), np.stack(ys)


def _pair(x: Any, y: Any, where: str) -> Part:
    xa, ya = _array(x, f"{where} x"), _array(y, f"{where} y")
    _check_pair(xa, ya, where, "x", "y")
    return _part(where, xa, ya)


def _split_part(value: Any, where: str) -> Part:
    """One split given as a data set or an (x, y) pair."""
    if _is_dataset(value):
        return _pair(*_from_dataset(value, where), where)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return _pair(value[0], value[1], where)
    raise DataError(f"{where}: expected a data set of (input, target) items or an (x, y) pair, got "
                    f"{type(value).__name__}")


def _from_mapping(value: Mapping[str, Any], ref: str) -> dict[str, Part]:
    if "x" in value and "y" in value:
        return {"all": _pair(value["x"], value["y"], ref)}
    if any(s in value for s in _SPLITS):
        return {s: _split_part(value[s], f"{ref} [{s!r}]") for s in _SPLITS if s in value}
    parts = {s: _pair(value[f"x_{s}"], value[f"y_{s}"], f"{ref} ({s})") for s in _SPLITS
             if f"x_{s}" in value and f"y_{s}" in value}
    if "train" not in parts:
        raise DataError(f"{ref}: returned a mapping with keys {sorted(value)}; give x and y, or x_train and y_train "
                        f"(and x_val/y_val, x_test/y_test), or train/val/test data sets")
    return parts


def _to_parts(value: Any, ref: str) -> dict[str, Part]:
    """The parts of what the code returned (see the module docstring)."""
    if isinstance(value, Mapping):
        return _from_mapping(value, ref)
    if _is_dataset(value):
        return {"all": _pair(*_from_dataset(value, ref), ref)}
    if isinstance(value, (tuple, list)):
        if value and all(_is_dataset(v) for v in value) and len(value) in (2, 3):
            roles = ("train", "test") if len(value) == 2 else _SPLITS
            return {r: _pair(*_from_dataset(v, f"{ref} [{r}]"), f"{ref} [{r}]") for r, v in zip(roles, value)}
        if len(value) in (2, 4, 6):
            roles = {2: ("all",), 4: ("train", "test"), 6: _SPLITS}[len(value)]
            return {r: _pair(value[2 * i], value[2 * i + 1], f"{ref} ({r})") for i, r in enumerate(roles)}
    raise DataError(f"{ref}: returned a {type(value).__name__}; data from code must be an ArrayDataset, arrays "
                    f"(x, y) / (x_train, y_train, x_test, y_test), a mapping of them, or a torch Dataset of "
                    f"(input, target) items (docs/plugins.md)")


def _module_file(ref: str) -> Path | None:
    """The source file of the (already imported) module of ``ref``, when it has one."""
    module = sys.modules.get(ref.partition(":")[0])
    try:
        source = inspect.getsourcefile(module) if module is not None else None
    except TypeError:  # a built-in module
        return None
    return Path(source) if source and Path(source).is_file() else None


def code_version(spec: Mapping[str, Any]) -> str:
    """A digest of a code spec and of the source file of the module it names (without calling anything):
    the data version an ablation keys its store by, as :func:`tricklab.lab.build.data_version` for files."""
    ref, _, fs = _parse(spec)
    import_object(ref, "data.code")
    digest = Digest(fs.canonical())
    source = _module_file(ref)
    if source is not None:
        digest.add_file("module", source)
    return digest.hexdigest()[:16]


def load_code(spec: Mapping[str, Any], data_dir: str | None = None) -> ArrayDataset:
    """Load the data a code spec names into an :class:`ArrayDataset` (see the module docstring)."""
    ref, args, fs = _parse(spec)
    obj = check_code_spec(spec)
    if callable(obj) and not isinstance(obj, ArrayDataset) and not _is_dataset(obj):
        kwargs = {**args, **({"data_dir": data_dir} if _takes(obj, "data_dir") else {})}
        value = obj(**kwargs)
    else:
        value = obj
    return _dataset(value, ref, fs)


def dataset_from(value: Any, name: str) -> ArrayDataset:
    """An :class:`ArrayDataset` from what a data function returned (an ArrayDataset as it is; arrays or data
    sets as the module docstring lists, split and encoded with the default options); ``name`` names it in
    messages and in the run's record."""
    if isinstance(value, ArrayDataset):
        return value
    options = {k: v for k, v in format_options("npz").items()}
    options.update(name=name, code=name, code_args={})
    return _dataset(value, name, FileSpec(format="code", sources={}, options=options, given={"code": name}))


def _dataset(value: Any, ref: str, fs: FileSpec) -> ArrayDataset:
    if isinstance(value, ArrayDataset):
        return value
    parts = _to_parts(value, ref)
    digest = Digest(fs.canonical())
    for role, part in sorted(parts.items()):
        digest.add_bytes(f"{role}:x", np.ascontiguousarray(part.x).tobytes() + str(part.x.dtype).encode())
        digest.add_bytes(f"{role}:y", np.ascontiguousarray(part.y).tobytes() + str(part.y.dtype).encode())
    source = _module_file(ref)
    if source is not None:
        digest.add_file("module", source)
    src = Sources(parts, lambda p: featurize_arrays(p, fs["standardize"], fs["x_dtype"]))
    return assemble(fs, digest, src)
