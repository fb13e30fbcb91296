"""A small name -> factory registry, shared by every component family.

Each family (data sets, models, optimizers, schedules, techniques, tasks) owns one ``Registry``. Lookups of
unknown names raise :class:`UnknownNameError` naming the closest registered names, so a typo in a recipe is
answered with a suggestion instead of a KeyError traceback.

Beyond the names registered in tricklab, :meth:`Registry.get` resolves code of the user's (see
:mod:`tricklab.plugins`): a ``module:attribute`` reference (imported, not registered), and, for the families
of :data:`~tricklab.plugins.GROUPS`, the entry points installed packages declare (registered the first time
they are used; :meth:`Registry.names` lists them). A built-in name always wins over a plugin of the same name.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from tricklab.errors import UnknownNameError
from tricklab.plugins import GROUPS, Plugin, discover, import_object, is_reference, load_plugin

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lowercase name to an object (usually a class or factory) plus a one-line summary.

    ``group`` is the entry-point group installed packages register this family in (default: the one
    :data:`~tricklab.plugins.GROUPS` gives ``kind``, else none); ``check(name, obj)`` validates (and may wrap)
    an object that comes from outside tricklab, a plugin or a ``module:attribute`` reference, and returns it.
    ``fallback(name)`` may supply an object for a name nothing else knows (None: unknown), e.g. a task for a
    data set a plugin registers.
    """

    def __init__(self, kind: str, group: str | None = None, check: Callable[[str, Any], Any] | None = None,
                 fallback: Callable[[str], T | None] | None = None) -> None:
        self.kind = kind
        self.group = group if group is not None else GROUPS.get(kind)
        self.check = check
        self.fallback = fallback
        self._items: dict[str, T] = {}
        self._summaries: dict[str, str] = {}
        self._plugins: dict[str, Plugin] = {}
        self._plugins_path: tuple[str, ...] | None = None  # sys.path when the entry points were last read

    def register(self, name: str, obj: T | None = None, *, summary: str | None = None) -> Any:
        """Register ``obj`` under ``name``; usable directly or as a decorator."""

        def add(o: T) -> T:
            key = name.lower()
            if key in self._items and self._items[key] is not o:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._items[key] = o
            doc = summary if summary is not None else (getattr(o, "__doc__", None) or "")
            self._summaries[key] = doc.strip().splitlines()[0] if doc.strip() else ""
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The object registered as ``name``, the plugin of that name (loaded and registered now), or the
        object a ``module:attribute`` reference names; else UnknownNameError with the closest names."""
        key = str(name).lower()
        if key in self._items:
            return self._items[key]
        if is_reference(name):
            return self._checked(str(name), import_object(str(name), self.kind))
        plugin = self.plugins(refresh=True).get(key)
        if plugin is not None:
            return self._load(plugin)
        found = self.fallback(key) if self.fallback is not None else None
        if found is None:
            raise UnknownNameError(self.unknown_message(name))
        return found

    def _checked(self, name: str, obj: Any) -> Any:
        return self.check(name, obj) if self.check is not None else obj

    def _load(self, plugin: Plugin) -> T:
        obj = self._checked(plugin.name, load_plugin(plugin, self.kind))
        self.register(plugin.name, obj)
        self._summaries[plugin.name] = (self._summaries[plugin.name] + f" (plugin: {plugin.distribution})").strip()
        return obj

    def plugins(self, refresh: bool = False) -> dict[str, Plugin]:
        """The installed entry points of this family not shadowed by a registered name (read once per
        ``sys.path``; ``refresh`` reads them again, as a lookup of an unknown name does)."""
        if self.group is None:
            return {}
        if refresh or self._plugins_path != tuple(sys.path):
            self._plugins = discover(self.group)
            self._plugins_path = tuple(sys.path)
        return {k: p for k, p in self._plugins.items() if k not in self._items}

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name).lower(), self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(self.names()) or "(none)"
        return f"unknown {self.kind} {name!r}{hint} Registered {self.kind}s: {known}"

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a plugin loaded in a test, for instance); unknown names are ignored."""
        self._items.pop(name.lower(), None)
        self._summaries.pop(name.lower(), None)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return factory(*args, **kwargs)

    def summary(self, name: str) -> str:
        """The one-line summary of ``name``; a plugin not loaded yet is loaded for it (one that fails to load
        is summarised by its error, so a listing still shows it)."""
        key = name.lower()
        plugin = self.plugins().get(key) if key not in self._summaries else None
        if plugin is not None:
            try:
                self._load(plugin)
            except Exception as e:  # noqa: BLE001 - a broken plugin must not break the listing of the others
                return f"(failed to load: {e})"
        return self._summaries[key]

    def names(self) -> list[str]:
        return sorted({*self._items, *self.plugins()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name.lower() in self._items or name.lower() in self.plugins())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def items(self) -> list[tuple[str, T]]:
        return [(k, self.get(k)) for k in self.names()]


def callable_registry(kind: str) -> Registry[Callable[..., Any]]:
    return Registry(kind)
