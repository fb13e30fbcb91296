"""The Technique contract and the check that runs before the first step.

A technique is an object with ``on_<event>(state)`` methods, declared ``reads`` / ``writes`` slots and a
``state_dict`` for exact resume. :func:`plan` validates a list of techniques and derives, for every event,
the order in which they run:

1. every declared slot must be in :data:`~tricklab.train.events.SLOTS`;
2. two techniques that write the same exclusive slot are refused with one message naming both, unless one
   lists the other in ``composes_with``;
3. within one event, explicit ``after`` / ``before`` declarations (technique names) order a pair; a pair
   without one is ordered by data flow: a technique that writes a slot runs before one that only reads it.
   Remaining ties are broken by name, so the order never depends on list position. A cycle is refused with a
   message naming its members.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tricklab.errors import ConfigError, ConflictError
from tricklab.train.events import EVENTS, EXCLUSIVE_SLOTS, SLOTS


class Technique:
    """Base class: subclass, set the class attributes, define ``on_<event>`` methods.

    Class attributes:
        name: registry name (also the default instance name in traces and checkpoints).
        reads / writes: state slots used (see ``tricklab.train.events.SLOTS``).
        composes_with: names of techniques that may write the same exclusive slot as this one.
        after / before: names of techniques this one must run after / before within an event.
    """

    name: ClassVar[str] = "technique"
    reads: ClassVar[frozenset[str]] = frozenset()
    writes: ClassVar[frozenset[str]] = frozenset()
    composes_with: ClassVar[frozenset[str]] = frozenset()
    after: ClassVar[frozenset[str]] = frozenset()
    before: ClassVar[frozenset[str]] = frozenset()
    #: Techniques that only the main process should run under DDP (file writers, progress display).
    main_process_only: ClassVar[bool] = False

    def handled_events(self) -> list[str]:
        return [e for e in EVENTS if callable(getattr(self, f"on_{e}", None))]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors allowed). Stateless techniques return {}."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"technique {self.name!r} is stateless but got state keys {sorted(state)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@dataclass(frozen=True)
class Plan:
    """The validated composition: instance names and, per event, the ordered handlers."""

    names: tuple[str, ...]
    order: dict[str, tuple[int, ...]]  # event -> indices into the technique list, in run order
    handlers: dict[str, tuple[tuple[str, Callable[[Any], Any]], ...]]

    def describe(self) -> str:
        lines = []
        for event in EVENTS:
            if self.order.get(event):
                lines.append(f"{event}: " + " -> ".join(self.names[i] for i in self.order[event]))
        return "\n".join(lines) or "(no techniques)"


def instance_names(techniques: Sequence[Technique]) -> tuple[str, ...]:
    """Unique names: the technique's name, then name#2, name#3 for repeats (checkpoint keys)."""
    seen: dict[str, int] = {}
    out = []
    for t in techniques:
        seen[t.name] = seen.get(t.name, 0) + 1
        out.append(t.name if seen[t.name] == 1 else f"{t.name}#{seen[t.name]}")
    return tuple(out)


def _check_slots(t: Technique) -> None:
    for kind in ("reads", "writes"):
        bad = sorted(set(getattr(t, kind)) - SLOTS)
        if bad:
            raise ConfigError(
                f"technique {t.name!r} declares unknown {kind} slot(s) {bad}; valid slots: {sorted(SLOTS)}"
            )


def check_conflicts(techniques: Sequence[Technique]) -> None:
    """Refuse two writers of one exclusive slot (unless one composes with the other)."""
    names = instance_names(techniques)
    for slot in sorted(EXCLUSIVE_SLOTS):
        writers = [(n, t) for n, t in zip(names, techniques) if slot in t.writes]
        for i, (na, a) in enumerate(writers):
            for nb, b in writers[i + 1 :]:
                if b.name in a.composes_with or a.name in b.composes_with:
                    continue
                raise ConflictError(
                    f"techniques {na!r} and {nb!r} conflict: both write the exclusive state slot "
                    f"{slot!r} (only one technique may own it). Remove one of them, or use a technique "
                    f"that combines them."
                )


def _order_event(event: str, idx: list[int], techniques: Sequence[Technique], names: Sequence[str]) -> list[int]:
    by_name: dict[str, list[int]] = {}
    for i in idx:
        by_name.setdefault(techniques[i].name, []).append(i)
    edges: dict[int, set[int]] = {i: set() for i in idx}
    explicit: set[frozenset[int]] = set()
    for i in idx:
        ti = techniques[i]
        for other in ti.after:
            for j in by_name.get(other, []):
                edges[j].add(i)
                explicit.add(frozenset((i, j)))
        for other in ti.before:
            for j in by_name.get(other, []):
                edges[i].add(j)
                explicit.add(frozenset((i, j)))
    for i in idx:
        ti = techniques[i]
        for j in idx:
            tj = techniques[j]
            # writer -> pure reader of the same slot, unless an explicit after/before orders the pair
            if i != j and frozenset((i, j)) not in explicit and any(
                s in ti.writes and s in tj.reads and s not in tj.writes for s in SLOTS
            ):
                edges[i].add(j)
    indeg = {i: 0 for i in idx}
    for i in idx:
        for j in edges[i]:
            indeg[j] += 1
    heap = [(names[i], i) for i in idx if indeg[i] == 0]
    heapq.heapify(heap)
    out: list[int] = []
    while heap:
        _, i = heapq.heappop(heap)
        out.append(i)
        for j in edges[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(heap, (names[j], j))
    if len(out) != len(idx):
        stuck = sorted(names[i] for i in idx if i not in out)
        raise ConflictError(
            f"techniques {stuck} cannot be ordered at event {event!r}: their reads/writes/after/before "
            f"declarations form a cycle"
        )
    return out


def plan(techniques: Iterable[Technique]) -> Plan:
    """Validate a composition and derive the run order of every event (see module docstring)."""
    techniques = list(techniques)
    for t in techniques:
        if not isinstance(t, Technique):
            raise ConfigError(f"{t!r} is not a tricklab Technique (subclass tricklab.train.Technique)")
        _check_slots(t)
    check_conflicts(techniques)
    names = instance_names(techniques)
    order: dict[str, tuple[int, ...]] = {}
    handlers: dict[str, tuple[tuple[str, Callable[[Any], Any]], ...]] = {}
    for event in EVENTS:
        idx = [i for i, t in enumerate(techniques) if callable(getattr(t, f"on_{event}", None))]
        ordered = _order_event(event, idx, techniques, names) if idx else []
        order[event] = tuple(ordered)
        handlers[event] = tuple((names[i], getattr(techniques[i], f"on_{event}")) for i in ordered)
    return Plan(names=names, order=order, handlers=handlers)
