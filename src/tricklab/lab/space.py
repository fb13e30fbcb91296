"""Search spaces for ``tricklab tune`` and ``tricklab search``: recipe keys (dotted, as overrides) with their
ranges, read from YAML and checked against the recipe BEFORE any trial runs.

A space file maps each key to a range::

    optimizer.lr: {low: 1.0e-4, high: 3.0e-2, log: true}       # float (log-uniform)
    optimizer.weight_decay: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
    batch_size: {low: 32, high: 256, step: 32}                  # int (both bounds integers)
    schedule.name: [constant, cosine, one_cycle]                # categorical (a list, or {choices: [...]})
    techniques.label_smoothing.eps: {low: 0.0, high: 0.2}       # an argument of a technique of the recipe

Keys are what ``key=value`` overrides take: recipe fields (``optimizer.lr``, ``batch_size``), free arguments
(``model.args.channels``, ``optimizer.args.betas``, ``schedule.args.pct_start``; checked against the
component's signature), and technique arguments ``techniques.<name>.<arg>``. A search adds on/off switches
``techniques.<name>`` (a boolean categorical). Refused, with the key named: an unknown key, a value of the
wrong type for it (a float range on an integer key, a string on a number), an empty range (low >= high, no
choices), a log scale on a range that is not positive, a step wider than the range, and the keys that
define the comparison (seeds, budget).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tricklab.errors import ConfigError, UserError
from tricklab.lab.build import technique_arguments, validate
from tricklab.lab.recipe import Recipe, coerce, parse_yaml, recipe_from_dict
from tricklab.models import MODELS
from tricklab.optim import OPTIMIZERS
from tricklab.schedules import SCHEDULES

__all__ = ["FIXED_KEYS", "Param", "Space", "apply_values", "check_space", "load_space", "overrides_of", "parse_space",
           "technique_switch"]

#: Keys a space may not tune: the budget and the seeds define an equal comparison (more budget always wins).
FIXED_KEYS = ("seed", "seeds", "budget", "progress", "threads", "device")
_KINDS = ("float", "int", "categorical")
_SWITCH = "techniques."  # techniques.<name> (on/off) and techniques.<name>.<arg>


@dataclass(frozen=True)
class Param:
    """One tuned key: a float or int range (``log`` scale, optional ``step``) or a list of ``choices``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()
    args: tuple[tuple[str, Any], ...] = ()  # a technique switch: the arguments the technique gets when on

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter (optuna is imported here: extra ``tune``)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid(self) -> list[Any]:
        """The finite set a grid search walks; refused for a continuous range."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(f"{self.key}: a grid search needs a finite set; give the float range a step "
                              f"(step: 0.01) or list the values (choices: [...])")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [self.low + i * self.step for i in range(n + 1)]

    def corners(self) -> list[Any]:
        """Values that together exercise the range: both ends, or every choice."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.key} in {list(self.choices)}"
        scale = ", log" if self.log else ""
        step = f", step {self.step:g}" if self.step is not None else ""
        return f"{self.key} in [{self.low:g}, {self.high:g}] ({self.kind}{scale}{step})"


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]

    def distributions(self) -> dict[str, Any]:
        return {p.key: p.distribution() for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        return {p.key: p.grid() for p in self.params}

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def apply(self, base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """:func:`apply_values` with the arguments of this space's technique switches."""
        return apply_values(base, values, {p.key[len(_SWITCH):]: dict(p.args) for p in self.params if p.args})


# ------------------------------------------------------------------------------------------------ parsing
def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None


def _range_kind(spec: dict[str, Any], low: Any, high: Any, key: str) -> str:
    kind = spec.get("type")
    if kind is None:
        return "int" if all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) else "float"
    if kind not in ("float", "int"):
        raise ConfigError(f"space {key}: type must be one of {list(_KINDS)}, got {kind!r}")
    return kind


def _param(key: str, spec: Any) -> Param:
    """One space entry as written in the file -> a checked :class:`Param` (ranges only; types come later)."""
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"space {key}: expected a range {{low: .., high: ..}} or a list of choices, got {spec!r}")
    unknown = set(spec) - {"type", "low", "high", "log", "step", "choices"}
    if unknown:
        raise ConfigError(f"space {key}: unknown field(s) {sorted(unknown)}; "
                          f"a range has type, low, high, log, step; a categorical has choices")
    if "choices" in spec or spec.get("type") == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"space {key}: empty range: list at least one choice (choices: [a, b])")
        if len({repr(c) for c in choices}) != len(choices):
            raise ConfigError(f"space {key}: a choice is listed twice in {choices}")
        return Param(key, "categorical", choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"space {key}: a range needs low and high (or list choices)")
    low, high = _number(spec["low"], f"space {key}.low"), _number(spec["high"], f"space {key}.high")
    kind = _range_kind(spec, low, high, key)
    log = bool(spec.get("log", False))
    step = None if spec.get("step") is None else _number(spec["step"], f"space {key}.step")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise ConfigError(f"space {key}: an int range needs whole-number low, high and step, got {spec}")
    if not low < high:
        raise ConfigError(f"space {key}: empty range: low ({low:g}) must be below high ({high:g})")
    if log and low <= 0:
        raise ConfigError(f"space {key}: a log scale needs a positive range, got low {low:g}; "
                          f"raise low above 0 or drop log")
    if step is not None and (step <= 0 or step > high - low):
        raise ConfigError(f"space {key}: step {step:g} must be positive and at most the range width {high - low:g}")
    if log and step is not None:
        raise ConfigError(f"space {key}: a range takes log or step, not both")
    if kind == "int":
        return Param(key, kind, int(low), int(high), log, None if step is None else int(step))
    return Param(key, kind, float(low), float(high), log, step)


