"""Training diagnostics: activation statistics, dead units and gradient/weight norms, every N steps.

Functional core, usable in any loop:

* :func:`activation_stats` - mean, std and a fixed-bin histogram (range from the data) of a tensor;
* :func:`dead_fraction` - the fraction of units (features / channels, dim 1) that are <= 0 for every example
  and position of the batch: a ReLU unit that never fires gets no gradient and stays dead;
* :func:`grad_stats` - per parameter: ||g||_2, ||w||_2 and ||g|| / ||w||;
* :func:`gradient_flag` - "vanishing" / "exploding" / "ok" from the ratio of the first to the last layer's
  gradient norm (Glorot & Bengio 2010; Pascanu, Mikolov & Bengio 2013).

The :class:`Diagnostics` technique records these on steps 0, every, 2*every, ... Forward hooks on the leaf
Linear / Conv / activation modules are installed at that step's first ``batch_start`` and removed after its
``after_backward`` (so other steps pay nothing); all statistics of a step are gathered on the device and
copied to the host once.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from tricklab.layers.activations import Swish
from tricklab.layers.init import is_weight_layer
from tricklab.techniques.registry import register_technique
from tricklab.train.checkpoint import atomic_write_text
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["ACTIVATION_TYPES", "RELU_FAMILY", "Diagnostics", "activation_stats", "dead_fraction", "grad_stats",
           "gradient_flag"]

#: Activations whose negative side is flat or saturating: a unit stuck there for the whole batch is "dead".
RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU)
#: Modules recorded as activations (besides Linear / Conv layers).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (*RELU_FAMILY, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid,
                                                 nn.Softplus, nn.Hardswish, nn.Hardtanh, nn.LogSigmoid, Swish)


# ------------------------------------------------------------------------------------------ functional core
def _stats_tensor(t: Tensor, bins: int) -> Tensor:
    """[mean, std, lo, hi, count_0 .. count_{bins-1}] of the finite entries of ``t``, on t's device, no sync.

    Histogram: ``bins`` equal bins over [lo, hi] = [min, max] (numpy.histogram's rule: the last bin is closed,
    so the maximum lands in it). A constant tensor gets the range [v - 0.5, v + 0.5].
    """
    x = t.detach().reshape(-1).float()
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        nan = torch.full((4,), float("nan"), device=t.device)
        return torch.cat([nan, torch.zeros(bins, device=t.device)])
    std, mean = torch.std_mean(x, correction=0)
    lo, hi = x.min(), x.max()
    flat = hi <= lo
    lo = torch.where(flat, lo - 0.5, lo)
    hi = torch.where(flat, hi + 0.5, hi)
    # bin index floor((x - lo) / (hi - lo) * bins), clamped so x == hi falls in the last bin
    idx = ((x - lo) * (bins / (hi - lo))).floor().clamp_(0, bins - 1).long()
    counts = torch.bincount(idx, minlength=bins).float()
    return torch.cat([torch.stack([mean, std, lo, hi]), counts])


def activation_stats(t: Tensor, bins: int = 20) -> dict[str, Any]:
    """Mean, population std and a ``bins``-bin histogram of the finite values of ``t`` (detached).

    Returns ``{"mean": float, "std": float, "hist_range": [lo, hi], "hist_counts": [int] * bins}``; the bins are
    ``bins`` equal intervals of [lo, hi] = [min(t), max(t)], the last one closed (as ``numpy.histogram``).
    """
    if not isinstance(t, Tensor):
        raise TypeError(f"activation_stats expects a torch.Tensor, got {type(t).__name__}")
    _check_bins(bins)
    v = _stats_tensor(t, bins).tolist()
    return {"mean": v[0], "std": v[1], "hist_range": [v[2], v[3]], "hist_counts": [int(c) for c in v[4:]]}


def _dead_tensor(t: Tensor, unit_dim: int = 1) -> Tensor:
    x = t.detach()
    if x.dim() < 2:
        raise ValueError(f"dead_fraction needs a batch (B, units, ...), got shape {tuple(x.shape)}")
    # a unit is dead when its maximum over the batch and every other position is <= 0
    per_unit = x.movedim(unit_dim, 0).reshape(x.shape[unit_dim], -1).amax(dim=1)
    return (per_unit <= 0).float().mean()


def dead_fraction(t: Tensor, unit_dim: int = 1) -> float:
    """Fraction of units (indices of ``unit_dim``: features of (B, F), channels of (B, C, *spatial)) whose
    value is <= 0 for every example and every position of the batch."""
    if not isinstance(t, Tensor):
        raise TypeError(f"dead_fraction expects a torch.Tensor, got {type(t).__name__}")
    return float(_dead_tensor(t, unit_dim))


def _grad_tensors(model: nn.Module) -> tuple[list[str], Tensor, Tensor]:
    named = [(n, p) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return [], torch.zeros(0), torch.zeros(0)
    # one fused norm kernel per list; float32 norms so half-precision weights do not overflow
    g = torch.stack([torch.linalg.vector_norm(p.grad.detach().float()) for _, p in named])
    w = torch.stack([torch.linalg.vector_norm(p.detach().float()) for _, p in named])
    return [n for n, _ in named], g, w


def _ratio(g: float, w: float) -> float | None:
    return g / w if w > 0 else None  # None (JSON null), not inf: a zero-initialised bias has no scale yet


def grad_stats(model: nn.Module) -> dict[str, dict[str, float | None]]:
    """Per parameter with a gradient: ``{"grad_norm": ||g||_2, "weight_norm": ||w||_2, "ratio": ||g||/||w||}``
    (ratio None when ||w|| = 0). ||g|| / ||w|| times the learning rate is the relative size of an SGD update;
    ~1e-3 is the usual healthy order of magnitude."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"grad_stats expects an nn.Module, got {type(model).__name__}")
    names, g, w = _grad_tensors(model)
    gl, wl = g.tolist(), w.tolist()
    return {n: {"grad_norm": a, "weight_norm": b, "ratio": _ratio(a, b)} for n, a, b in zip(names, gl, wl)}


