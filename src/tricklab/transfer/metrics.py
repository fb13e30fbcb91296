"""Declared metrics of :func:`tricklab.transfer.run_transfer.run_transfer` (one MetricSpec per reported number)."""

from __future__ import annotations

from tricklab.evaluate.declared import MetricSpec

__all__ = ["TRANSFER_METRICS"]

_METHODS = ("scratch", "linear_probe", "finetune", "gradual_unfreezing", "adapters", "lora")

TRANSFER_METRICS: list[MetricSpec] = [
    *[MetricSpec(f"{m}_acc", f"{m.replace('_', ' ')}: 5-way test accuracy on the target classes", True)
      for m in _METHODS],
    *[MetricSpec(f"{m}_trained_params", f"{m.replace('_', ' ')}: trained parameters", False, verdict=False,
                 fmt=".0f") for m in _METHODS],
    MetricSpec("source_acc", "pretrained backbone: accuracy on the source classes", True, verdict=False),
    MetricSpec("seconds", "total time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]
