"""Task kinds: what a task's targets are, and so its training loss, its evaluation and its declared metrics.

=================  ====================================  ===========================================  ==========
kind               targets / model outputs               loss (options)                               headline
=================  ====================================  ===========================================  ==========
classification     class ids (N,) / logits (N, C)        cross-entropy (``class_weights``)            accuracy
token              ids (N, T), -100 unscored / (N,T,V)   cross-entropy over scored positions          accuracy
binary             0/1 ids (N,) / two logits (N, 2)      cross-entropy (``class_weights``)            F1
multilabel         0/1 rows (N, C) / logits (N, C)       BCE with logits (``pos_weight``,             micro F1
                                                         ``threshold`` for the metrics)
regression         floats (N,) or (N, D) / (N, D)        ``loss``: mse, l1 or huber (``huber_delta``) MSE
loop               a task that runs its own loop (:class:`tricklab.lab.tasks.LoopTask`)
=================  ====================================  ===========================================  ==========

A data set read from files says what its targets are in ``meta["target_kind"]`` (multiclass, binary,
multilabel, regression); :func:`kind_for` turns that into the task kind, or checks a kind the recipe states
against it. :func:`resolve` then builds the loss and metric function for the loaded data: class weights and
BCE ``pos_weight`` fitted on the training split (``"balanced"``), regression metrics in the target's own units
when the loader standardised it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.errors import ConfigError
from tricklab.evaluate import binary_metrics, classification_metrics, multilabel_metrics, regression_metrics
from tricklab.evaluate.regression import match_shapes
from tricklab.lab.metrics import BINARY_METRICS, METRICS, MULTILABEL_METRICS, REGRESSION_METRICS, MetricInfo

__all__ = ["IGNORE_INDEX", "KINDS", "KIND_OF_TARGET", "KindInfo", "ResolvedTask", "TargetInfo", "check_options",
           "classification_metric_fn", "kind_for", "resolve", "scored_positions", "token_cross_entropy"]

#: target id that marks "no prediction here" in per-token targets (as F.cross_entropy's ignore_index)
IGNORE_INDEX = -100

LossFn = Callable[[Tensor, Tensor], Tensor]
MetricFn = Callable[[Tensor, Tensor], dict[str, Any]]


def token_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over the scored positions of per-token targets.

    logits (B, T, V), targets (B, T) with IGNORE_INDEX where nothing is predicted (padding, prompt tokens).
    """
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


