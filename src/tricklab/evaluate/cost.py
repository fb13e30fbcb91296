"""Cost of a model: parameter count, serialised size, inference latency, training time, convergence speed."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from tricklab.errors import UserError

__all__ = ["count_parameters", "model_size_bytes", "inference_latency", "Stopwatch", "convergence_speed"]


def _check_module(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UserError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters, ``sum(p.numel())``, each shared (tied) parameter counted once.

    ``nn.Module.parameters()`` already yields a parameter registered under several names (e.g. tied
    input/output embeddings) only once; we additionally de-duplicate by identity for safety.
    Buffers (e.g. BatchNorm running statistics) are not parameters and are not counted.

    Args:
        model: the module.
        trainable_only: count only parameters with ``requires_grad=True``.
    """
    _check_module(model)
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise UserError("model has uninitialised (lazy) parameters: run one forward pass before counting them")
        total += p.numel()
    return total


def model_size_bytes(model: nn.Module) -> int:
    """Size in bytes of ``model.state_dict()`` serialised with safetensors (header + raw tensor data).

    This is the on-disk size of ``safetensors.torch.save_file(state_dict)``: parameters and buffers in
    their own dtypes (about 4 bytes per fp32 element) plus a small JSON header. Tensors are copied to
    contiguous CPU clones first, because safetensors refuses tensors that share storage (tied weights
    appear under two keys of the state dict and are therefore stored twice, as in the file).
    Non-tensor entries (``get_extra_state``) are not tensors and are skipped.
    """
    from safetensors.torch import save  # imported lazily: only this function needs it

    _check_module(model)
    tensors = {
        name: t.detach().to("cpu").contiguous().clone()
        for name, t in model.state_dict().items()
        if isinstance(t, Tensor)
    }
    return len(save(tensors))


