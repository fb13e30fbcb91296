"""Components that come from the user's code or from installed packages, not from tricklab itself.

Two ways in, both resolved by :class:`tricklab.registry.Registry` so every family (models, data sets,
techniques, tasks) accepts them wherever a registered name is accepted:

* **A reference** ``module:attribute`` (``mynets:make_net``, ``pkg.sub:Factory.build``): the module is
  imported (from the working folder when it is not installed) and the attribute read. Nothing is registered;
  the recipe records the reference itself, so a worker process resolves it again.
* **An entry point** of an installed distribution, in one of the groups of :data:`GROUPS`
  (``[project.entry-points."tricklab.models"] mynet = "mypkg.nets:make_net"``): the distribution registers
  its own names, listed by ``tricklab list`` and usable in recipes like built-in ones. Entry points are read
  from the package metadata without importing anything; a plugin is imported the first time its name is used.

Errors say what is wrong and how to fix it (:class:`~tricklab.errors.ConfigError`): a module that does not
import, a missing attribute, a plugin that fails to load (naming its distribution).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from tricklab.errors import ConfigError

__all__ = ["GROUPS", "Plugin", "discover", "import_object", "is_reference", "load_plugin"]

#: registry kind -> the entry-point group a distribution registers that kind of component in
GROUPS: dict[str, str] = {
    "model": "tricklab.models",
    "dataset": "tricklab.datasets",
    "technique": "tricklab.techniques",
    "task": "tricklab.tasks",
}

_REFERENCE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_reference(name: object) -> bool:
    """Whether ``name`` is a ``module:attribute`` reference (dotted names on both sides of one colon)."""
    return isinstance(name, str) and bool(_REFERENCE.match(name))


def _import_module(module: str, ref: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or module.split(".")[0] != e.name.split(".")[0]:
            raise ConfigError(f"{what} {ref!r}: importing module {module!r} failed: {e}") from e
    # not installed: the working folder is where a user's own module lives (`tricklab` as a console script
    # does not put it on sys.path, `python -m tricklab` does)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or module.split(".")[0] != e.name.split(".")[0]:
                raise ConfigError(f"{what} {ref!r}: importing module {module!r} failed: {e}") from e
    raise ConfigError(f"{what} {ref!r}: no module named {module!r} in the working folder ({cwd}) or among the "
                      f"installed packages; write module:attribute for a module on the Python path "
                      f"(add its folder to PYTHONPATH, or pip install its package)")


def import_object(ref: str, what: str = "object") -> Any:
    """The object ``module:attribute`` names (``attribute`` may be dotted: ``Class.factory``).

    Raises ConfigError naming ``what`` (e.g. "model") when ``ref`` is no reference, the module is missing or
    fails to import (the original error is kept as the cause), or the attribute is missing (listing the
    module's public names)."""
    if not is_reference(ref):
        raise ConfigError(f"{what} {ref!r}: a reference to code looks like module:attribute (e.g. "
                          f"mynets:make_net)")
    module, _, attr = ref.partition(":")
    try:
        obj = _import_module(module, ref, what)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing: say whose error it is
        raise ConfigError(f"{what} {ref!r}: importing module {module!r} raised {type(e).__name__}: {e}") from e
    for i, part in enumerate(attr.split(".")):
        if not hasattr(obj, part):
            where = module if i == 0 else f"{module}:{'.'.join(attr.split('.')[:i])}"
            names = sorted(n for n in dir(obj) if not n.startswith("_"))
            shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
            raise ConfigError(f"{what} {ref!r}: {where} has no attribute {part!r}; it has: {shown or '(nothing)'}")
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Plugin:
    """One entry point of an installed distribution: its name (lowercased), ``module:attribute`` and the
    distribution that declares it."""

    name: str
    value: str
    distribution: str
    entry_point: Any  # importlib.metadata.EntryPoint


def discover(group: str) -> dict[str, Plugin]:
    """The entry points of ``group`` of every installed distribution, by lowercase name, read from the
    metadata (nothing is imported). A name two distributions declare keeps the first found."""
    found: dict[str, Plugin] = {}
    for ep in importlib.metadata.entry_points(group=group):
        dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"
        found.setdefault(ep.name.lower(), Plugin(ep.name.lower(), ep.value, dist, ep))
    return found


def load_plugin(plugin: Plugin, what: str) -> Any:
    """Import the object a plugin's entry point names; a failure is a ConfigError naming the distribution."""
    try:
        return plugin.entry_point.load()
    except Exception as e:  # noqa: BLE001 - whatever the plugin raises, say which plugin and how to act
        raise ConfigError(f"{what} {plugin.name!r} (entry point {plugin.value!r} of the distribution "
                          f"{plugin.distribution!r}) failed to load: {type(e).__name__}: {e}; fix or uninstall "
                          f"that package") from e