def scored_positions(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(M, V) logits and (M,) targets of the positions that carry a target (targets != IGNORE_INDEX)."""
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"per-token task: expected logits (B, T, V) and targets (B, T), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}")
    keep = targets.reshape(-1) != IGNORE_INDEX
    return logits.reshape(-1, logits.shape[-1])[keep], targets.reshape(-1)[keep]


def classification_metric_fn(token: bool, num_classes: int) -> MetricFn:
    """The evaluation of a classification (``token=False``) or per-token task: every
    :func:`classification_metrics` value, ``loss`` (= nll) and for per-token tasks bits per token."""

    def metrics(logits: Tensor, targets: Tensor) -> dict[str, Any]:
        if token:
            logits, targets = scored_positions(logits, targets)
        out = classification_metrics(logits, targets, num_classes)
        out["loss"] = out["nll"]
        if token:
            out["bpc"] = out["nll"] / math.log(2.0)
            out["scored_positions"] = int(targets.numel())
        return out

    return metrics


# ------------------------------------------------------------------------------------------------ options
def _weights_option(key: str, value: Any) -> Any:
    """null, "balanced" (fitted on the training split) or a list of non-negative numbers."""
    if value is None or value == "balanced":
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and key == "pos_weight":
        return float(value)
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value):
        return [float(v) for v in value]
    extra = ", a positive number" if key == "pos_weight" else ""
    raise ConfigError(f"task_args.{key} must be null, 'balanced'{extra} or a list of non-negative numbers, "
                      f"got {value!r}")


def _choice(*choices: str) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if value not in choices:
            raise ConfigError(f"task_args.{key} must be one of {list(choices)}, got {value!r}")
        return value
    return check


def _open_unit(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ConfigError(f"task_args.{key} must be a number in (0, 1), got {value!r}")
    return float(value)


def _positive(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"task_args.{key} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class KindInfo:
    """A kind of task: one line, its declared metrics (the first judged one is the headline) and the options
    a recipe may set under ``task_args`` (name -> (default, checker))."""

    name: str
    summary: str
    metrics: tuple[MetricInfo, ...]
    options: Mapping[str, tuple[Any, Callable[[str, Any], Any]]]


_CLASS_WEIGHTS = {"class_weights": (None, _weights_option)}
KINDS: dict[str, KindInfo] = {k.name: k for k in (
    KindInfo("classification", "one class per example; cross-entropy", METRICS, _CLASS_WEIGHTS),
    KindInfo("token", "one class per position (language models, sequence tasks); cross-entropy", METRICS, {}),
    KindInfo("binary", "two classes, class 1 positive; cross-entropy, positive-class F1 / ROC AUC",
             BINARY_METRICS, _CLASS_WEIGHTS),
    KindInfo("multilabel", "any subset of labels per example; BCE with logits", MULTILABEL_METRICS,
             {"pos_weight": (None, _weights_option), "threshold": (0.5, _open_unit)}),
    KindInfo("regression", "real-valued targets; MSE, L1 or Huber loss", REGRESSION_METRICS,
             {"loss": ("mse", _choice("mse", "l1", "huber")), "huber_delta": (1.0, _positive)}),
)}

#: a data set's ``meta["target_kind"]`` -> the task kind that trains on it
KIND_OF_TARGET = {"multiclass": "classification", "binary": "binary", "multilabel": "multilabel",
                  "regression": "regression"}


def check_options(kind: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` (the recipe's ``task_args`` without ``kind``) checked for ``kind``, defaults filled in."""
    info = KINDS[kind]
    unknown = sorted(set(args) - set(info.options))
    if unknown:
        valid = ", ".join(["kind", *info.options]) or "kind"
        raise ConfigError(f"task_args: {unknown[0]!r} is not an option of a {kind} task; its options: {valid}")
    return {k: check(k, args[k]) if k in args else default for k, (default, check) in info.options.items()}


def kind_for(task_kind: str, stated: str | None, meta: Mapping[str, Any], num_outputs: int, task: str) -> str:
    """The kind a task trains as: its own (``"auto"``: read from the data's ``meta``), or the ``stated`` one
    when the data allows it (a two-class classification may be run as ``binary`` and back)."""
    if task_kind == "auto":
        base = "token" if meta.get("task") == "token-lm" else KIND_OF_TARGET[meta.get("target_kind", "multiclass")]
    else:
        base = task_kind
    if stated is None or stated == base:
        return base
    two_classes = {stated, base} == {"classification", "binary"} and num_outputs == 2
    if not two_classes:
        target = meta.get("target_kind", "multiclass")
        raise ConfigError(f"task_args.kind {stated!r} does not fit task {task!r}: its data are {base} "
                          f"(targets {target}, {num_outputs} output(s)); set data.target_kind to read the "
                          f"targets as {stated}, or leave task_args.kind out")
    return stated


# ---------------------------------------------------------------------------------------------- resolving
@dataclass(frozen=True)
class TargetInfo:
    """What a kind needs from the loaded data: the model's number of outputs, the data set's ``meta`` and
    the training targets (to fit balanced weights when the data set did not)."""

    num_outputs: int
    meta: Mapping[str, Any]
    train_targets: Tensor | None = None


@dataclass(frozen=True)
class ResolvedTask:
    """A task's kind resolved against its data: the loss the trainer minimises, the evaluation it runs and the
    metrics a run declares."""

    kind: str
    loss: LossFn
    metric_fn: MetricFn
    metrics: tuple[MetricInfo, ...]
    options: dict[str, Any]


def _balanced(data: TargetInfo, key: str) -> list[float]:
    fitted = data.meta.get(key)
    if fitted is not None:
        return [float(v) for v in (fitted if isinstance(fitted, list) else [fitted])]
    y = data.train_targets
    if y is None:
        raise ConfigError(f"task_args.{key}: 'balanced' needs the training targets, which this data set lacks")
    if key == "pos_weight":  # per label: negatives / positives
        pos = y.reshape(len(y), -1).double().sum(0)
        return torch.where(pos > 0, (len(y) - pos) / pos.clamp_min(1), torch.zeros_like(pos)).tolist()
    counts = torch.bincount(y.reshape(-1).long(), minlength=data.num_outputs).double()
    present = counts > 0
    # n / (C * n_c) over the classes present (scikit-learn's "balanced"); an absent class weighs 0
    return torch.where(present, counts.sum() / (present.sum() * counts.clamp_min(1)), 0.0).tolist()


def _weights(option: Any, data: TargetInfo, key: str, size: int) -> Tensor | None:
    if option is None:
        return None
    values = _balanced(data, key) if option == "balanced" else option
    values = [float(values)] * size if isinstance(values, float) else list(values)
    if len(values) == 1 and size > 1 and key == "pos_weight" and option == "balanced":
        values = values * size
    if len(values) != size:
        raise ConfigError(f"task_args.{key} has {len(values)} values; the task has {size} "
                          f"{'labels' if key == 'pos_weight' else 'classes'}")
    return torch.tensor(values, dtype=torch.float32)


def _weighted_ce(weight: Tensor) -> LossFn:
    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets, weight=weight.to(outputs.device, outputs.dtype))
    return loss


