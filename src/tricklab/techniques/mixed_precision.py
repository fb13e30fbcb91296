"""Mixed precision: autocast the forward pass; on CUDA fp16, dynamic loss scaling.

bf16 has fp32's exponent range, so gradients do not underflow and no scaling is needed (the default on CPU).
fp16 gradients underflow below ~6e-8, so the loss is multiplied by a scale S before backward
(Micikevicius et al. 2018, "Mixed Precision Training"): the trainer divides the gradients by S before
``after_backward``; if any is inf/nan the step is skipped and S is halved, and after ``growth_interval``
finite steps in a row S is doubled (the schedule of torch.amp.GradScaler).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def grads_are_finite(grads: Iterable[torch.Tensor]) -> bool:
    """True when every gradient is finite (one host sync for all tensors)."""
    grads = [g for g in grads if g is not None]
    if not grads:
        return True
    # the max-abs (inf) norm: a non-finite entry makes it non-finite, and unlike the 2-norm it cannot
    # overflow for large finite entries (fp16 grads of ~300 in 1e6 entries would give an inf 2-norm)
    norms = torch._foreach_norm(grads, float("inf"))
    return bool(torch.isfinite(torch.stack([n.float() for n in norms])).all())


def update_scale(scale: float, tracker: int, finite: bool, growth_factor: float, backoff_factor: float,
                 growth_interval: int) -> tuple[float, int]:
    """One step of the dynamic loss-scale schedule: returns (new scale, new growth tracker)."""
    if not finite:
        return scale * backoff_factor, 0
    tracker += 1
    if tracker >= growth_interval:
        return scale * growth_factor, 0
    return scale, tracker


@register_technique
class MixedPrecision(Technique):
    """Autocast the forward pass (bf16 on CPU; fp16 with loss scaling on CUDA)."""

    name: ClassVar[str] = "mixed_precision"
    # checks the raw gradients (before any technique changes them), owns the loss scale, skips overflowing steps
    reads = frozenset({"grads.raw"})
    writes = frozenset({"loss_scale", "skip_step"})

    def __init__(self, dtype: str = "auto", init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000) -> None:
        if dtype != "auto" and dtype not in _DTYPES:
            raise ValueError(f"mixed_precision dtype must be 'auto', 'bfloat16' or 'float16', got {dtype!r}")
        self.dtype_name = dtype
        self.init_scale = float(init_scale)
        self.growth_factor = float(growth_factor)
        self.backoff_factor = float(backoff_factor)
        self.growth_interval = int(growth_interval)
        self.scale = float(init_scale)
        self.tracker = 0
        self.skipped = 0
        self.scaling = False
        self.device_type = "cpu"
        self.dtype = torch.bfloat16

    def on_fit_start(self, state: TrainState) -> None:
        self.device_type = state.device.type
        if self.dtype_name == "auto":
            self.dtype = torch.float16 if self.device_type == "cuda" else torch.bfloat16
        else:
            self.dtype = _DTYPES[self.dtype_name]
        if self.dtype == torch.float16 and self.device_type == "cpu":
            raise ValueError("float16 autocast is for CUDA; on the CPU use dtype='bfloat16' (or 'auto')")
        self.scaling = self.dtype == torch.float16
        state.grad_scale = self.scale if self.scaling else 1.0

    def on_forward(self, state: TrainState) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def on_after_backward(self, state: TrainState) -> None:
        if not self.scaling:
            return
        finite = grads_are_finite(state.grads())
        if not finite:
            state.skip_step = True  # an overflow at this scale is expected, not an error: retry smaller
            self.skipped += 1
        self.scale, self.tracker = update_scale(self.scale, self.tracker, finite, self.growth_factor,
                                                self.backoff_factor, self.growth_interval)
        state.grad_scale = self.scale

    def on_checkpoint_load(self, state: TrainState) -> None:
        state.grad_scale = self.scale if self.scaling else 1.0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "tracker": self.tracker, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.tracker, self.skipped = float(state["scale"]), int(state["tracker"]), int(state["skipped"])
