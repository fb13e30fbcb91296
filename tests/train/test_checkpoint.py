"""Checkpoint files: lossless round trip of nested state, atomic writes, checksums, fallback, retention."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from tricklab.errors import CheckpointError
from tricklab.train.checkpoint import (
    flatten_state,
    list_checkpoints,
    load_checkpoint,
    load_latest,
    save_checkpoint,
    unflatten_state,
)
from tricklab.train.reproducibility import get_rng_state, set_rng_state


def _nested() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": get_rng_state(),
            "tuple": (1, 2.5, "x", None), "nan": float("nan"), "inf": float("inf"),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "int_keys": {0: "a", 3: [1, 2]}, "dtype": torch.float32}


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and a != a:
        return isinstance(b, float) and b != b
    return a == b


def test_flatten_round_trip_is_lossless() -> None:
    # reference: the original nested object (tensors compared with torch.equal, dtypes included)
    state = _nested()
    skeleton, tensors = flatten_state(state)
    json.dumps(skeleton)  # the skeleton is plain JSON
    assert _equal(state, unflatten_state(json.loads(json.dumps(skeleton)), tensors))


def test_save_load_round_trip(tmp_path) -> None:
    state = _nested()
    path = save_checkpoint(tmp_path, 7, state)
    assert path.name == "step-00000007.json" and path.with_suffix(".safetensors").exists()
    assert _equal(state, load_checkpoint(path))
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000007.json", "step-00000007.safetensors"]


def test_rng_state_round_trip_reproduces_draws(tmp_path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_checkpoint(tmp_path, 1, {"rng": get_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "step-00000001.json")["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_keep_last(tmp_path) -> None:
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"x": torch.tensor([step])}, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004.json", "step-00000005.json"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


@pytest.mark.parametrize("which", ["tensors", "json"])
def test_corrupt_byte_is_refused_and_previous_is_used(tmp_path, which: str) -> None:
    save_checkpoint(tmp_path, 1, {"w": torch.arange(10.0)})
    newest = save_checkpoint(tmp_path, 2, {"w": torch.arange(10.0) * 2})
    target = newest.with_suffix(".safetensors") if which == "tensors" else newest
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # flip one bit in the middle
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum|unreadable"):
        load_checkpoint(newest)
    warnings: list[str] = []
    used, state = load_latest(tmp_path, warn=warnings.append)
    assert used.name == "step-00000001.json"
    assert torch.equal(state["w"], torch.arange(10.0))
    assert warnings and "step-00000002" in warnings[0]


def test_truncated_tensor_file_is_refused(tmp_path) -> None:
    path = save_checkpoint(tmp_path, 3, {"w": torch.randn(100)})
    tensor_file = path.with_suffix(".safetensors")
    tensor_file.write_bytes(tensor_file.read_bytes()[:50])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert load_latest(tmp_path, warn=lambda m: None) is None


def test_unsupported_value_type_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="cannot checkpoint a value of type object"):
        flatten_state({"x": object()})