def gradient_flag(first_norm: float, last_norm: float, vanish_ratio: float = 1e-2,
                  explode_ratio: float = 1e2) -> tuple[str, float | None]:
    """``(status, r)`` with r = ||g_first|| / ||g_last|| (first and last weight layer in forward order).

    r < vanish_ratio: "vanishing" (the signal dies on the way back to the input); r > explode_ratio:
    "exploding"; else "ok". r is None (status "ok") when the last layer's gradient is 0 or not finite.
    """
    if not 0 < vanish_ratio < explode_ratio:
        raise ValueError(f"gradient_flag needs 0 < vanish_ratio < explode_ratio, got {vanish_ratio}, {explode_ratio}")
    if not (math.isfinite(last_norm) and last_norm > 0 and math.isfinite(first_norm)):
        return ("exploding" if not math.isfinite(first_norm) else "ok"), None
    r = first_norm / last_norm
    return ("vanishing" if r < vanish_ratio else "exploding" if r > explode_ratio else "ok"), r


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")


def empty_records(every: int, bins: int) -> dict[str, Any]:
    """The record layout (plain lists and dicts: JSON and checkpoint friendly)."""
    return {
        "every": every,
        "bins": bins,
        "steps": [],  # recording steps, in order
        # name -> {"kind", "steps", "mean", "std", "hist_range", "hist_counts", and "dead_fraction" for ReLU family}
        "layers": {},
        # parameter name -> {"steps", "grad_norm", "weight_norm", "ratio"}
        "params": {},
        # one per recording step: {"step", "status", "first_last_ratio", "first", "last"}
        "gradient_flags": [],
    }


