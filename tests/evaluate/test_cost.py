"""Tests of tricklab.evaluate.cost.

References: sum of ``p.numel()`` over distinct parameters (closed form), the file written by
``safetensors.torch.save_file`` (size and round-trip), and hand-made training histories.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tricklab.evaluate import (
    Stopwatch,
    convergence_speed,
    count_parameters,
    inference_latency,
    model_size_bytes,
)


class TiedLM(nn.Module):
    """Embedding 10x4 whose weight is tied to the output projection (4 -> 10, with bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.hidden = nn.Linear(4, 4)
        self.out = nn.Linear(4, 10)
        self.out.weight = self.emb.weight  # tied: one Parameter under two names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.emb(x))))


def test_count_parameters_counts_tied_weight_once() -> None:
    model = TiedLM()
    # emb/out weight 40 (once) + hidden 16 + 4 + out bias 10 = 70.
    expected = 10 * 4 + (4 * 4 + 4) + 10
    assert count_parameters(model) == expected
    distinct = {id(p): p for _, p in model.named_parameters(remove_duplicate=False)}
    assert count_parameters(model) == sum(p.numel() for p in distinct.values())
    # Naively summing over every registered name double-counts the tied weight.
    assert sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False)) == expected + 40


def test_count_parameters_trainable_only_and_buffers() -> None:
    model = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    model[0].requires_grad_(False)
    # Linear(3,5)=20, BatchNorm affine=10 (running stats are buffers, not counted), Linear(5,2)=12.
    assert count_parameters(model) == 20 + 10 + 12
    assert count_parameters(model, trainable_only=True) == 10 + 12


def test_count_parameters_lazy_module_raises() -> None:
    with pytest.raises(ValueError, match="forward pass"):
        count_parameters(nn.LazyLinear(3))


def test_model_size_bytes_fp32_and_file_round_trip(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.Linear(64, 8))
    size = model_size_bytes(model)
    sd = model.state_dict()
    numel = sum(t.numel() for t in sd.values() if t.dtype == torch.float32)
    assert size >= 4 * numel
    # Beyond the fp32 data there is only BatchNorm's int64 num_batches_tracked (8 bytes) and a small
    # JSON header (a few hundred bytes for 11 keys).
    assert size - 4 * numel - 8 < 2048
    # Same size as the file safetensors writes, and the file loads back to the same tensors.
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    assert os.path.getsize(path) == size
    loaded = load_file(str(path))
    assert loaded.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(loaded[k], v)


def test_model_size_bytes_handles_shared_storage_and_dtype() -> None:
    model = TiedLM()  # safetensors refuses shared tensors unless they are cloned
    size = model_size_bytes(model)
    # state_dict lists the tied weight under both names, so it is stored twice.
    assert size >= 4 * (40 + 40 + 16 + 4 + 10)
    half = TiedLM().half()
    assert model_size_bytes(half) < size
    assert model_size_bytes(half) >= 2 * (40 + 40 + 16 + 4 + 10)


def test_inference_latency_positive_and_restores_modes() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.5), nn.Linear(32, 4))
    model.train()
    model[1].eval()  # a submodule deliberately left in eval mode must stay so
    example = torch.randn(8, 16)
    out = inference_latency(model, example, repeats=7, warmup=2)
    assert set(out) == {"median_ms", "p90_ms", "mean_ms", "repeats", "batch_size"}
    assert out["median_ms"] > 0 and out["p90_ms"] > 0 and out["mean_ms"] > 0
    assert out["p90_ms"] >= out["median_ms"]
    assert out["repeats"] == 7 and out["batch_size"] == 8
    assert model.training and model[0].training and not model[1].training

    model.eval()
    inference_latency(model, example, repeats=2, warmup=0)
    assert not model.training


def test_inference_latency_measures_sleep() -> None:
    # A forward that sleeps 2 ms must time at >= 2 ms per call.
    class Sleepy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            time.sleep(0.002)
            return x

    out = inference_latency(Sleepy(), torch.zeros(3, 1), repeats=5, warmup=1)
    assert out["median_ms"] >= 2.0 and out["mean_ms"] >= 2.0


def test_inference_latency_runs_without_grad_and_validates() -> None:
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_inference_mode_enabled() and not self.training)
            return x

    inference_latency(Probe(), torch.zeros(2), repeats=3, warmup=1)
    assert seen == [True] * 4
    with pytest.raises(ValueError, match="repeats"):
        inference_latency(Probe(), torch.zeros(2), repeats=0)


def test_stopwatch_accumulates() -> None:
    sw = Stopwatch()
    assert sw.elapsed == 0.0 and not sw.running
    with sw:
        time.sleep(0.01)
    first = sw.elapsed
    assert first >= 0.01
    time.sleep(0.01)  # not timed
    assert sw.elapsed == first
    sw.start()
    assert sw.running
    time.sleep(0.01)
    interval = sw.stop()
    assert interval >= 0.01
    assert sw.elapsed == pytest.approx(first + interval)
    assert sw.elapsed < first + interval + 0.005
    with pytest.raises(RuntimeError):
        sw.stop()
    sw.start()
    with pytest.raises(RuntimeError):
        sw.start()
    sw.reset()
    assert sw.elapsed == 0.0 and not sw.running


HISTORY = [
    {"step": 0, "seconds": 0.0, "loss": 2.3},
    {"step": 100, "seconds": 1.5, "loss": 1.2, "val_acc": 0.50},
    {"step": 150, "seconds": 2.0, "loss": 0.9},  # a training row without the eval metric
    {"step": 200, "seconds": 3.0, "loss": 0.7, "val_acc": 0.80},
    {"step": 300, "seconds": 4.5, "loss": 0.4, "val_acc": 0.92},
    {"step": 400, "seconds": 6.0, "loss": 0.5, "val_acc": 0.90},
]


def test_convergence_speed_hand_made_history() -> None:
    assert convergence_speed(HISTORY, "val_acc", 0.8) == {"step": 200, "seconds": 3.0, "value": 0.8}
    assert convergence_speed(HISTORY, "val_acc", 0.85) == {"step": 300, "seconds": 4.5, "value": 0.92}
    assert convergence_speed(HISTORY, "val_acc", 0.95) is None
    # Lower is better for a loss: first row with loss <= 1.0 is step 150.
    assert convergence_speed(HISTORY, "loss", 1.0, higher_is_better=False) == {
        "step": 150,
        "seconds": 2.0,
        "value": 0.9,
    }
    assert convergence_speed(HISTORY, "loss", 0.1, higher_is_better=False) is None
    assert convergence_speed([], "val_acc", 0.5) is None


def test_convergence_speed_errors() -> None:
    with pytest.raises(ValueError, match="no row of history has metric 'val_accuracy'"):
        convergence_speed(HISTORY, "val_accuracy", 0.5)
    with pytest.raises(ValueError, match="lacks key"):
        convergence_speed([{"step": 1, "acc": 0.9}], "acc", 0.5)
