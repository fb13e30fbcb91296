"""What compression changes, as declared metrics the lab can add to any run (issue 17, item 6): size on disk,
non-zero parameters, sparsity of the prunable weights and latency at batch 1 and 64.

Latency is measured with ``tricklab.evaluate.cost.inference_latency`` (median of timed forward calls); on a
machine shared with other work it is shown, never judged (``verdict=False``).
"""

from __future__ import annotations

import torch
from torch import nn

from tricklab.compress.pruning import PRUNABLE
from tricklab.compress.quantize import Int8Layer
from tricklab.evaluate.cost import inference_latency, model_size_bytes
from tricklab.evaluate.declared import MetricSpec

__all__ = ["COMPRESSION_METRICS", "compression_metrics", "nonzero_parameters", "weight_sparsity"]

COMPRESSION_METRICS: list[MetricSpec] = [
    MetricSpec("model_bytes", "model size (safetensors bytes)", False, unit="B", fmt=".0f"),
    MetricSpec("nonzero_params", "non-zero parameters", False, fmt=".0f"),
    MetricSpec("weight_sparsity", "fraction of zero weights in linear/conv layers", True, verdict=False, fmt=".3f"),
    MetricSpec("latency_ms_b1", "inference latency, batch 1", False, unit="ms", verdict=False, fmt=".3f"),
    MetricSpec("latency_ms_b64", "inference latency, batch 64", False, unit="ms", verdict=False, fmt=".3f"),
]


def nonzero_parameters(model: nn.Module) -> int:
    """How many entries of ``model``'s parameters are not exactly zero (each shared parameter counted once)."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def weight_sparsity(model: nn.Module) -> float:
    """The fraction of exactly-zero entries among the weights of ``model``'s linear and convolution layers (the
    prunable weights, or the int8 weights of converted layers; biases and normalisation parameters are not
    counted); 0.0 when it has no such layer."""
    weights = {}
    for m in model.modules():
        w = m.weight_q if isinstance(m, Int8Layer) else getattr(m, "weight", None) if isinstance(m, PRUNABLE) else None
        if isinstance(w, torch.Tensor):  # (an Int8Layer keeps a parameterless copy of its layer's configuration)
            weights[id(w)] = w  # a shared weight counted once
    total = sum(w.numel() for w in weights.values())
    zeros = sum(w.numel() - int(torch.count_nonzero(w.detach())) for w in weights.values())
    return zeros / total if total else 0.0


def compression_metrics(model: nn.Module, example: torch.Tensor, repeats: int = 20) -> dict[str, float]:
    """The values of :data:`COMPRESSION_METRICS` for ``model``; ``example`` is one input batch (its first example
    is repeated to batch 1 and 64 for the latencies)."""
    one = example[:1]
    return {
        "model_bytes": float(model_size_bytes(model)),
        "nonzero_params": float(nonzero_parameters(model)),
        "weight_sparsity": weight_sparsity(model),
        "latency_ms_b1": inference_latency(model, one, repeats=repeats)["median_ms"],
        "latency_ms_b64": inference_latency(model, one.expand(64, *one.shape[1:]).contiguous(),
                                            repeats=repeats)["median_ms"],
    }