def _bce(pos_weight: Tensor | None) -> LossFn:
    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        pw = None if pos_weight is None else pos_weight.to(outputs.device, outputs.dtype)
        return F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), pos_weight=pw)
    return loss


def _regression_loss(name: str, delta: float) -> LossFn:
    base: LossFn = {"mse": F.mse_loss, "l1": F.l1_loss,
                    "huber": functools.partial(F.huber_loss, delta=delta)}[name]

    def loss(outputs: Tensor, targets: Tensor) -> Tensor:
        return base(*match_shapes(outputs, targets.to(outputs.dtype)))
    return loss


def _classification(kind: str, opts: dict[str, Any], data: TargetInfo, default_loss: LossFn) -> tuple[LossFn, MetricFn]:
    weight = _weights(opts.get("class_weights"), data, "class_weights", data.num_outputs)
    loss = default_loss if weight is None else _weighted_ce(weight)
    if kind == "binary":
        if data.num_outputs != 2:
            raise ConfigError(f"a binary task needs two classes, these data have {data.num_outputs}")

        def metric(logits: Tensor, targets: Tensor) -> dict[str, Any]:
            out = binary_metrics(logits, targets)
            out["loss"] = out["nll"]
            return out
        return loss, metric
    return loss, classification_metric_fn(kind == "token", data.num_outputs)


def _multilabel(opts: dict[str, Any], data: TargetInfo) -> tuple[LossFn, MetricFn]:
    loss = _bce(_weights(opts["pos_weight"], data, "pos_weight", data.num_outputs))

    def metric(logits: Tensor, targets: Tensor) -> dict[str, Any]:
        out = multilabel_metrics(logits, targets, opts["threshold"])
        out["loss"] = out["bce"]
        return out
    return loss, metric


def _regression(opts: dict[str, Any], data: TargetInfo) -> tuple[LossFn, MetricFn]:
    loss = _regression_loss(opts["loss"], opts["huber_delta"])
    scale = data.meta.get("target_std") if data.meta.get("target_standardized") else None
    shift = data.meta.get("target_mean") if scale is not None else None

    def metric(outputs: Tensor, targets: Tensor) -> dict[str, Any]:
        out = regression_metrics(outputs, targets, scale, shift)
        out["loss"] = float(loss(outputs.double(), targets.double()))  # the training loss, in training units
        return out
    return loss, metric


def resolve(kind: str, options: Mapping[str, Any], data: TargetInfo, default_loss: LossFn) -> ResolvedTask:
    """The loss and evaluation of a ``kind`` task on ``data``; ``default_loss`` is the task's own loss for
    classification and per-token tasks (kept as is when no class weights are asked for)."""
    opts = check_options(kind, options)
    if kind in ("classification", "token", "binary"):
        loss, metric = _classification(kind, opts, data, default_loss)
    elif kind == "multilabel":
        loss, metric = _multilabel(opts, data)
    elif kind == "regression":
        loss, metric = _regression(opts, data)
    else:
        raise ConfigError(f"unknown task kind {kind!r}; kinds: {sorted(KINDS)}")
    return ResolvedTask(kind, loss, metric, KINDS[kind].metrics, opts)
