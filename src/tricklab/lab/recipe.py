"""Recipes: YAML validated into dataclasses, ``key=value`` overrides, a canonical hash.

A recipe names every component by registry name. Validation happens before anything is built, and every
error says where (file and line for YAML syntax, the dotted key for a bad value) and what would fix it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import inspect
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from tricklab.errors import ConfigError
from tricklab.explain.lab_faithfulness import FaithfulnessConfig
from tricklab.robust import RobustnessConfig


@dataclass
class ModelSpec:
    name: str = "cnn"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class OptimizerSpec:
    name: str = "adam"
    lr: float = 1e-2
    weight_decay: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScheduleSpec:
    name: str = "constant"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class TechniqueSpec:
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class BudgetSpec:
    steps: int | None = None
    epochs: int | None = None
    seconds: float | None = None


@dataclass
class DataSpec:
    data_dir: str | None = None
    val_fraction: float = 0.0
    args: dict[str, Any] = field(default_factory=dict)  # extra data-set arguments (e.g. planetoid name)
    # node tasks: sample this many neighbours per hop around batch_size seed nodes (GraphSAGE mini-batches)
    # instead of training on the whole graph each step
    fanouts: list[int] | None = None
    # low-label training (docs/transfer/semi-supervised.md): only k labels per class of the training set
    # (seeded, stratified), the rest unlabelled (targets -100, which the loss ignores and the semi-supervised
    # techniques use); a batch holds batch_size labelled and unlabelled_ratio x batch_size unlabelled examples
    labels_per_class: int | None = None
    unlabelled_ratio: int | None = None  # FixMatch's mu; 7 when labels_per_class is set and this is not


@dataclass
class CheckpointSpec:
    every_steps: int = 500
    keep_last: int = 3


# keys the hash leaves out while they are unset (empty / None)
_UNSET_KEYS = ("task_args", "robustness", "faithfulness")
_UNSET_DATA_KEYS = ("labels_per_class", "unlabelled_ratio")


@dataclass
class Recipe:
    """One training run, fully specified."""

    task: str = "mnist1d"
    #: the task's kind and its options (``kind: regression``, ``loss: huber``, ``class_weights: balanced``), or
    #: a loop task's configuration; see docs/task-kinds.md
    task_args: dict[str, Any] = field(default_factory=dict)
    model: ModelSpec = field(default_factory=ModelSpec)
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    techniques: list[TechniqueSpec] = field(default_factory=list)
    budget: BudgetSpec = field(default_factory=lambda: BudgetSpec(steps=6000))
    batch_size: int = 100
    eval_every: int | None = 500
    eval_batch_size: int = 1000
    log_every: int = 50
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    deterministic: bool = False
    device: str = "cpu"
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    target_accuracy: float = 0.9
    #: evaluate the trained classifier under attacks and noise (docs/robust.md); None: not measured
    robustness: RobustnessConfig | None = None
    #: faithfulness of attributions of the trained classifier (docs/explain/); None: not measured
    faithfulness: FaithfulnessConfig | None = None
    progress: bool = True
    data: DataSpec = field(default_factory=DataSpec)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the canonical recipe without its seeds, progress display and thread
        count: runs of one recipe with different seeds share the hash. Keys added after the first stores were
        written (``task_args``, ``robustness``, ``faithfulness``, ``data.labels_per_class``,
        ``data.unlabelled_ratio``) enter it only when set, so the hash of every
        older recipe, and the stores keyed by it, stay as they were."""
        d = self.to_dict()
        d.pop("seed"), d.pop("seeds"), d.pop("progress"), d.pop("threads")
        for key in _UNSET_KEYS:
            if not d.get(key):
                d.pop(key, None)
        for key in _UNSET_DATA_KEYS:  # likewise inside ``data``
            if d.get("data", {}).get(key) is None:
                d["data"].pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------- typing
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true/false"
    if tp is str:
        return "a string"
    if origin in (list, tuple):
        return "a list"
    if origin is dict or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _bad(value: Any, tp: Any, where: str) -> ConfigError:
    return ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value)
    raise ValueError


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value)  # "1e-3" (PyYAML reads it as a string)
    raise ValueError


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise ValueError


