"""Text from files (tricklab.data.files.text): language-model windows and (text, label) tables.

References: the text the test wrote, encoded by hand with a vocabulary built in the test from the training
part only (a dict lookup per token, ``<unk>`` for the rest); windows follow ``shakespeare-char``
(``y[:, :-1] == x[:, 1:]``, each window the next slice of the token stream).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data.files import load_files
from tricklab.errors import ConfigError, DataError

TEXT = "the cat sat on the mat. the dog sat on the log!\n" * 6 + "zebra quagga xylophone.\n"


def test_char_lm_vocab_from_training_text_only(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(TEXT)
    ds = load_files(path=str(tmp_path / "t.txt"), block_size=8, test_fraction=0.1)
    n = len(TEXT)
    n_test = round(0.1 * n)
    train_text, test_text = TEXT[: n - n_test], TEXT[n - n_test:]
    vocab = ["<unk>"] + sorted(set(train_text))  # reference vocabulary: training part only
    assert ds.meta["vocab"] == vocab and ds.num_classes == len(vocab) and ds.meta["task"] == "token-lm"
    index = {c: i for i, c in enumerate(vocab)}
    ids_test = np.array([index.get(c, 0) for c in test_text])
    assert (ids_test == 0).any()  # "zebra..." letters never seen in training read as <unk>
    k = ds.x_test.shape[0]
    np.testing.assert_array_equal(ds.x_test.numpy(), ids_test[: k * 8].reshape(k, 8))
    np.testing.assert_array_equal(ds.y_test.numpy()[:, :-1], ds.x_test.numpy()[:, 1:])
    ids_train = np.array([index[c] for c in train_text])
    np.testing.assert_array_equal(ds.x_train.numpy()[1], ids_train[8:16])
    np.testing.assert_array_equal(ds.y_train.numpy()[1], ids_train[9:17])
    assert ds.meta["split"]["unknown_tokens"]["test"] == int((ids_test == 0).sum())


def test_word_lm_with_user_files_and_min_count(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text(TEXT)
    (tmp_path / "test.txt").write_text("The cat sat on a zebra. " * 3)
    ds = load_files(format="text", train="train.txt", test="test.txt", data_dir=tmp_path, tokenizer="word",
                    lowercase=True, min_count=2, block_size=4)
    words = re.findall(r"\w+|[^\w\s]", TEXT.lower())
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    kept = sorted((w for w, c in counts.items() if c >= 2), key=lambda w: (-counts[w], w))
    assert ds.meta["vocab"] == ["<unk>"] + kept and "zebra" not in ds.meta["vocab"]
    index = {w: i for i, w in enumerate(ds.meta["vocab"])}
    test_ids = [index.get(w, 0) for w in re.findall(r"\w+|[^\w\s]", ("The cat sat on a zebra. " * 3).lower())]
    np.testing.assert_array_equal(ds.x_test.numpy().reshape(-1), test_ids[: ds.x_test.numel()])
    assert ds.meta["split"]["method"] == "files"


def test_text_table_classification(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas", reason="the tables extra (pandas) is not installed")
    texts = ["good film", "bad film", "great acting", "awful plot", "good plot", "bad acting"] * 3
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"] * 3
    pd.DataFrame({"review": texts, "y": labels}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"review": ["good unseen film", "bad"], "y": ["pos", "neg"]}).to_csv(tmp_path / "test.csv",
                                                                                       index=False)
    ds = load_files(format="text_table", train="train.csv", test="test.csv", text="review", target="y",
                    tokenizer="word", data_dir=tmp_path)
    vocab = ds.meta["vocab"]
    assert vocab[:2] == ["<pad>", "<unk>"] and "unseen" not in vocab and ds.meta["max_len"] == 2
    index = {w: i for i, w in enumerate(vocab)}
    # "good unseen film" -> good, <unk> (truncated to max_len 2); "bad" -> bad, <pad>
    np.testing.assert_array_equal(ds.x_test.numpy(), [[index["good"], 1], [index["bad"], 0]])
    assert ds.meta["truncated"]["test"] == 1
    assert ds.class_names == ["neg", "pos"] and ds.y_test.tolist() == [1, 0]
    assert ds.x_train.dtype == torch.int64 and ds.meta["task"] == "sequence-classification"
    ds_c = load_files(format="text_table", path=str(tmp_path / "train.csv"), text="review", target="y",
                      max_len=12)
    assert ds_c.input_shape == (12,) and ds_c.meta["tokenizer"] == "char"


def test_text_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"line one\nline two\nbad \xff byte\n")
    with pytest.raises(DataError) as e:
        load_files(path=str(tmp_path / "bad.txt"))
    assert "bad.txt: line 3" in str(e.value) and "utf-8" in str(e.value)
    assert load_files(path=str(tmp_path / "bad.txt"), encoding="latin-1", block_size=2).num_train > 0
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(DataError, match="block_size"):
        load_files(path=str(tmp_path / "short.txt"), block_size=64)
    (tmp_path / "t.txt").write_text(TEXT)
    with pytest.raises(ConfigError, match="unknown option 'target'"):
        load_files(path=str(tmp_path / "t.txt"), target="label")
    pd = pytest.importorskip("pandas", reason="the tables extra (pandas) is not installed")
    pd.DataFrame({"body": ["a", None, "c"], "label": [0, 1, 0]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError) as e:
        load_files(format="text_table", path=str(tmp_path / "m.csv"), text="text")
    assert "'text'" in str(e.value) and "['body', 'label']" in str(e.value)
    with pytest.raises(DataError) as e:
        load_files(format="text_table", path=str(tmp_path / "m.csv"), text="body")
    assert "m.csv: row 1" in str(e.value) and "text is missing" in str(e.value)


def test_text_fingerprint_follows_one_byte(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(TEXT)
    a = load_files(path=str(tmp_path / "t.txt"), block_size=8)
    (tmp_path / "t.txt").write_text(TEXT.replace("log!", "log?"))
    b = load_files(path=str(tmp_path / "t.txt"), block_size=8)
    assert a.fingerprint() != b.fingerprint()
