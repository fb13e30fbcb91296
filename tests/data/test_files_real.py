"""Data from files on real data, each checked against an independent path to the same numbers.

* scikit-learn's diabetes set (bundled) written to CSV: features against ``StandardScaler`` fitted on the
  training rows, targets against the bundled array.
* Fashion-MNIST (Debian's IDX files) written as a PNG folder: pixels against the built-in IDX reader.
* Shakespeare (shared/data/text) read as a plain text file: windows against the built-in ``shakespeare-char``.
Each is skipped when its source is not on the machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data import load_dataset
from tricklab.data.datasets.fashion_mnist import DEFAULT_DIR as FASHION_DIR
from tricklab.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, read_idx
from tricklab.data.datasets.text import default_dirs
from tricklab.data.files import load_files


def test_diabetes_csv_against_sklearn_scaler(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas", reason="the tables extra (pandas) is not installed")
    skd = pytest.importorskip("sklearn.datasets", reason="scikit-learn is the reference")
    from sklearn.preprocessing import StandardScaler

    bunch = skd.load_diabetes(scaled=False)
    df = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    df["sex"] = np.where(df["sex"] == 1, "f", "m")  # a text column, to go through the categorical path
    df["progression"] = bunch.target
    df.to_csv(tmp_path / "diabetes.csv", index=False)
    ds = load_dataset("files", path=str(tmp_path / "diabetes.csv"), target="progression", val_fraction=0.1)
    assert ds.meta["target_kind"] == "regression" and ds.num_train + ds.num_val + ds.num_test == 442
    numeric = [c for c in bunch.feature_names if c != "sex"]
    scaler = StandardScaler().fit(df.loc[ds.meta["split"]["rows"]["train"], numeric].to_numpy())
    for split in ("train", "val", "test"):
        rows = ds.meta["split"]["rows"][split]
        x = getattr(ds, f"x_{split}").numpy()
        np.testing.assert_allclose(x[:, [ds.meta["feature_names"].index(c) for c in numeric]],
                                   scaler.transform(df.loc[rows, numeric].to_numpy()), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(x[:, ds.meta["feature_names"].index("sex=f")], df.loc[rows, "sex"] == "f")
        np.testing.assert_allclose(getattr(ds, f"y_{split}").numpy(), bunch.target[rows], rtol=1e-6)


def test_fashion_mnist_png_folder_against_idx(tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image", reason="the images extra (Pillow) is not installed")
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST IDX files not in {FASHION_DIR}")
    images = read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")
    keep = np.concatenate([np.flatnonzero(labels == c)[:15] for c in (0, 7, 9)])
    for i in keep:
        folder = tmp_path / "fm" / FASHION_MNIST_CLASSES[labels[i]].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    ds = load_files(format="image_folder", path=str(tmp_path / "fm"), test_fraction=0.2)
    assert ds.input_shape == (1, 28, 28) and ds.meta["image_mode"] == "grayscale"
    files = sorted((tmp_path / "fm").rglob("*.png"))
    idx = [int(files[r].stem) for r in ds.meta["split"]["rows"]["train"]]
    # reference: the built-in loader's scaling, uint8 -> float32 / 255
    ref = torch.from_numpy(images[idx]).to(torch.float32).div_(255.0).unsqueeze(1)
    assert torch.equal(ds.x_train, ref)
    names = [FASHION_MNIST_CLASSES[labels[i]].replace("/", "-") for i in idx]
    assert [ds.class_names[k] for k in ds.y_train.tolist()] == names


def test_shakespeare_text_matches_builtin_windows() -> None:
    path = next((d / "shakespeare.txt" for d in default_dirs() if (d / "shakespeare.txt").is_file()), None)
    if path is None:
        pytest.skip("shakespeare.txt not found")
    ref = load_dataset("shakespeare-char", data_dir=str(path), block_size=64)
    ds = load_files(path=str(path), block_size=64)
    # same text, same split, same windows; our vocabulary is <unk> + the training characters, and here the
    # training text holds every character of the file, so every id is the built-in id + 1
    assert ds.meta["vocab"] == ["<unk>"] + ref.meta["vocab"]
    assert torch.equal(ds.x_train, ref.x_train + 1) and torch.equal(ds.y_test, ref.y_test + 1)