# numbers written as strings (from overrides) are parsed; a ValueError means "not this type"
_SCALARS: dict[Any, Any] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _coerce_union(value: Any, tp: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return coerce(value, a, where)
        except ConfigError:
            continue
    raise _bad(value, tp, where)


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int, float, bool, str, None, unions, lists, dicts,
    dataclasses); numbers written as strings (from overrides) are parsed. Raises ConfigError naming ``where``."""
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, where)
    if tp in _SCALARS:
        try:
            return _SCALARS[tp](value)
        except ValueError:
            raise _bad(value, tp, where) from None
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _bad(value, tp, where)
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _bad(value, tp, where)
        return dict(value)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _bad(value, tp, where)


def _closest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=2, cutoff=0.5)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def build_dataclass(cls: Any, data: Any, where: str) -> Any:
    """Validate a mapping into dataclass ``cls``; shorthand: a string is taken as ``{name: string}``."""
    names = [f.name for f in dataclasses.fields(cls)]
    if isinstance(data, str) and "name" in names:
        data = {"name": data}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {names}, got {data!r}")
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"{where}: unknown key {k!r}{_closest(str(k), names)}; valid keys: {names}")
    kwargs = {k: coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


# ----------------------------------------------------------------------------------------- loading
def parse_yaml(text: str, source: str = "<recipe>") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark else source
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"malformed YAML in {where}: {problem}") from None


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML."""
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key=value (e.g. optimizer.lr=0.001)")
    key, raw = override.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {override!r} has an empty key")
    value = parse_yaml(raw, f"override {override!r}") if raw.strip() else None
    if key == "techniques" and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    parts = key.split(".")
    node = data
    if len(parts) > 1 and parts[0] == "task" and isinstance(data.get("task"), str):
        data["task"] = {"name": data["task"]}  # task.kind=... on a recipe that names its task by a string
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {} if node.get(p) is None else node[p]
            if not isinstance(node[p], dict):
                raise ConfigError(f"override {override!r}: {p!r} is not a mapping")
        node = node[p]
    node[parts[-1]] = value


