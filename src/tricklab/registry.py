"""A small name -> factory registry, shared by every component family.

Each family (data sets, models, optimizers, schedules, techniques, tasks) owns one ``Registry``. Lookups of
unknown names raise :class:`UnknownNameError` naming the closest registered names, so a typo in a recipe is
answered with a suggestion instead of a KeyError traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from tricklab.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a lowercase name to an object (usually a class or factory) plus a one-line summary."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._summaries: dict[str, str] = {}

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
        key = str(name).lower()
        if key not in self._items:
            raise UnknownNameError(self.unknown_message(name))
        return self._items[key]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(str(name).lower(), list(self._items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(sorted(self._items)) or "(none)"
        return f"unknown {self.kind} {name!r}{hint} Registered {self.kind}s: {known}"

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r} is not callable")
        return factory(*args, **kwargs)

    def summary(self, name: str) -> str:
        return self._summaries[name.lower()]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(k, self._items[k]) for k in self.names()]


def callable_registry(kind: str) -> Registry[Callable[..., Any]]:
    return Registry(kind)
