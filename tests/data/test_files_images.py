"""Image folders (tricklab.data.files.images): one sub-folder per class, PNG and JPEG through Pillow.

References: the pixel arrays the test wrote (PNG is lossless, so loaded = written / 255 exactly), Pillow's own
decoding of each JPEG file (lossy: the reference is what the file holds), and Pillow's ``resize`` with the
same filter for resized images. Error tests check the message names the offending file or folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data.files import load_files
from tricklab.errors import DataError

Image = pytest.importorskip("PIL.Image", reason="the images extra (Pillow) is not installed")


def write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 5), seed: int = 0,
                 jpeg_every: int = 3, mode: str = "RGB") -> dict[str, np.ndarray]:
    """root/<class>/<i>.png|.jpg; returns {file path: pixels as written (H, W[, 3]) uint8}."""
    rng = np.random.default_rng(seed)
    written = {}
    h, w = size
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
            ext = ".jpg" if jpeg_every and i % jpeg_every == jpeg_every - 1 else ".png"
            path = root / cls / f"{i:03d}{ext}"
            Image.fromarray(arr, mode=mode).save(path)
            written[str(path)] = arr
    return written


def expected(path: str, written: dict[str, np.ndarray], gray: bool = False) -> np.ndarray:
    """Channels-first [0, 1] reference: the written pixels for PNG, Pillow's decoding for JPEG."""
    if path.endswith(".png"):
        arr = written[path]
    else:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L" if gray else "RGB"))
    arr = arr.astype(np.float64) / 255.0
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)).astype(np.float32)


def test_image_folder_pixels_equal_written(tmp_path: Path) -> None:
    written = write_folder(tmp_path / "imgs", {"cat": 6, "dog": 9})
    ds = load_files(format="image_folder", path=str(tmp_path / "imgs"), val_fraction=0.2, seed=1)
    assert ds.input_shape == (3, 6, 5) and ds.class_names == ["cat", "dog"] and ds.meta["image_mode"] == "rgb"
    assert ds.x_train.dtype == torch.float32 and float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1
    files = sorted(written)  # class folders sorted, files sorted: the order items are read in
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}").numpy(), getattr(ds, f"y_{split}").numpy()
        for k, r in enumerate(ds.meta["split"]["rows"][split]):
            path = files[r]
            np.testing.assert_array_equal(x[k], expected(path, written))
            assert y[k] == (0 if "/cat/" in path else 1)
    assert ds.meta["source_files"] == 15


def test_grayscale_auto_and_resize_against_pillow(tmp_path: Path) -> None:
    written = write_folder(tmp_path / "g", {"a": 3, "b": 3}, size=(8, 10), mode="L", jpeg_every=0)
    ds = load_files(format="image_folder", train=str(tmp_path / "g"), test=str(tmp_path / "g"), size=[4, 5])
    assert ds.meta["image_mode"] == "grayscale" and ds.input_shape == (1, 4, 5)
    for k, path in enumerate(sorted(written)):
        ref = np.asarray(Image.fromarray(written[path]).resize((5, 4), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(ds.x_train.numpy()[k, 0], (ref / 255.0).astype(np.float32))
    rgb = load_files(format="image_folder", path=str(tmp_path / "g"), mode="rgb", test_fraction=0.5)
    assert rgb.input_shape == (3, 8, 10)
    assert torch.equal(rgb.x_train[:, 0], rgb.x_train[:, 2])  # gray replicated into three equal channels


def test_sixteen_bit_png_uses_the_sixteen_bit_range(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        arr = np.full((3, 4), 65535 // 2 if cls == "a" else 65535, dtype=np.uint16)
        Image.fromarray(arr).save(tmp_path / "d" / cls / "0.png")
        Image.fromarray(arr).save(tmp_path / "d" / cls / "1.png")
    ds = load_files(format="image_folder", path=str(tmp_path / "d"), test_fraction=0.5)
    vals = sorted({round(float(v), 4) for v in torch.cat([ds.x_train, ds.x_test]).unique()})
    assert vals == [round((65535 // 2) / 65535, 4), 1.0]


@pytest.mark.parametrize("case", ["mixed_sizes", "empty_class", "unreadable", "truncated", "test_only_class",
                                  "no_class_folders"])
def test_bad_image_folders(tmp_path: Path, case: str) -> None:
    root = tmp_path / "imgs"
    write_folder(root, {"cat": 4, "dog": 4}, jpeg_every=0)
    spec = {"format": "image_folder", "path": str(root)}
    if case == "mixed_sizes":
        Image.fromarray(np.zeros((9, 7, 3), dtype=np.uint8)).save(root / "dog" / "big.png")
        want = [str(root / "dog" / "big.png"), "9x7", "6x5", "size:"]
    elif case == "empty_class":
        (root / "bird").mkdir()
        (root / "bird" / "notes.txt").write_text("no images here")
        want = [str(root / "bird"), "'bird'", "holds no images"]
    elif case == "unreadable":
        (root / "cat" / "broken.png").write_bytes(b"not a png at all")
        want = [str(root / "cat" / "broken.png"), "not a readable image"]
    elif case == "truncated":
        good = (root / "cat" / "000.png").read_bytes()
        (root / "cat" / "cut.png").write_bytes(good[: len(good) // 2])
        want = [str(root / "cat" / "cut.png")]
    elif case == "no_class_folders":
        flat = tmp_path / "flat"
        flat.mkdir()
        Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(flat / "x.png")
        spec["path"] = str(flat)
        want = [str(flat), "no class folders"]
    else:
        test = tmp_path / "test"
        write_folder(test, {"cat": 1, "fox": 2}, jpeg_every=0, seed=3)
        spec = {"format": "image_folder", "train": str(root), "test": str(test)}
        want = [str(test / "fox" / "000.png"), "'fox'", "never in the training split", "['cat', 'dog']"]
    with pytest.raises(DataError) as e:
        load_files(spec)
    for w in want:
        assert w in str(e.value), (w, str(e.value))


def test_image_fingerprint_follows_one_pixel(tmp_path: Path) -> None:
    written = write_folder(tmp_path / "imgs", {"a": 3, "b": 3}, jpeg_every=0)
    spec = {"format": "image_folder", "path": str(tmp_path / "imgs")}
    before = load_files(spec).fingerprint()
    path = sorted(written)[4]
    arr = written[path].copy()
    arr[0, 0, 0] ^= 1
    Image.fromarray(arr).save(path)
    assert load_files(spec).fingerprint() != before
    (tmp_path / "imgs" / "b").rename(tmp_path / "imgs" / "c")  # a renamed class is other data
    assert load_files(spec).class_names == ["a", "c"]
