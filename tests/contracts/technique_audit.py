"""The write audit of the technique contract: snapshot the state around every handler call, and fail when a
handler changed something its technique did not declare in ``writes`` (or wrote a slot at an event where the
slot may not be written, ``tricklab.train.events.Slot.written_at``).

What is snapshotted: every TrainState field; the batch tensors, outputs and loss (identity and values); every
parameter, gradient and buffer of the model (values, and the parameter objects themselves); the optimizer's
param-group hyperparameters (lr apart) and state tensors; the history rows; the counters; the global RNG states
(torch CPU, Python, NumPy); the module tree (names, types and every plain attribute, ``training`` included).
Forward hooks are not part of it: they observe (Diagnostics installs some for one step).

Used by tests/contracts/test_techniques.py; the meta-tests there check that each kind of undeclared write is
caught, so the audit itself can fail.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from tricklab.train import Trainer, TrainState
from tricklab.train.events import GRAD_SLOTS, INPUT_SLOTS, writable_at
from tricklab.train.technique import Plan, Technique, instance_names

#: what changed -> the slots any one of which covers the change (empty: only the trainer may change it)
COVERED_BY: dict[str, frozenset[str]] = {
    "inputs": INPUT_SLOTS,
    "targets": frozenset({"batch.targets"}),
    "outputs": frozenset({"batch.outputs"}),
    "loss": frozenset({"loss", "loss_fn"}),
    "loss_fn": frozenset({"loss_fn"}),
    "grads": GRAD_SLOTS,
    "params": frozenset({"params"}),
    "buffers": frozenset({"norm_stats"}),
    "lr": frozenset({"lr"}),
    "optimizer": frozenset({"optimizer"}),
    "grad_scale": frozenset({"loss_scale"}),
    "accum_steps": frozenset({"accum_steps"}),
    "skip_step": frozenset({"skip_step"}),
    "should_stop": frozenset({"stop"}),
    "stop_reason": frozenset({"stop"}),
    "counters": frozenset({"counters"}),
    "log_row": frozenset({"log_row"}),
    "eval_metrics": frozenset({"eval_metrics"}),
    "rng": frozenset({"rng"}),
    "model.structure": frozenset({"model.structure"}),
}
#: at these events the weights and buffers may also change under eval_weights (an averager swaps them)
EVAL_EVENTS = frozenset({"eval_start", "eval_end"})
# TrainState fields compared as plain values / by identity (the rest have their own comparison below)
_BY_IDENTITY = {"model", "optimizer", "loss_fn", "forward_backward", "snapshot", "train_batches", "inputs",
                "targets", "outputs", "loss"}
_SPECIAL = _BY_IDENTITY | {"history"}


class ContractViolation(AssertionError):
    """A handler changed state its technique did not declare."""


def _clone(x: Any) -> Any:
    return x.detach().clone() if isinstance(x, torch.Tensor) else copy.deepcopy(x)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape \
                or a.dtype != b.dtype:
            return False
        if a.is_floating_point():  # NaN where the other has NaN counts as unchanged
            return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0))
        return torch.equal(a, b)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # nan == nan for this purpose
    return bool(a == b)


def _structure(model: torch.nn.Module) -> list[tuple[str, str, dict[str, Any]]]:
    plain = (int, float, bool, str, type(None))
    return [(name, type(m).__name__, {k: v for k, v in vars(m).items() if isinstance(v, plain)})
            for name, m in model.named_modules()]


def take_snapshot(s: TrainState) -> dict[str, Any]:
    """Everything a handler could change, copied (see the module docstring)."""
    model = s.raw_model
    snap: dict[str, Any] = {}
    for f in fields(s):
        if f.name not in _SPECIAL:
            snap[f.name] = _clone(getattr(s, f.name))
    for name in _BY_IDENTITY:
        value = getattr(s, name)
        snap[name] = (id(value), _clone(value) if isinstance(value, torch.Tensor) else None)
    snap["history"] = copy.deepcopy(s.history)
    params = list(model.parameters())
    snap["param_ids"] = [id(p) for p in params]
    snap["params"] = [p.detach().clone() for p in params]
    snap["grads"] = [None if p.grad is None else p.grad.detach().clone() for p in params]
    snap["buffers"] = {k: v.detach().clone() for k, v in model.named_buffers()}
    groups = s.optimizer.param_groups
    snap["lr"] = [g["lr"] for g in groups]
    snap["optimizer"] = ([{k: _clone(v) for k, v in g.items() if k not in ("params", "lr")} for g in groups],
                         {id(p): {k: _clone(v) for k, v in st.items()} for p, st in s.optimizer.state.items()})
    snap["rng"] = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    snap["model.structure"] = _structure(model)
    return snap


def changes(before: dict[str, Any], s: TrainState) -> set[str]:
    """The names (keys of :data:`COVERED_BY`, or a trainer-only field) of what changed since ``before``."""
    after = take_snapshot(s)
    out: set[str] = set()
    for name in _BY_IDENTITY:
        (id_a, val_a), (id_b, val_b) = before[name], after[name]
        if id_a != id_b or (val_a is not None and not _same(val_a, val_b)):
            out.add({"model": "model.structure"}.get(name, name))
    hist_a, hist_b = before["history"], after["history"]
    if len(hist_a) != len(hist_b) or not _same(hist_a[:-1], hist_b[:-1]):
        out.add("history")  # rows appended, removed or rewritten: the trainer's alone
    elif hist_a and not _same(hist_a[-1], hist_b[-1]):
        out.add("log_row")
    if before["param_ids"] != after["param_ids"]:
        out.add("model.structure")
    for key in ("params", "buffers", "lr", "optimizer", "rng", "model.structure"):
        if not _same(before[key], after[key]):
            out.add(key)
    # gradients of the parameters present before and after: a structure change that removes parameters (qat's
    # conversion to int8) takes their gradients with them without writing any
    grads_a = dict(zip(before["param_ids"], before["grads"]))
    grads_b = dict(zip(after["param_ids"], after["grads"]))
    common = [i for i in grads_a if i in grads_b]
    added = [grads_b[i] for i in grads_b if i not in grads_a]
    if not _same([grads_a[i] for i in common], [grads_b[i] for i in common]) or any(g is not None for g in added):
        out.add("grads")
    for f in fields(s):
        if f.name not in _SPECIAL and not _same(before[f.name], after[f.name]):
            out.add(f.name)
    return out


def check_change_declared(technique: Technique, instance: str, event: str, changed: set[str]) -> None:
    """Raise :class:`ContractViolation` for each change no declared slot covers at ``event``."""
    bad = []
    for what in sorted(changed):
        covering = set(COVERED_BY.get(what, frozenset()))
        if event in EVAL_EVENTS and what in ("params", "buffers"):
            covering.add("eval_weights")
        if not any(slot in technique.writes and writable_at(slot, event) for slot in covering):
            need = f"declare one of {sorted(covering)} (writable at {event!r})" if covering else \
                "only the trainer may change it"
            bad.append(f"{what}: {need}")
    if bad:
        raise ContractViolation(f"technique {instance!r} at {event!r} changed state it did not declare in writes "
                                f"{sorted(technique.writes)}: " + "; ".join(bad))


class WriteAudit:
    """Wraps every handler of a trainer's plan with a snapshot before and a check after.

    ``audit.calls`` counts the audited calls per (instance, event), so a test can show that the events it
    means to check did fire.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.calls: dict[tuple[str, str], int] = {}
        active = trainer._active  # the techniques this process runs (all of them on one process)
        by_name = dict(zip(instance_names(active), active))
        plan = trainer.plan
        wrapped = {event: tuple((name, self._wrap(by_name[name], name, event, fn)) for name, fn in handlers)
                   for event, handlers in plan.handlers.items()}
        trainer.plan = Plan(names=plan.names, order=plan.order, handlers=wrapped)

    def _wrap(self, technique: Technique, name: str, event: str,
              fn: Callable[[TrainState], Any]) -> Callable[[TrainState], Any]:
        def audited(state: TrainState) -> Any:
            before = take_snapshot(state)
            result = fn(state)
            check_change_declared(technique, name, event, changes(before, state))
            self.calls[(name, event)] = self.calls.get((name, event), 0) + 1
            return result

        return audited