def parse_space(data: Any, source: str = "<space>") -> list[Param]:
    """The mapping of a space file -> its parameters (ranges checked; keys checked by :func:`load_space`)."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{source}: a space is a YAML mapping of recipe keys to ranges, e.g. "
                          f"'optimizer.lr: {{low: 1.0e-4, high: 1.0e-1, log: true}}'")
    return [_param(str(k), v) for k, v in data.items()]


def load_space(path: str | Path, base: Recipe, extra: Sequence[Param] = ()) -> Space:
    """Read and check a space file against ``base`` (see the module docstring); ``extra`` parameters (a
    search's technique switches) are checked with it. Raises ConfigError before anything runs."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--space {str(p)!r} does not exist")
    return check_space(Space((*parse_space(parse_yaml(p.read_text(encoding="utf-8"), str(p)), str(p)), *extra)),
                       base)


# ---------------------------------------------------------------------------------------------- checking
def _field_type(key: str) -> Any:
    """The annotated type of a dotted recipe field (``optimizer.lr`` -> float); KeyError when not a field."""
    tp: Any = Recipe
    for part in key.split("."):
        if not dataclasses.is_dataclass(tp):
            raise KeyError(key)
        hints = typing.get_type_hints(tp)
        if part not in hints:
            raise KeyError(key)
        tp = hints[part]
    return tp


def _signature_type(fn: Any, arg: str, key: str, what: str) -> Any:
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters
    if arg not in params:
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return Any
        accepted = [k for k in params if k not in ("self", "params", "input_shape", "num_classes", "step",
                                                   "total_steps")]
        raise ConfigError(f"space {key}: {what} has no argument {arg!r}; it accepts {accepted}")
    try:
        return typing.get_type_hints(target).get(arg, Any)
    except Exception:  # noqa: BLE001 - unresolvable annotations (forward references): accept any value
        return Any


def _key_type(key: str, base: Recipe) -> Any:
    """The type a value of ``key`` must have; ConfigError naming the key when the recipe has no such key."""
    head, _, rest = key.partition(".")
    if key.split(".")[0] in FIXED_KEYS:
        raise ConfigError(f"space {key}: the seeds and the budget define the comparison; they cannot be tuned")
    if head == "techniques" and rest:
        name, _, arg = rest.partition(".")
        if not arg:
            return bool  # a search's on/off switch
        cls, _ = technique_arguments(name, {}, f"space {key}")
        return _signature_type(cls, arg, key, f"technique {name!r}")
    args_of = {"model": (MODELS, base.model.name), "optimizer": (OPTIMIZERS, base.optimizer.name),
               "schedule": (SCHEDULES, base.schedule.name)}
    parts = key.split(".")
    if len(parts) == 3 and parts[1] == "args" and head in args_of:
        registry, name = args_of[head]
        return _signature_type(registry.get(name), parts[2], key, f"{head} {name!r}")
    if len(parts) >= 3 and parts[:2] == ["data", "args"]:
        return Any  # data-set arguments: checked when the data set loads
    try:
        return _field_type(key)
    except KeyError:
        raise ConfigError(f"space {key}: the recipe has no key {key!r} (keys are dotted recipe fields as in "
                          f"overrides, e.g. optimizer.lr, batch_size, schedule.name, model.args.<arg>, "
                          f"techniques.<name>.<arg>)") from None


def _accepts(tp: Any, py: type) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return Any in args or py in args or (py is int and float in args)


def _check_types(param: Param, tp: Any) -> None:
    if tp is Any:
        return
    if param.kind == "float" and not _accepts(tp, float):
        raise ConfigError(f"space {param.key}: a float range on a key that takes {_name(tp)}; "
                          f"use an int range or choices")
    if param.kind == "int" and not _accepts(tp, int):
        raise ConfigError(f"space {param.key}: an int range on a key that takes {_name(tp)}; use choices")
    for v in param.corners():
        coerce(v, tp, f"space {param.key}")  # wrong type -> ConfigError naming the key


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def check_space(space: Space, base: Recipe) -> Space:
    """Each key exists and takes the range's type; then the recipe at every range end (each choice, each
    bound) validates (names, technique arguments, conflicts), so no trial can fail on a value of the space."""
    seen: set[str] = set()
    present = {t.name for t in base.techniques} | {p.key.split(".")[1] for p in space.params
                                                     if p.key.startswith(_SWITCH) and p.key.count(".") == 1}
    for p in space.params:
        if p.key in seen:
            raise ConfigError(f"space {p.key}: listed twice")
        seen.add(p.key)
        _check_types(p, _key_type(p.key, base))
        if p.key.startswith(_SWITCH) and p.key.count(".") == 1:  # a switch: the technique and its arguments
            technique_arguments(p.key[len(_SWITCH):], dict(p.args), f"technique {p.key[len(_SWITCH):]}")
        if p.key.startswith(_SWITCH) and p.key.count(".") == 2 and p.key.split(".")[1] not in present:
            raise ConfigError(f"space {p.key}: technique {p.key.split('.')[1]!r} is not in the recipe's "
                              f"techniques; add it to the recipe, or search over it (tricklab search)")
    base_dict = base.to_dict()
    lows = {p.key: p.corners()[0] for p in space.params}
    for p in space.params:
        for v in p.corners():
            values = {**lows, p.key: v}
            if any(k.startswith(_SWITCH) and k.count(".") == 1 for k in values):
                continue  # technique sets: conflicts are the search's business (pruned, not refused)
            try:
                validate(recipe_from_dict(space.apply(base_dict, values)))
            except UserError as e:
                raise ConfigError(f"space {p.key}={v!r}: {e}") from None
    return space


# ------------------------------------------------------------------------------------------------ applying
def technique_switch(name: str, args: dict[str, Any] | None = None) -> Param:
    """A search's on/off switch for technique ``name`` (with ``args`` when on)."""
    return Param(f"{_SWITCH}{name}", "categorical", choices=(False, True), args=tuple((args or {}).items()))


def _technique_values(d: dict[str, Any], values: dict[str, Any], switch_args: dict[str, dict[str, Any]]) -> None:
    """Switches add (or drop) techniques in the space's order; ``techniques.<name>.<arg>`` sets an argument of
    a technique of the recipe (or of one switched on)."""
    techniques = list(d.get("techniques") or [])
    for key, on in values.items():
        name = key[len(_SWITCH):]
        if "." in name:
            continue
        techniques = [t for t in techniques if t["name"] != name]
        if on:
            techniques.append({"name": name, "args": dict(switch_args.get(name, {}))})
    for key, value in values.items():
        name, _, arg = key[len(_SWITCH):].partition(".")
        if not arg:
            continue
        for t in techniques:
            if t["name"] == name:
                t["args"] = {**(t.get("args") or {}), arg: value}
    d["techniques"] = techniques


def apply_values(base: dict[str, Any], values: dict[str, Any],
                 switch_args: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A copy of the recipe dict ``base`` with the sampled ``values`` set (see the module docstring); a
    technique switched on gets its ``switch_args`` entry as arguments."""
    d = copy.deepcopy(base)
    d["techniques"] = [dict(t) if isinstance(t, dict) else {"name": t, "args": {}} for t in d.get("techniques") or []]
    for key, value in values.items():
        if key.startswith(_SWITCH):
            continue
        node, parts = d, key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"space {key}: {part!r} is not a mapping in the recipe")
            node = node[part]
        node[parts[-1]] = value
    _technique_values(d, {k: v for k, v in values.items() if k.startswith(_SWITCH)}, switch_args or {})
    return d


def overrides_of(base: dict[str, Any], values: dict[str, Any], space: Space | None = None) -> list[str]:
    """``key=value`` overrides that turn the recipe dict ``base`` into ``apply_values(base, values)``, for a
    ``--variant`` of `tricklab ablate` (technique switches and arguments become one ``techniques=[...]``)."""
    out = [f"{k}={json.dumps(v)}" for k, v in values.items() if not k.startswith(_SWITCH)]
    if any(k.startswith(_SWITCH) for k in values):
        d = space.apply(base, values) if space is not None else apply_values(base, values)
        out.append(f"techniques={json.dumps(d['techniques'])}")
    return out
