"""Compression metrics (tricklab.compress.metrics). References: counts by hand of a model with known zeros, and
tricklab.evaluate.cost.model_size_bytes for the size."""

from __future__ import annotations

import torch
from torch import nn

from tricklab.compress.metrics import COMPRESSION_METRICS, compression_metrics
from tricklab.compress.pruning import magnitude_prune_, remove_masks_
from tricklab.evaluate.cost import model_size_bytes


def test_metrics_count_the_pruned_weights_and_declare_every_key() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 4))
    magnitude_prune_(model, 0.75)
    remove_masks_(model)
    m = compression_metrics(model, torch.randn(3, 10), repeats=2)
    assert set(m) == {s.key for s in COMPRESSION_METRICS}
    assert m["weight_sparsity"] == round(0.75 * 280) / 280
    assert m["nonzero_params"] == 280 - round(0.75 * 280) + 24  # kept weights + the (dense) biases
    assert m["model_bytes"] == model_size_bytes(model)
    assert m["latency_ms_b1"] > 0 and m["latency_ms_b64"] > 0
