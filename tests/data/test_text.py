"""Tests for the Shakespeare text data sets (tricklab.data.datasets.text).

References: the raw file read with plain Python (``open().read()``, ``sorted(set(text))``, ``str.find`` and
string slicing) is the oracle for the vocabulary, the encoding, the windows and the splits; the binomial
distribution gives the tolerances of BERT's 80/10/10 masking rates (Devlin et al. 2019, §3.1).
Data sets hold integer token ids, so there are no gradients to check here.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data import ArrayDataset, load_dataset
from tricklab.data.datasets import text as tx
from tricklab.errors import DataError

TEXT_FILE = next((d / tx.FILE_NAME for d in tx.default_dirs() if (d / tx.FILE_NAME).is_file()), None)
# CI has shared/data/text, so the tests fail there rather than skip when the file is missing
needs_file = pytest.mark.skipif(TEXT_FILE is None and not os.environ.get("CI"),
                                reason=f"no {tx.FILE_NAME} in {[str(d) for d in tx.default_dirs()]}")


@pytest.fixture(scope="module")
def raw() -> str:
    assert TEXT_FILE is not None, f"{tx.FILE_NAME} is missing from {[str(d) for d in tx.default_dirs()]}"
    with open(TEXT_FILE, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def char_ds() -> ArrayDataset:
    return load_dataset("shakespeare-char")


def decode(row: torch.Tensor, vocab: list[str]) -> str:
    return "".join(vocab[int(i)] for i in row)


# ------------------------------------------------------------------------------------------ helpers
def test_encode_chars_matches_python_loop() -> None:
    """Reference: a dict lookup per character (slow simple path)."""
    text = "To be, or not to be: that is the question.\nÆther ‘quoted’"
    vocab = tx.char_vocab(text)
    assert vocab == sorted(set(text))
    table = {c: i for i, c in enumerate(vocab)}
    assert tx.encode_chars(text, vocab).tolist() == [table[c] for c in text]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tx.encode_chars("xyz#", tx.char_vocab("xyz"))


def test_windows_closed_form_count_and_content() -> None:
    """Reference: count = floor((n - L) / s) + 1 and row k = ids[k*s : k*s + L] (Python slicing)."""
    ids = torch.arange(50)
    for length, stride in ((7, 7), (7, 3), (1, 1), (50, 5)):
        w = tx.windows(ids, length, stride)
        assert w.shape == ((50 - length) // stride + 1, length)
        for k in range(w.shape[0]):
            assert w[k].tolist() == list(range(k * stride, k * stride + length))
    thin = tx.windows(ids, 5, 1, max_windows=4)  # 46 starts thinned to 4 evenly spaced: 0, 15, 30, 45
    assert thin[:, 0].tolist() == [round(i * 45 / 3) for i in range(4)]
    assert tx.windows(torch.arange(3), 5, 1).shape == (0, 5)


# ------------------------------------------------------------------------------------------ shakespeare-char
@needs_file
def test_char_vocab_and_windows_match_the_file(char_ds: ArrayDataset, raw: str) -> None:
    vocab = char_ds.meta["vocab"]
    assert vocab == sorted(set(raw))
    assert char_ds.num_classes == len(vocab) and char_ds.input_shape == (128,)
    n = len(raw)
    n_test = round(0.1 * n)
    n_train = n - n_test
    assert char_ds.meta["split_chars"]["test"] == (n_train, n)
    # train windows: non-overlapping, start at 0, 128, ...; y is x shifted by one character
    assert char_ds.num_train == (n_train - 129) // 128 + 1
    assert char_ds.num_test == (n_test - 129) // 128 + 1
    for k in (0, 1, 777, char_ds.num_train - 1):
        s = 128 * k
        assert decode(char_ds.x_train[k], vocab) == raw[s:s + 128]
        assert decode(char_ds.y_train[k], vocab) == raw[s + 1:s + 129]
    for k in (0, 5, char_ds.num_test - 1):
        s = n_train + 128 * k
        assert decode(char_ds.x_test[k], vocab) == raw[s:s + 128]
        assert decode(char_ds.y_test[k], vocab) == raw[s + 1:s + 129]
    # disjoint and contiguous: the last train target ends before the test text starts
    last_train_end = 128 * (char_ds.num_train - 1) + 129
    assert last_train_end <= n_train
    assert char_ds.x_train.dtype == char_ds.y_train.dtype == torch.int64


@needs_file
def test_char_validation_split_stride_and_slice(raw: str) -> None:
    ds = load_dataset("shakespeare-char", block_size=32, val_fraction=0.05, stride=16, max_train_windows=100)
    n = len(raw)
    n_test, n_val = round(0.1 * n), round(0.05 * n)
    tr, va, te = (ds.meta["split_chars"][k] for k in ("train", "val", "test"))
    assert tr == (0, n - n_test - n_val) and va == (tr[1], n - n_test) and te == (va[1], n)  # contiguous, in order
    assert ds.num_train == 100 and ds.num_val == (n_val - 33) // 32 + 1
    vocab = ds.meta["vocab"]
    # thinned windows are still stride-aligned slices of the training text, spread over all of it
    last = 16 * ((tr[1] - 33) // 16)  # start of the last window that fits (windows closed form)
    assert decode(ds.x_train[0], vocab) == raw[:32]
    assert decode(ds.x_train[99], vocab) == raw[last:last + 32] and last + 33 <= tr[1]
    assert decode(ds.x_val[0], vocab) == raw[va[0]:va[0] + 32]


def test_data_dir_override_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / tx.FILE_NAME).write_text("abcdefghij" * 30)
    ds = load_dataset("shakespeare-char", data_dir=str(tmp_path), block_size=8)
    assert ds.meta["vocab"] == list("abcdefghij")
    assert decode(ds.x_train[1], ds.meta["vocab"]) == ("abcdefghij" * 30)[8:16]
    # a path to the file itself also works
    assert load_dataset("shakespeare-char", data_dir=str(tmp_path / tx.FILE_NAME), block_size=8).num_train == \
        ds.num_train
    with pytest.raises(DataError, match="not found"):
        load_dataset("shakespeare-char", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="block_size"):
        load_dataset("shakespeare-char", data_dir=str(tmp_path), block_size=0)
    with pytest.raises(ValueError, match="fewer than"):
        load_dataset("shakespeare-char", data_dir=str(tmp_path), block_size=200)


# ----------------------------------------------------------------------------------------- shakespeare-plays
def _fake_plays() -> str:
    parts = []
    for title, word, reps in (("FIRST PLAY", "aa ", 400), ("THE SECOND PLAY", "bbb ", 500), ("TINY POEM", "c ", 20),
                              ("THIRD PLAY", "dd\n", 300)):
        parts.append(f"{title}\n\nby William Shakespeare\n\n{word * reps}\n\n")
    return "".join(parts)


def test_split_plays_on_a_known_text(tmp_path: Path) -> None:
    """Reference: the hand-built text above (titles and bodies known by construction)."""
    text = _fake_plays()
    plays = tx.split_plays(text)
    assert [p.title for p in plays] == ["FIRST PLAY", "THE SECOND PLAY", "TINY POEM", "THIRD PLAY"]
    body = text[plays[1].start:plays[1].end]
    assert "bbb " in body and "by William" not in body and "SECOND" not in body and "TINY" not in body
    (tmp_path / tx.FILE_NAME).write_text(text)
    ds = load_dataset("shakespeare-plays", data_dir=str(tmp_path), passage_len=16, num_plays=3)
    assert ds.class_names == ["FIRST PLAY", "THE SECOND PLAY", "THIRD PLAY"]  # the 3 largest, in file order
    for x, y in zip(ds.x_train, ds.y_train, strict=True):
        assert set(decode(x, ds.meta["vocab"])) <= set(["aa ", "bbb ", "dd\n"][int(y)]) | {"\n"}
    with pytest.raises(ValueError, match="non-overlapping"):
        load_dataset("shakespeare-plays", data_dir=str(tmp_path), passage_len=16, num_plays=4)
    with pytest.raises(ValueError, match="works"):
        load_dataset("shakespeare-plays", data_dir=str(tmp_path), num_plays=9)


@needs_file
def test_plays_labels_and_disjoint_train_test_regions(raw: str, char_ds: ArrayDataset) -> None:
    ds = load_dataset("shakespeare-plays")
    assert ds.meta["vocab"] == char_ds.meta["vocab"]  # same char vocabulary as shakespeare-char
    assert ds.num_classes == 8 and len(ds.class_names) == 8
    # reference split: a title is the line before each "by William Shakespeare" line (Python string ops)
    lines = raw.split("\n")
    titles = [next(t for t in reversed(lines[:i]) if t.strip()).strip()
              for i, line in enumerate(lines) if line.strip() == "by William Shakespeare"]
    assert len(titles) == 42 and titles[0] == "ALL'S WELL THAT ENDS WELL"
    spans = ds.meta["play_spans"]
    lengths = {p.title: p.length for p in tx.split_plays(raw)}
    assert sorted(lengths.values())[-8] == min(lengths[t] for t in ds.class_names)  # the 8 largest
    # balanced classes
    assert torch.bincount(ds.y_train).tolist() == [ds.num_train // 8] * 8
    assert torch.bincount(ds.y_test).tolist() == [ds.num_test // 8] * 8
    vocab = ds.meta["vocab"]
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        for k in range(0, x.shape[0], 97):
            title = ds.class_names[int(y[k])]
            start, end = spans[title]
            cut = start + round(0.85 * (end - start))
            lo, hi = (start, cut) if split == "train" else (cut, end)
            pos = raw.find(decode(x[k], vocab), lo, hi)
            assert pos >= 0 and pos + 128 <= hi, (split, k, title)


# ------------------------------------------------------------------------------------------ shakespeare-mlm
@needs_file
def test_mlm_masking_rates_follow_80_10_10(char_ds: ArrayDataset) -> None:
    ds = load_dataset("shakespeare-mlm")
    chars = char_ds.meta["vocab"]
    mask_id = len(chars)
    assert ds.meta["vocab"] == chars + ["[MASK]"] and ds.meta["mask_id"] == mask_id == ds.num_classes - 1
    # the original windows are shakespeare-char's inputs (same split and stride)
    orig = char_ds.x_train
    x, y = ds.x_train, ds.y_train
    assert x.shape == orig.shape
    sel = y != -100
    assert torch.equal(y[sel], orig[sel])
    assert torch.equal(x[~sel], orig[~sel])  # unselected positions are untouched
    n = sel.numel()
    p = sel.float().mean().item()
    assert abs(p - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n)  # binomial(n, 0.15), 5 sigma
    m = int(sel.sum())
    xs, os_ = x[sel], orig[sel]
    frac_mask = (xs == mask_id).float().mean().item()
    # the random branch draws uniformly from the V real chars, so it hits the original with probability 1/V
    v = len(chars)
    p_same = 0.1 + 0.1 / v
    frac_same = (xs == os_).float().mean().item()
    frac_rand = ((xs != os_) & (xs != mask_id)).float().mean().item()
    for got, want in ((frac_mask, 0.8), (frac_same, p_same), (frac_rand, 0.1 * (v - 1) / v)):
        assert abs(got - want) < 5 * math.sqrt(want * (1 - want) / m), (got, want)
    assert int(x.max()) <= mask_id and int(x.min()) >= 0


def test_mlm_mask_is_seeded_and_validates() -> None:
    """Reference: same seed -> identical draws (torch.Generator determinism); targets from the input."""
    tokens = torch.randint(0, 10, (64, 32), generator=torch.Generator().manual_seed(1))
    a = tx.mlm_mask(tokens, 0.3, 10, 10, torch.Generator().manual_seed(5))
    b = tx.mlm_mask(tokens, 0.3, 10, 10, torch.Generator().manual_seed(5))
    c = tx.mlm_mask(tokens, 0.3, 10, 10, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    inputs, targets = a
    sel = targets != -100
    assert torch.equal(targets[sel], tokens[sel]) and torch.equal(inputs[~sel], tokens[~sel])
    with pytest.raises(ValueError, match="mask_prob"):
        tx.mlm_mask(tokens, 1.5, 10, 10)
    with pytest.raises(TypeError, match="int64"):
        tx.mlm_mask(tokens.float(), 0.15, 10, 10)


def test_mlm_on_a_small_file_is_reproducible(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / tx.FILE_NAME).write_text("".join(rng.choice(list("abcdefgh \n"), 5000)))
    a = load_dataset("shakespeare-mlm", data_dir=str(tmp_path), block_size=16, seed=3)
    b = load_dataset("shakespeare-mlm", data_dir=str(tmp_path), block_size=16, seed=3)
    c = load_dataset("shakespeare-mlm", data_dir=str(tmp_path), block_size=16, seed=4)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