@register_technique
class Diagnostics(Technique):
    """Record activation statistics, dead units and gradient/weight norms every ``every`` steps."""

    name: ClassVar[str] = "diagnostics"
    # observes the gradients backprop produced (grads.recomputed: after a second pass, before any transform or
    # clipping, which would hide an explosion), and the weights as initialised (after LSUV at batch_start)
    reads = frozenset({"params", "grads.recomputed", "accum_steps"})
    main_process_only: ClassVar[bool] = True  # one set of records and one file, from rank 0

    def __init__(self, every: int = 50, bins: int = 20, vanish_ratio: float = 1e-2, explode_ratio: float = 1e2,
                 filename: str = "diagnostics.json") -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"diagnostics every must be a positive int (steps between records), got {every!r}")
        _check_bins(bins)
        if not 0 < vanish_ratio < explode_ratio:
            raise ValueError(f"diagnostics needs 0 < vanish_ratio < explode_ratio, got {vanish_ratio!r}, "
                             f"{explode_ratio!r}")
        self.every, self.bins = every, bins
        self.vanish_ratio, self.explode_ratio = float(vanish_ratio), float(explode_ratio)
        self.filename = filename
        self.records: dict[str, Any] = empty_records(every, bins)
        self._handles: list[Any] = []
        self._pending: dict[str, tuple[str, Tensor, Tensor | None]] = {}  # name -> (kind, stats, dead)

    # ------------------------------------------------------------------------------------------- hooks
    def _install(self, model: nn.Module) -> None:
        self._pending = {}
        for name, m in model.named_modules():
            if next(iter(m.children()), None) is not None:
                continue  # leaves only: a Sequential's output is its last leaf's output
            if not (is_weight_layer(m) or isinstance(m, ACTIVATION_TYPES)):
                continue
            key = name or type(m).__name__
            self._handles.append(m.register_forward_hook(self._make_hook(key, m)))

    def _make_hook(self, key: str, module: nn.Module) -> Any:
        kind = type(module).__name__
        relu_like = isinstance(module, RELU_FAMILY)

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if key in self._pending or not isinstance(out, Tensor):
                return  # first call of the step only (a second SAM pass, a shared module)
            dead = _dead_tensor(out) if relu_like and out.dim() >= 2 else None
            self._pending[key] = (kind, _stats_tensor(out, self.bins), dead)

        return hook

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------------------------------ events
    def _recording(self, state: TrainState) -> bool:
        return state.step % self.every == 0

    def on_batch_start(self, state: TrainState) -> None:
        # first micro-batch of a recording step: the activations of one micro-batch describe the step
        if self._recording(state) and state.micro_step % state.accum_steps == 0 and not self._handles:
            self._install(state.raw_model)

    def on_loss(self, state: TrainState) -> None:
        self._remove()  # forward done: later micro-batches and evaluation run without hooks

    def on_after_backward(self, state: TrainState) -> None:
        self._remove()
        if not self._recording(state):
            self._pending = {}
            return
        step = state.step
        model = state.raw_model
        names, g, w = _grad_tensors(model)
        # one device -> host copy for the whole step
        layer_keys = list(self._pending)
        parts = [g, w] + [self._pending[k][1] for k in layer_keys]
        dead_parts = [self._pending[k][2] for k in layer_keys if self._pending[k][2] is not None]
        device = g.device if names else (parts[2].device if layer_keys else torch.device("cpu"))
        flat = torch.cat([p.to(device).reshape(-1) for p in parts] + [d.to(device).reshape(1) for d in dead_parts])
        values = flat.tolist()
        n = len(names)
        gl, wl, pos = values[:n], values[n:2 * n], 2 * n
        dead_values = values[len(values) - len(dead_parts):] if dead_parts else []
        rec = self.records
        rec["steps"].append(step)
        di = 0
        for k in layer_keys:
            kind, _, dead = self._pending[k]
            v = values[pos:pos + 4 + self.bins]
            pos += 4 + self.bins
            entry = rec["layers"].setdefault(k, {"kind": kind, "steps": [], "mean": [], "std": [], "hist_range": [],
                                                 "hist_counts": []})
            entry["steps"].append(step)
            entry["mean"].append(v[0])
            entry["std"].append(v[1])
            entry["hist_range"].append([v[2], v[3]])
            entry["hist_counts"].append([int(c) for c in v[4:]])
            if dead is not None:
                entry.setdefault("dead_fraction", []).append(dead_values[di])
                di += 1
        for name, a, b in zip(names, gl, wl):
            entry = rec["params"].setdefault(name, {"steps": [], "grad_norm": [], "weight_norm": [], "ratio": []})
            entry["steps"].append(step)
            entry["grad_norm"].append(a)
            entry["weight_norm"].append(b)
            entry["ratio"].append(_ratio(a, b))
        rec["gradient_flags"].append(self._flag(step, layer_keys, model, dict(zip(names, gl))))
        self._pending = {}

    def _flag(self, step: int, forward_order: list[str], model: nn.Module, gnorm: dict[str, float]) -> dict[str, Any]:
        # first / last weight layer in forward order (the hooks' order), falling back to registration order
        weight_layers = {(n or type(m).__name__): n for n, m in model.named_modules() if is_weight_layer(m)}
        order = [weight_layers[k] for k in forward_order if k in weight_layers] or list(weight_layers.values())
        order = [n for n in order if (f"{n}.weight" if n else "weight") in gnorm]
        if len(order) < 2:
            return {"step": step, "status": "ok", "first_last_ratio": None, "first": None, "last": None}
        first, last = order[0], order[-1]
        fk, lk = (f"{first}.weight" if first else "weight"), (f"{last}.weight" if last else "weight")
        status, r = gradient_flag(gnorm[fk], gnorm[lk], self.vanish_ratio, self.explode_ratio)
        return {"step": step, "status": status, "first_last_ratio": r, "first": first, "last": last}

    def on_fit_end(self, state: TrainState) -> None:
        self._remove()
        self._pending = {}
        if state.run_dir is not None:
            text = json.dumps(self.records, indent=1, allow_nan=True)
            atomic_write_text(state.run_dir / self.filename, text)

    # -------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"records": json.loads(json.dumps(self.records))}  # a deep copy of plain lists and dicts

    def load_state_dict(self, state: dict[str, Any]) -> None:
        records = state["records"]
        if not isinstance(records, dict) or "steps" not in records:
            raise ValueError("diagnostics state has no 'records' dict; was it written by this technique?")
        self.records = json.loads(json.dumps(_lists(records)))


def _lists(o: Any) -> Any:
    """Tuples (as a checkpoint may hand back) to lists, so a loaded state equals the saved one."""
    if isinstance(o, dict):
        return {k: _lists(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_lists(v) for v in o]
    return o