def _sync(device: torch.device) -> None:
    # CUDA kernels run asynchronously; without a synchronize the timer would only measure launch time.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def inference_latency(model: nn.Module, example: Tensor, repeats: int = 30, warmup: int = 5) -> dict:
    """Wall-clock latency of one forward pass ``model(example)`` in eval mode under ``torch.inference_mode``.

    Runs ``warmup`` untimed calls (allocator, cuDNN autotuning and lazy initialisation happen there),
    then ``repeats`` calls each timed with ``time.perf_counter`` (synchronising CUDA before and after).
    The median is the robust summary; p90 is the 90th percentile with linear interpolation
    (``numpy.percentile`` default). The train/eval flag of every submodule is restored afterwards.
    ``example`` must already be on the model's device.

    Returns:
        ``{"median_ms", "p90_ms", "mean_ms"}`` (floats, milliseconds per call), ``"repeats"`` and
        ``"batch_size"`` (``example.shape[0]``, or 1 for a 0-d example; for a Graph its number of graphs when
        batched, else its number of nodes).
    """
    _check_module(model)
    is_graph = hasattr(example, "edge_index") and hasattr(example, "x")  # a tricklab Graph (node or batched)
    if not isinstance(example, Tensor) and not is_graph:
        raise UserError(f"example must be a torch.Tensor (one input batch) or a Graph, got {type(example).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise UserError(f"repeats must be an int >= 1, got {repeats!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UserError(f"warmup must be an int >= 0, got {warmup!r}")

    # Remember each submodule's flag: model.train(True) afterwards would wrongly re-enable submodules
    # that were deliberately frozen in eval mode (e.g. a frozen BatchNorm backbone).
    modes = {m: m.training for m in model.modules()}
    device = example.device
    times: list[float] = []
    try:
        model.eval()
        with torch.inference_mode():
            for _ in range(warmup):
                model(example)
            _sync(device)
            for _ in range(repeats):
                _sync(device)
                t0 = time.perf_counter()
                model(example)
                _sync(device)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        for m, training in modes.items():
            m.training = training

    ordered = sorted(times)
    # p90 by linear interpolation between order statistics: position 0.9 * (n - 1).
    pos = 0.9 * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    p90 = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return {
        "median_ms": float(statistics.median(times)),
        "p90_ms": float(p90),
        "mean_ms": float(statistics.fmean(times)),
        "repeats": repeats,
        "batch_size": (int(example.num_graphs) if getattr(example, "batch", None) is not None else example.num_nodes)
        if is_graph else (int(example.shape[0]) if example.dim() > 0 else 1),
    }


class Stopwatch:
    """Accumulating wall-clock timer (``time.perf_counter``), e.g. for training time excluding evaluation.

    Use as a context manager (``with sw: train_epoch()``) or with ``start()``/``stop()``; each timed
    interval is added to :attr:`elapsed`, so a single stopwatch can time the training parts of a loop
    while skipping the evaluation parts. It measures host time: call ``torch.cuda.synchronize()``
    before stopping if GPU work must be included.
    """

    def __init__(self) -> None:
        self._total = 0.0
        self._started: float | None = None

    @property
    def running(self) -> bool:
        """Whether an interval is currently being timed."""
        return self._started is not None

    @property
    def elapsed(self) -> float:
        """Total seconds over all finished intervals plus the current one if running."""
        if self._started is not None:
            return self._total + (time.perf_counter() - self._started)
        return self._total

    def start(self) -> Stopwatch:
        """Start a new interval; raises ``RuntimeError`` if already running."""
        if self._started is not None:
            raise RuntimeError("Stopwatch.start() called while it is already running; call stop() first")
        self._started = time.perf_counter()
        return self

    def stop(self) -> float:
        """Stop the current interval, add it to :attr:`elapsed` and return its length in seconds."""
        if self._started is None:
            raise RuntimeError("Stopwatch.stop() called while it is not running; call start() first")
        interval = time.perf_counter() - self._started
        self._total += interval
        self._started = None
        return interval

    def reset(self) -> None:
        """Set :attr:`elapsed` back to 0 and stop timing."""
        self._total = 0.0
        self._started = None

    def __enter__(self) -> Stopwatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Stopwatch(elapsed={self.elapsed:.3f}s, running={self.running})"


def convergence_speed(
    history: Sequence[Mapping[str, float]],
    metric: str,
    threshold: float,
    higher_is_better: bool = True,
) -> dict | None:
    """When training first reached ``threshold`` on ``metric``: the step and wall-clock seconds.

    Scans ``history`` in order and returns the first row with ``row[metric] >= threshold``
    (``<=`` when ``higher_is_better=False``, e.g. for a loss). Rows without the metric (or with a
    None/NaN value), such as training rows between evaluations, are skipped.

    Args:
        history: rows with keys ``"step"``, ``"seconds"`` (elapsed training time) and ``metric``.
        metric: key of the metric to watch, e.g. ``"val_accuracy"``.
        threshold: target value.
        higher_is_better: direction of improvement.

    Returns:
        ``{"step", "seconds", "value"}`` of the first row reaching the threshold, or None if none does
        (including an empty history).

    Raises:
        ValueError: if the history is not empty but no row has ``metric`` (likely a misspelt name),
            or the reaching row lacks ``"step"``/``"seconds"``.
    """
    if isinstance(history, (str, bytes)) or not isinstance(history, Sequence):
        raise UserError(f"history must be a sequence of mappings (rows), got {type(history).__name__}")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or math.isnan(threshold):
        raise UserError(f"threshold must be a number, got {threshold!r}")
    seen_metric = False
    keys: set[str] = set()
    for i, row in enumerate(history):
        if not isinstance(row, Mapping):
            raise UserError(f"history[{i}] must be a mapping, got {type(row).__name__}")
        keys.update(row.keys())
        value = row.get(metric)
        if value is None:
            continue
        seen_metric = True
        value = float(value)
        if math.isnan(value):
            continue
        reached = value >= threshold if higher_is_better else value <= threshold
        if reached:
            missing = [k for k in ("step", "seconds") if k not in row]
            if missing:
                raise UserError(f"history[{i}] reaches the threshold but lacks key(s) {missing}; "
                                "rows need 'step' and 'seconds'")
            step = row["step"]
            return {
                "step": int(step) if float(step).is_integer() else float(step),
                "seconds": float(row["seconds"]),
                "value": value,
            }
    if history and not seen_metric:
        raise UserError(f"no row of history has metric {metric!r}; keys present: {sorted(keys)}")
    return None
