"""Hugging Face ``datasets`` saved to disk (tricklab.data.files.hf): tables, images, text and arrays.

The test builds each data set in memory with ``datasets.Dataset.from_dict``, saves it with ``save_to_disk``
and checks the loaded arrays against the values it put in (nothing touches the hub). The fingerprint check
edits one byte of the saved ``dataset_info.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tricklab.data.files import load_files
from tricklab.errors import DataError

datasets = pytest.importorskip("datasets", reason="the hf extra (datasets) is not installed")
datasets.disable_progress_bars()


def test_hf_dataset_dict_table_with_class_label(tmp_path: Path) -> None:
    feats = datasets.Features({"a": datasets.Value("float32"), "b": datasets.Value("float32"),
                               "label": datasets.ClassLabel(names=["low", "mid", "high"])})
    rng = np.random.default_rng(0)
    cols = {s: {"a": rng.normal(size=n).astype(np.float32), "b": rng.normal(size=n).astype(np.float32),
                "label": rng.integers(0, 3, n)} for s, n in (("train", 30), ("test", 9))}
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({k: list(v) for k, v in c.items()}, features=feats)
                               for s, c in cols.items()})
    dd.save_to_disk(str(tmp_path / "hf"))
    ds = load_files(path=str(tmp_path / "hf"), standardize=False)  # format from the saved folder
    assert ds.meta["format"] == "hf_disk" and ds.meta["hf_input"] == "table"
    assert ds.class_names == ["low", "mid", "high"] and ds.meta["split"]["method"] == "files"
    np.testing.assert_array_equal(ds.x_test.numpy(), np.stack([cols["test"]["a"], cols["test"]["b"]], axis=1))
    np.testing.assert_array_equal(ds.y_test.numpy(), cols["test"]["label"])  # ClassLabel ids are kept

    before = ds.fingerprint()
    info = tmp_path / "hf" / "train" / "dataset_info.json"
    meta = json.loads(info.read_text())
    meta["description"] = (meta.get("description") or "") + "x"
    info.write_text(json.dumps(meta))
    assert load_files(path=str(tmp_path / "hf"), standardize=False).fingerprint() != before


def test_hf_image_text_and_array_columns(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="the images extra (Pillow) is not installed")
    rng = np.random.default_rng(1)
    pix = rng.integers(0, 256, size=(12, 4, 5, 3), dtype=np.uint8)
    labels = [i % 2 for i in range(12)]
    img = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pix], "label": labels},
                                     features=datasets.Features({"image": datasets.Image(),
                                                                 "label": datasets.Value("int64")}))
    img.save_to_disk(str(tmp_path / "img"))
    ds = load_files(format="hf_disk", path=str(tmp_path / "img"), test_fraction=0.25)
    assert ds.meta["hf_input"] == "image" and ds.input_shape == (3, 4, 5)
    r = ds.meta["split"]["rows"]["train"]
    np.testing.assert_array_equal(ds.x_train.numpy(), (pix[r].astype(np.float64) / 255).transpose(0, 3, 1, 2)
                                  .astype(np.float32))

    txt = datasets.Dataset.from_dict({"text": ["ab", "ba", "aab", "bba"] * 3, "label": ["x", "y"] * 6})
    txt.save_to_disk(str(tmp_path / "txt"))
    ds = load_files(format="hf_disk", path=str(tmp_path / "txt"), test_fraction=0.25)
    assert ds.meta["hf_input"] == "text" and ds.meta["vocab"] == ["<pad>", "<unk>", "a", "b"]
    texts = np.array(["ab", "ba", "aab", "bba"] * 3)[ds.meta["split"]["rows"]["test"]]
    ref = [[{"a": 2, "b": 3}[c] for c in t] + [0] * (3 - len(t)) for t in texts]
    np.testing.assert_array_equal(ds.x_test.numpy(), ref)

    vec = rng.normal(size=(10, 6)).astype(np.float32)
    arr = datasets.Dataset.from_dict({"v": [list(v) for v in vec], "tags": [["p"], ["q", "p"]] * 5})
    arr.save_to_disk(str(tmp_path / "arr"))
    ds = load_files(format="hf_disk", path=str(tmp_path / "arr"), target="tags", test_fraction=0.3)
    assert ds.meta["hf_input"] == "array" and ds.meta["target_kind"] == "multilabel"
    np.testing.assert_array_equal(ds.x_train.numpy(), vec[ds.meta["split"]["rows"]["train"]])
    assert ds.class_names == ["p", "q"]


def test_hf_errors(tmp_path: Path) -> None:
    d = datasets.Dataset.from_dict({"f": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    d.save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError) as e:
        load_files(format="hf_disk", path=str(tmp_path / "d"))
    assert "no target column ['label']" in str(e.value) and "['f', 'y']" in str(e.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "state.json").write_text("{")
    with pytest.raises(DataError, match="save_to_disk"):
        load_files(format="hf_disk", path=str(tmp_path / "junk"), target="y")
