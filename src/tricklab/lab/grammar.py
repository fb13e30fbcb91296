"""The command-line grammar of ``tricklab ablate`` and ``tricklab run``, shared with the Python API
(:mod:`tricklab.lab.api`): techniques ``name`` / ``name:key=value:key=value`` (a technique of the user's code
is ``module:Attribute[:key=value...]``), combinations ``a+b``, variants ``NAME:key=value;key=value`` and budgets
``6000`` / ``10epochs`` / ``90s``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tricklab.errors import ConfigError
from tricklab.lab.ablate import AblationPlan, make_plan, technique_label
from tricklab.lab.recipe import Recipe, TechniqueSpec, parse_yaml
from tricklab.plugins import is_reference

__all__ = ["parse_budget", "parse_combo", "parse_technique", "parse_variant", "plan_ablation"]


def parse_technique(text: str) -> TechniqueSpec:
    """``name`` or ``name:key=value:key=value`` (values parsed as YAML); ``module:Attribute[:key=value...]``
    names a technique class of the user's code."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) > 1 and "=" not in parts[1] and is_reference(f"{parts[0]}:{parts[1]}"):
        parts = [f"{parts[0]}:{parts[1]}", *parts[2:]]  # a technique of the user's code, module:Attribute
    if not parts[0]:
        raise ConfigError(f"--techniques: empty technique name in {text!r}")
    args: dict[str, Any] = {}
    for p in parts[1:]:
        if "=" not in p:
            raise ConfigError(f"--techniques: {text!r}: arguments look like name:key=value, got {p!r}")
        k, v = p.split("=", 1)
        args[k.strip()] = parse_yaml(v, f"--techniques {text!r}")
    return TechniqueSpec(parts[0], args)


def parse_combo(text: str, listed: Sequence[TechniqueSpec]) -> list[TechniqueSpec]:
    """``a+b[+c...]``: each member is a listed technique (by name or label, e.g. ``ema(decay=0.99)``) or a
    technique of its own (``name:key=value``)."""
    members = [c.strip() for c in text.split("+") if c.strip()]
    if len(members) < 2:
        raise ConfigError(f"--combo {text!r}: a combination joins two or more techniques with '+'")
    group = []
    for m in members:
        found = [s for s in listed if s.name == m or technique_label(s) == m]
        group.append(found[0] if found else parse_technique(m))
    return group


_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*(steps?|epochs?|s|sec|seconds?|)\s*$")


def parse_budget(text: str) -> dict[str, Any]:
    """``6000`` / ``6000steps`` -> steps; ``10epochs`` -> epochs; ``90s`` -> wall-clock seconds."""
    m = _BUDGET.match(str(text).lower())
    if not m:
        raise ConfigError(f"--budget {text!r}: write a positive number of steps (6000 or 6000steps), "
                          f"epochs (10epochs) or seconds (90s)")
    value, unit = float(m.group(1)), m.group(2)
    if value <= 0:
        raise ConfigError(f"--budget {text!r}: the budget must be positive")
    if unit.startswith("epoch"):
        if not value.is_integer():
            raise ConfigError(f"--budget {text!r}: epochs must be a whole number")
        return {"epochs": int(value)}
    if unit in ("s", "sec", "second", "seconds"):
        return {"seconds": value}
    if not value.is_integer():
        raise ConfigError(f"--budget {text!r}: steps must be a whole number")
    return {"steps": int(value)}


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME:key=value;key=value`` -> (NAME, overrides): a variant that changes recipe keys (a schedule, an
    optimizer, a batch size) instead of adding a technique."""
    name, sep, rest = text.partition(":")
    overrides = [o.strip() for o in rest.split(";") if o.strip()]
    if not name.strip() or not sep or not overrides:
        raise ConfigError(f"--variant {text!r}: write NAME:key=value[;key=value...], "
                          f"e.g. one_cycle:schedule.name=one_cycle")
    return name.strip(), overrides


def plan_ablation(base: Recipe, techniques: Sequence[str], combos: Sequence[str], seeds: list[int],
                  budget: str | None = None, variants: Sequence[str] = ()) -> AblationPlan:
    """The ablation plan of command-line strings: ``--techniques`` items, ``--combo``, ``--budget``,
    ``--variant`` (see :func:`tricklab.lab.ablate.make_plan`)."""
    specs = [parse_technique(t) for t in techniques]
    return make_plan(base, specs, [parse_combo(c, specs) for c in combos], seeds,
                     None if budget is None else parse_budget(budget), [parse_variant(v) for v in variants])