def _normalise_techniques(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    if isinstance(value, dict):  # {ema: {decay: 0.99}, grad_clip: {}}
        return [{"name": k, "args": v or {}} for k, v in value.items()]
    return value


_FILE_KEYS = ("format", "path", "train", "code")  # code: data from the user's code (module:attribute)
_DATA_SPEC_KEYS = ("data_dir", "val_fraction", "args", "fanouts", "labels_per_class", "unlabelled_ratio")


def _file_spec(data: Any) -> bool:
    """Whether a recipe's ``data`` names a user's files (``format:``/``path:``/``train:``, at its top level
    or under ``args``)."""
    if not isinstance(data, dict):
        return False
    args = data.get("args")
    return any(k in data for k in _FILE_KEYS) or (isinstance(args, dict) and any(k in args for k in _FILE_KEYS))


def _normalise_task_and_data(data: dict[str, Any]) -> None:
    """The short forms a user writes, in place: ``task: {name: files, kind: regression, ...}`` becomes
    ``task: files`` plus ``task_args: {kind: regression, ...}``; a file spec written at the top of ``data``
    (``data: {format: csv, path: x.csv, target: price}``) moves under ``data.args`` (the ``files`` data set's
    arguments) and names the ``files`` task (with an MLP) when the recipe names neither."""
    task = data.get("task")
    if isinstance(task, dict):
        task = dict(task)
        args = dict(data.get("task_args") or {})
        args.update({k: v for k, v in task.items() if k != "name"})
        data["task_args"] = args
        if task.get("name") is not None:
            data["task"] = task["name"]
        else:
            data.pop("task")
    spec = data.get("data")
    if _file_spec(spec):
        moved = {k: v for k, v in spec.items() if k not in _DATA_SPEC_KEYS}
        if moved:
            data["data"] = {**{k: v for k, v in spec.items() if k in _DATA_SPEC_KEYS},
                            "args": {**(spec.get("args") or {}), **moved}}
        if data.get("task") is None:
            data["task"] = "files"
        if data["task"] == "files" and "model" not in data:
            data["model"] = {"name": "mlp"}


def recipe_from_dict(data: dict[str, Any] | None) -> Recipe:
    data = dict(data or {})
    _normalise_task_and_data(data)
    if "techniques" in data:
        data["techniques"] = _normalise_techniques(data["techniques"])
    if isinstance(data.get("budget"), (int, float)) and not isinstance(data.get("budget"), bool):
        data["budget"] = {"steps": data["budget"]}
    recipe = build_dataclass(Recipe, data, "")
    b = recipe.budget
    if b.steps is None and b.epochs is None and b.seconds is None:
        raise ConfigError("budget: set one of budget.steps, budget.epochs or budget.seconds")
    for label, v in (("budget.steps", b.steps), ("budget.epochs", b.epochs), ("batch_size", recipe.batch_size),
                     ("log_every", recipe.log_every), ("eval_batch_size", recipe.eval_batch_size)):
        if v is not None and v < 1:
            raise ConfigError(f"{label} must be a positive integer, got {v}")
    if b.seconds is not None and b.seconds <= 0:
        raise ConfigError(f"budget.seconds must be positive, got {b.seconds}")
    if recipe.eval_every is not None and recipe.eval_every < 1:
        raise ConfigError(f"eval_every must be a positive integer or null, got {recipe.eval_every}")
    if recipe.threads is not None and recipe.threads < 1:
        raise ConfigError(f"threads must be a positive integer or null, got {recipe.threads}")
    if recipe.seed < 0:
        raise ConfigError(f"seed must be non-negative, got {recipe.seed}")
    if not 0.0 <= recipe.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {recipe.data.val_fraction}")
    return recipe


#: ``tricklab run``'s embedded default, named ``mnist1d-cnn`` (recipes/mnist1d-cnn.yaml): MNIST-1D with the
#: paper's CNN (Greydanus 2020), trained with the paper's Adam (lr 1e-2, batch 100, 6000 steps) plus a cosine
#: schedule and label smoothing 0.1, the best of the paper setting's variants we measured. Over seeds 0-4
#: (1 thread): 95.8% mean test accuracy (min 95.5%).
DEFAULT_RECIPE: dict[str, Any] = {
    "task": "mnist1d",
    "model": {"name": "cnn"},
    "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
    "schedule": {"name": "cosine"},
    "techniques": [{"name": "label_smoothing", "args": {"eps": 0.1}}],
    "budget": {"steps": 6000},
    "batch_size": 100,
    "eval_every": 500,
    "threads": 1,
}

#: The MNIST-1D paper's own setting, named ``mnist1d-cnn-paper`` (recipes/mnist1d-cnn-paper.yaml): the
#: baseline ``tricklab ablate`` measures techniques against (a technique must be compared with a setting that
#: does not already contain it). Constant learning rate, no technique; 92.8% mean test accuracy over seeds 0-4.
PAPER_RECIPE: dict[str, Any] = {
    "task": "mnist1d",
    "model": {"name": "cnn"},
    "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 0.0},
    "schedule": {"name": "constant"},
    "techniques": [],
    "budget": {"steps": 6000},
    "batch_size": 100,
    "eval_every": 500,
    "threads": 1,
}

#: The two embedded recipes by name: a recipe argument that is no file but one of these names loads it.
EMBEDDED: dict[str, dict[str, Any]] = {"mnist1d-cnn": DEFAULT_RECIPE, "mnist1d-cnn-paper": PAPER_RECIPE}
DEFAULT_NAME = "mnist1d-cnn"


def describe_embedded(name: str) -> str:
    """One line naming an embedded recipe, for the command line's output."""
    if name == "mnist1d-cnn":
        return ("mnist1d-cnn, the embedded default of `tricklab run`: the MNIST-1D paper's CNN and Adam setting "
                "plus a cosine schedule and label smoothing 0.1 (recipes/mnist1d-cnn.yaml)")
    return ("mnist1d-cnn-paper, the MNIST-1D paper's own setting: constant learning rate, no technique "
            "(recipes/mnist1d-cnn-paper.yaml)")


def recipe_arguments(recipe: str | None, overrides: list[str] | tuple[str, ...],
                     data_dir: str | None = None) -> tuple[str | None, list[str]]:
    """The command line's (recipe file, overrides): ``tricklab run key=value`` has no recipe file, so a first
    positional that holds '=' and is not an existing file is an override; ``--data-dir`` is an override too."""
    out = list(overrides)
    if data_dir is not None:
        out.append(f"data.data_dir={data_dir}")
    if recipe is not None and "=" in recipe and not Path(recipe).exists():
        return None, [recipe, *out]
    return recipe, out


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe file (or the embedded default :data:`DEFAULT_RECIPE` when ``path`` is None, or an
    embedded recipe by name, :data:`EMBEDDED`) and apply overrides."""
    if path is not None and str(path) in EMBEDDED and not Path(path).exists():
        data: dict[str, Any] = copy.deepcopy(EMBEDDED[str(path)])
    elif path is None:
        data = copy.deepcopy(DEFAULT_RECIPE)
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe file {str(p)!r} does not exist (the embedded recipes are named "
                              f"{' and '.join(EMBEDDED)})")
        loaded = parse_yaml(p.read_text(encoding="utf-8"), str(p))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: a recipe must be a YAML mapping, got {type(loaded).__name__}")
        data = loaded or {}
    for o in overrides:
        apply_override(data, o)
    return recipe_from_dict(data)
