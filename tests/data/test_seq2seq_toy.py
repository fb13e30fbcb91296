"""Tests for the toy seq2seq data sets (tricklab.data.datasets.seq2seq_toy).

Reference: a slow pure-Python construction of every row (read the source digits, reverse or sort them with Python's
``reversed``/``sorted``, build the packed x and the target y list by list).
"""

from __future__ import annotations

import pytest
import torch

from tricklab.data.base import DATASETS
from tricklab.data.datasets.seq2seq_toy import (
    DIGIT_OFFSET,
    EOS_ID,
    IGNORE_INDEX,
    PAD_ID,
    SEP_ID,
    VOCAB,
    load_seq_reverse,
    load_seq_sort,
    make_seq2seq_toy,
)


def _python_row(src_digits: list[int], task: str, max_len: int) -> tuple[list[int], list[int]]:
    """The packed layout, built by hand for one source."""
    n = len(src_digits)
    out = list(reversed(src_digits)) if task == "reverse" else sorted(src_digits)
    src = [d + DIGIT_OFFSET for d in src_digits] + [PAD_ID] * (max_len - n)
    tgt = [d + DIGIT_OFFSET for d in out]
    dec_in = [SEP_ID] + tgt + [PAD_ID] * (max_len - n)  # BOS, then the target shifted right
    x = src + dec_in[:max_len + 1]
    y = [IGNORE_INDEX] * max_len + tgt + [EOS_ID] + [IGNORE_INDEX] * (max_len - n)
    return x, y


@pytest.mark.parametrize("task", ["reverse", "sort"])
def test_rows_match_slow_python_construction(task: str) -> None:
    """Reference: _python_row on the source digits read back from x."""
    x, y = make_seq2seq_toy(300, task, 3, 7, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (300, 15) and x.dtype == y.dtype == torch.int64
    lengths = []
    for xr, yr in zip(x.tolist(), y.tolist()):
        src = []
        for tok in xr[:7]:
            if tok == PAD_ID:
                break
            src.append(tok - DIGIT_OFFSET)
        assert all(0 <= d <= 9 for d in src)
        lengths.append(len(src))
        ex, ey = _python_row(src, task, 7)
        assert xr == ex
        assert yr == ey
    assert min(lengths) == 3 and max(lengths) == 7  # both ends of the length range occur


def test_loaders_defaults_registry_and_determinism() -> None:
    """Reference: the documented defaults (8000/1000, lengths 8..12, T = 25, 13 tokens) and seeded determinism."""
    ds = load_seq_reverse()
    assert (ds.num_train, ds.num_test) == (8000, 1000)
    assert ds.input_shape == (25,) and ds.num_classes == len(VOCAB) == 13
    assert ds.meta["vocab"] == list(VOCAB) and ds.meta["src_len"] == 12 and ds.meta["eos_id"] == EOS_ID
    n = (ds.x_train[:, :12] != PAD_ID).sum(1)
    assert int(n.min()) == 8 and int(n.max()) == 12
    assert ((ds.y_train != IGNORE_INDEX).sum(1) == n + 1).all()  # n target tokens and EOS
    again = load_seq_reverse()
    assert torch.equal(again.x_train, ds.x_train) and torch.equal(again.y_test, ds.y_test)
    assert not torch.equal(load_seq_reverse(seed=1).x_train, ds.x_train)
    assert not torch.equal(ds.x_train[:1000], ds.x_test)  # train and test come from one stream, not one seed
    assert DATASETS.get("seq-reverse") is load_seq_reverse and DATASETS.get("seq-sort") is load_seq_sort
    srt = load_seq_sort(num_train=50, num_test=10, min_len=2, max_len=4)
    assert srt.input_shape == (9,) and srt.name == "seq-sort"
    # sorted targets are non-decreasing
    tgt = srt.y_train[:, 4:]
    for row in tgt.tolist():
        digits = [t for t in row if t not in (IGNORE_INDEX, EOS_ID)]
        assert digits == sorted(digits)


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="min_len"):
        make_seq2seq_toy(5, "reverse", 9, 8)
    with pytest.raises(ValueError, match="task"):
        make_seq2seq_toy(5, "shuffle", 2, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_train"):
        load_seq_reverse(num_train=0)
