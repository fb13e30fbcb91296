"""The Technique contract and the check that runs before the first step.

A technique is an object with ``on_<event>(state)`` methods, declared ``reads`` / ``writes`` slots (the
vocabulary of ``tricklab.train.events.SLOT_TABLE``) and a ``state_dict`` for exact resume. :func:`plan`
validates a list of techniques and derives, for every event, the order in which they run:

1. every declared slot must be in :data:`~tricklab.train.events.SLOTS`;
2. two techniques that write the same exclusive slot are refused with one message naming both, unless one
   lists the other in ``composes_with``;
3. within one event, the order of a pair comes from the first rule below that relates them:

   a. explicit ``after`` / ``before`` (technique names): the exception, for what the data flow cannot say;
   b. the pipelines (:data:`~tricklab.train.events.PIPELINES`: the input, loss and gradient stages): a writer
      of an earlier stage runs before a writer of a later one; a writer of a stage runs before a technique that
      only reads that stage or a later one; a technique that only reads a stage runs before any writer of a
      later stage (which would overwrite what it reads);
   c. every other slot: a technique that writes a slot runs before one that reads it (unless each reads and
      writes it); at a slot's ``teardown`` event (``eval_weights`` at ``eval_end``) the reader runs first.

   A slot relates two handlers only at the events where it may be written (``Slot.written_at``). Remaining
   ties are broken by name, so the order never depends on list position. A cycle is refused with a message
   naming its members.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tricklab.errors import ConfigError, ConflictError
from tricklab.train.events import EVENTS, EXCLUSIVE_SLOTS, PIPELINES, SLOT_INFO, SLOTS, writable_at


def _check_declared(owner: str, kind: str, slots: Iterable[str]) -> frozenset[str]:
    slots = frozenset(slots)
    bad = sorted(slots - SLOTS)
    if bad:
        raise ConfigError(f"technique {owner!r} declares unknown {kind} slot(s) {bad}; valid slots: {sorted(SLOTS)}")
    return slots


class Technique:
    """Base class: subclass, set the class attributes, define ``on_<event>`` methods.

    Class attributes:
        name: registry name (also the default instance name in traces and checkpoints).
        reads / writes: state slots used (see ``tricklab.train.events.SLOT_TABLE``). ``writes`` must name
            everything a handler changes (the contract test checks it); ``reads`` names the slots whose value
            a handler uses, which orders it after their writers.
        composes_with: names of techniques that may write the same exclusive slot as this one.
        after / before: names of techniques this one must run after / before within an event; only for an
            order the data flow of the slots cannot express (say why in a comment).

    A technique whose slots depend on its arguments declares them in ``__init__`` with :meth:`declare`.
    """

    name: ClassVar[str] = "technique"
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    composes_with: ClassVar[frozenset[str]] = frozenset()
    after: ClassVar[frozenset[str]] = frozenset()
    before: ClassVar[frozenset[str]] = frozenset()
    #: Techniques that only the main process should run under DDP (file writers, progress display).
    main_process_only: ClassVar[bool] = False

    def declare(self, *, reads: Iterable[str] | None = None, writes: Iterable[str] | None = None) -> None:
        """Instance-level declarations, for a technique whose slots depend on its arguments (SWA with
        ``swa_lr`` also writes ``lr``). Replaces this instance's ``reads`` / ``writes``; the slots are checked
        now, so a typo fails at construction."""
        if reads is not None:
            self.reads = _check_declared(self.name, "reads", reads)
        if writes is not None:
            self.writes = _check_declared(self.name, "writes", writes)

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
                    f"{slot!r} ({SLOT_INFO[slot].why}). Remove one of them, or use a technique that combines them."
                )


# ------------------------------------------------------------------------------------------------ ordering
_PIPELINE_SLOTS = frozenset(s for p in PIPELINES for s in p)


def _explicit_edges(a: Technique, b: Technique) -> bool:
    """a must run before b by name (a.before names b, or b.after names a)."""
    return b.name in a.before or a.name in b.after


def _pipeline_edge(a: Technique, b: Technique, event: str) -> bool:
    """a must run before b by the stages of some pipeline (rule 3b of the module docstring)."""
    for stages in PIPELINES:
        wa = [k for k, s in enumerate(stages) if s in a.writes and writable_at(s, event)]
        wb = [k for k, s in enumerate(stages) if s in b.writes and writable_at(s, event)]
        ra = [k for k, s in enumerate(stages) if s in a.reads]
        rb = [k for k, s in enumerate(stages) if s in b.reads]
        if wa and wb and max(wa) < min(wb):
            return True  # an earlier stage's writer feeds a later stage's writer
        if wa and not wb and any(r >= min(wa) for r in rb):
            return True  # a reader of this stage or a later one sees what the writer produced
        if ra and not wa and any(w > min(ra) for w in wb):
            return True  # a later stage's writer would overwrite what the reader reads
    return False


def _flow_edge(a: Technique, b: Technique, event: str) -> bool:
    """a must run before b by a written-then-read slot outside the pipelines (rule 3c)."""
    for slot in (a.writes | b.writes) - _PIPELINE_SLOTS:
        if not writable_at(slot, event):
            continue
        teardown = event in SLOT_INFO[slot].teardown
        writer, reader = (b, a) if teardown else (a, b)
        if slot in writer.writes and slot in reader.reads and not (slot in reader.writes and slot in writer.reads):
            return True
    return False


def _pair_edges(event: str, idx: list[int], techniques: Sequence[Technique]) -> dict[int, set[int]]:
    """Directed edges between the handlers of ``event``: per pair, the first rule that relates them wins."""
    edges: dict[int, set[int]] = {i: set() for i in idx}
    rules = (lambda a, b: _explicit_edges(a, b), lambda a, b: _pipeline_edge(a, b, event),
             lambda a, b: _flow_edge(a, b, event))
    for n, i in enumerate(idx):
        for j in idx[n + 1 :]:
            ti, tj = techniques[i], techniques[j]
            for rule in rules:
                forward, backward = rule(ti, tj), rule(tj, ti)
                if forward or backward:
                    if forward:
                        edges[i].add(j)
                    if backward:
                        edges[j].add(i)  # both directions at one level: a cycle, refused below
                    break
    return edges


def _order_event(event: str, idx: list[int], techniques: Sequence[Technique], names: Sequence[str]) -> list[int]:
    edges = _pair_edges(event, idx, techniques)
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
        _check_declared(t.name, "reads", t.reads)
        _check_declared(t.name, "writes", t.writes)
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
