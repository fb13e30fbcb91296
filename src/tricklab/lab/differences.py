"""What differs between two recipes, by dotted key: for the messages that refuse a resume or an ablation
folder ("budget.steps: 6000 in the store, 2000 now") and for the cards and report ("what this variant
changes against the baseline").

Techniques are keyed by name (``techniques.ema.decay``; a second instance of one technique is ``ema#2``), not
by list position, so adding a technique shows up as that technique and not as every later one moving.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MISSING", "Change", "changes", "describe_changes", "flatten", "recipe_changes", "show"]


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


#: The value of a key one side does not have.
MISSING: Any = _Missing()

#: (dotted key, value before, value after)
Change = tuple[str, Any, Any]

# keys that say how a run is shown or scheduled, not what it computes (outside Recipe.hash as well)
_PRESENTATION = ("seed", "seeds", "progress", "threads")


def _technique_keys(techniques: Sequence[Any]) -> dict[str, Any]:
    """``{"ema": True, "ema.decay": 0.999, ...}``: a key saying the technique is on, then one per argument."""
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for t in techniques:
        name, args = (t, {}) if isinstance(t, str) else (t.get("name"), t.get("args") or {})
        counts[name] = counts.get(name, 0) + 1
        key = name if counts[name] == 1 else f"{name}#{counts[name]}"
        out[key] = True
        out.update({f"{key}.{k}": v for k, v in flatten(dict(args)).items()})
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are values, except a recipe's technique list (keyed by
    technique name: ``techniques.ema`` is true when it is on, ``techniques.ema.decay`` its argument); an empty
    mapping is kept as a value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if k == "techniques" and not prefix and isinstance(v, list):
            # no techniques is no key at all, so adding one shows as that technique and its arguments
            out.update({f"{key}.{name}": value for name, value in _technique_keys(v).items()})
            continue
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def changes(before: Mapping[str, Any], after: Mapping[str, Any], skip: Sequence[str] = ()) -> list[Change]:
    """Every dotted key whose value differs (``MISSING`` on the side that lacks it), sorted by key."""
    a, b = flatten(before), flatten(after)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k, MISSING), b.get(k, MISSING)) for k in keys
            if k not in skip and a.get(k, MISSING) != b.get(k, MISSING)]


def recipe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """:func:`changes` of two recipe dicts, leaving out the seeds, the progress display and the thread count
    (they do not change what a run computes)."""
    return changes(before, after, skip=_PRESENTATION)


def show(value: Any) -> str:
    """A value for a message or a card: JSON-like, ``(not set)`` for a missing one."""
    if value is MISSING:
        return "(not set)"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def describe_changes(found: Sequence[Change], before: str, after: str, limit: int = 6) -> str:
    """``"budget.steps: 6000 (in the store) vs 2000 (now); ..."``, at most ``limit`` keys, then how many more."""
    parts = [f"{k}: {show(a)} ({before}) vs {show(b)} ({after})" for k, a, b in found[:limit]]
    if len(found) > limit:
        parts.append(f"and {len(found) - limit} more")
    return "; ".join(parts)
