"""Tests for the Mamba paper's synthetic tasks (tricklab.data.datasets.synthetic_seq).

Reference: a slow per-sequence Python construction of the answer from the inputs, following the task
definitions of Gu & Dao 2023, §4.1.1 (selective copying: the data tokens in region order, one per marker) and
§4.1.2 (induction heads: the token that followed the first trigger). Uniformity of the random draws is checked
against the binomial closed form. Integer data: no gradients.
"""

from __future__ import annotations

import math

import pytest
import torch

from tricklab.data import load_dataset
from tricklab.data.datasets import synthetic_seq as ss


def slow_selective_copy_targets(x: list[int], seq_len: int, num_tokens: int, vocab_size: int) -> list[int]:
    region, tail = x[:seq_len], x[seq_len:]
    assert tail == [vocab_size + 1] * num_tokens  # markers
    data = [t for t in region if t != 0]
    assert len(data) == num_tokens and all(1 <= t <= vocab_size for t in data)
    return [-100] * seq_len + data


def test_selective_copying_targets_match_slow_construction() -> None:
    ds = load_dataset("selective-copying", seq_len=24, num_tokens=5, vocab_size=6, num_train=300, num_test=50)
    assert ds.input_shape == (29,) and ds.num_classes == 8
    assert ds.meta["marker_id"] == 7 and len(ds.meta["vocab"]) == 8
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
            assert row_y == slow_selective_copy_targets(row_x, 24, 5, 6)


def test_selective_copying_positions_and_tokens_are_uniform() -> None:
    """Each region position holds data with probability K/L; each data value has probability 1/V."""
    n, seq_len, k, v = 4000, 16, 4, 8
    x, _ = ss.selective_copying(n, seq_len, k, v, torch.Generator().manual_seed(0))
    occ = (x[:, :seq_len] != 0).float().mean(0)
    p = k / seq_len
    assert (occ - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)
    vals = x[:, :seq_len][x[:, :seq_len] != 0]
    freq = torch.bincount(vals, minlength=v + 1)[1:].float() / vals.numel()
    assert (freq - 1 / v).abs().max() < 5 * math.sqrt((1 / v) * (1 - 1 / v) / vals.numel())


def test_selective_copying_is_seeded_and_train_test_differ() -> None:
    a = load_dataset("selective-copying", num_train=64, num_test=64, seed=1)
    b = load_dataset("selective-copying", num_train=64, num_test=64, seed=1)
    c = load_dataset("selective-copying", num_train=64, num_test=64, seed=2)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert not torch.equal(a.x_train, a.x_test)
    with pytest.raises(ValueError, match="do not fit"):
        ss.selective_copying(4, 3, 5, 4)
    with pytest.raises(ValueError, match="positive int"):
        load_dataset("selective-copying", num_train=0)


def slow_induction_target(x: list[int], trigger: int) -> int:
    idx = [i for i, t in enumerate(x) if t == trigger]
    assert len(idx) == 2 and idx[1] == len(x) - 1 and idx[0] + 1 < len(x) - 1
    return x[idx[0] + 1]


def test_induction_heads_targets_match_slow_construction() -> None:
    ds = load_dataset("induction-heads", seq_len=20, vocab_size=5, num_train=300, num_test=40,
                      test_seq_lens=(32, 48))
    assert ds.num_classes == 6 and ds.meta["trigger_id"] == 5 and ds.input_shape == (20,)
    sets = [(ds.x_train, ds.y_train), (ds.x_test, ds.y_test)]
    extra = ds.meta["extra_tests"]
    assert set(extra) == {"len32", "len48"}
    for name, length in (("len32", 32), ("len48", 48)):
        x, y = extra[name]
        assert x.shape == y.shape == (40, length) and x.dtype == y.dtype == torch.int64
        sets.append((x, y))
    for x, y in sets:
        for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
            assert row_y[:-1] == [-100] * (len(row_x) - 1)
            assert row_y[-1] == slow_induction_target(row_x, 5)


def test_induction_trigger_position_is_uniform() -> None:
    """The first trigger is uniform over the seq_len - 2 allowed positions [0, seq_len - 3]."""
    n, seq_len = 6000, 10
    x, _ = ss.induction_heads(n, seq_len, 4, torch.Generator().manual_seed(0))
    first = (x == 4).int().argmax(1)
    freq = torch.bincount(first, minlength=seq_len).float() / n
    p = 1 / (seq_len - 2)
    assert freq[seq_len - 2:].sum() == 0
    assert (freq[: seq_len - 2] - p).abs().max() < 5 * math.sqrt(p * (1 - p) / n)
    with pytest.raises(ValueError, match="seq_len"):
        ss.induction_heads(2, 3, 4)
