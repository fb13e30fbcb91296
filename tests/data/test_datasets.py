"""Tests for tricklab.data data sets: ArrayDataset, MNIST-1D (+cache), scikit-learn sets, Fashion-MNIST/IDX.

References: MNIST-1D sizes from ``mnist1d.data.get_dataset_args()`` (5000 samples, 0.8 split, length 40);
scikit-learn set sizes from its docs (digits 1797, wine 178, breast cancer 569) with test = ceil(0.2 n);
Fashion-MNIST 60000/10000 28x28 (Xiao et al. 2017); the IDX layout from LeCun's MNIST page, checked
here against numpy's own big-endian encoding.
"""

from __future__ import annotations

import gzip
import random
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data import DATASETS, ArrayDataset, load_dataset
from tricklab.data.base import cache_dir
from tricklab.data.datasets import fashion_mnist as fm
from tricklab.data.datasets import mnist1d as m1d
from tricklab.errors import DataError, UnknownNameError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One cache folder per module so MNIST-1D is generated once per variant, never written to ~.
    return tmp_path_factory.mktemp("tricklab-cache")


@pytest.fixture(autouse=True)
def _cache_env(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRICKLAB_CACHE", str(shared_cache))


# -- registry / ArrayDataset -----------------------------------------------------------------------------


def test_all_datasets_registered_and_typos_suggested() -> None:
    assert {"mnist1d", "mnist1d-shuffled", "digits", "wine", "breast-cancer", "fashion-mnist"} <= set(DATASETS)
    with pytest.raises(UnknownNameError, match="did you mean 'mnist1d'"):
        load_dataset("mnist1")


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRICKLAB_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TRICKLAB_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "tricklab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "tricklab"


def tiny(n: int = 20) -> ArrayDataset:
    x = torch.arange(n * 4, dtype=torch.float32).reshape(n, 4)
    y = torch.arange(n, dtype=torch.int64) % 3
    return ArrayDataset("tiny", x, y, x[:5].clone(), y[:5].clone(), num_classes=3, input_shape=(4,))


def test_fingerprint_is_deterministic_and_sensitive() -> None:
    a, b = tiny(), tiny()
    assert a.fingerprint() == b.fingerprint()
    assert len(a.fingerprint()) == 64
    b.x_train[0, 0] += 1
    assert a.fingerprint() != b.fingerprint()
    # same bytes, different dtype or shape -> different fingerprint
    c = tiny()
    c.x_test = c.x_test.reshape(5, 4)  # unchanged
    assert c.fingerprint() == a.fingerprint()
    d = tiny()
    d.y_test = d.y_test.to(torch.int32)
    assert d.fingerprint() != a.fingerprint()


def test_with_validation_split() -> None:
    ds = tiny(20)
    v = ds.with_validation(0.25, seed=3)
    assert (v.num_train, v.num_val, v.num_test) == (15, 5, 5)
    ids = torch.cat([v.x_train[:, 0], v.x_val[:, 0]]).sort().values
    assert torch.equal(ids, ds.x_train[:, 0])  # a partition of the original training set
    assert torch.equal(v.x_val, ds.with_validation(0.25, seed=3).x_val)  # reproducible
    assert not torch.equal(v.x_val, ds.with_validation(0.25, seed=4).x_val)
    assert v.fingerprint() != ds.fingerprint()
    assert ds.with_validation(0.0, seed=0).x_val is None
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \[0, 1\)"):
            ds.with_validation(bad, seed=0)
    with pytest.raises(ValueError, match="already has a validation split"):
        v.with_validation(0.1, seed=0)


def test_array_dataset_validates_shapes() -> None:
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="expected input_shape"):
        ArrayDataset("bad", x, torch.zeros(4, dtype=torch.int64), x, torch.zeros(4, dtype=torch.int64), 2, (4,))
    with pytest.raises(ValueError, match="must be int64"):
        ArrayDataset("bad", x, torch.zeros(4), x, torch.zeros(4, dtype=torch.int64), 2, (3,))


# -- MNIST-1D --------------------------------------------------------------------------------------------


def test_mnist1d_shapes_cache_and_reload(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)

    ds = load_dataset("mnist1d")
    # generation must not reseed the caller's global RNGs
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)

    assert ds.x_train.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == 10 and ds.input_shape == (40,)
    assert set(ds.y_train.unique().tolist()) == set(range(10))
    files = sorted(shared_cache.glob("mnist1d-plain-*.npz"))
    assert len(files) == 1 and not list(shared_cache.glob("*.tmp"))

    # The second load must come from the cache: generation is made to fail.
    def no_generation(args):  # pragma: no cover - called only on failure
        raise AssertionError("MNIST-1D was regenerated instead of read from the cache")

    monkeypatch.setattr(m1d, "_generate", no_generation)
    t0 = time.perf_counter()
    again = load_dataset("mnist1d")
    assert time.perf_counter() - t0 < 1.0
    assert again.fingerprint() == ds.fingerprint()


def test_mnist1d_shuffled_is_a_fixed_permutation_of_positions() -> None:
    plain = load_dataset("mnist1d")
    shuffled = load_dataset("mnist1d-shuffled")
    assert shuffled.x_train.shape == (4000, 40)
    assert not torch.equal(plain.x_train, shuffled.x_train)
    assert torch.equal(plain.y_train, shuffled.y_train)
    # Same samples, positions permuted: the per-row multiset of values is unchanged.
    assert torch.allclose(plain.x_train.sort(dim=1).values, shuffled.x_train.sort(dim=1).values, atol=1e-6)


def test_mnist1d_cache_key_includes_args(shared_cache: Path, tmp_path: Path) -> None:
    small = load_dataset("mnist1d", data_dir=str(tmp_path), num_samples=200)
    assert small.num_train == 160 and small.num_test == 40
    assert len(list(tmp_path.glob("mnist1d-plain-*.npz"))) == 1
    with pytest.raises(DataError, match="unknown MNIST-1D argument"):
        load_dataset("mnist1d", num_sample=10)


def test_mnist1d_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise m1d.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(m1d.metadata, "version", missing)
    with pytest.raises(DataError, match=r'pip install "tricklab\[mnist1d\]"'):
        load_dataset("mnist1d")


# -- scikit-learn sets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, n_train, n_test, shape, classes",
    [
        ("digits", 1437, 360, (1, 8, 8), 10),
        ("wine", 142, 36, (13,), 3),
        ("breast-cancer", 455, 114, (30,), 2),
    ],
)
def test_sklearn_sets(name: str, n_train: int, n_test: int, shape: tuple[int, ...], classes: int) -> None:
    ds = load_dataset(name)
    assert ds.x_train.shape == (n_train, *shape) and ds.x_test.shape == (n_test, *shape)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.num_classes == classes and ds.input_shape == shape
    assert len(ds.class_names) == classes
    assert ds.fingerprint() == load_dataset(name).fingerprint()  # fixed split
    assert ds.fingerprint() != load_dataset(name, seed=1).fingerprint()
    if name == "digits":
        assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    else:
        assert torch.allclose(ds.x_train.mean(0), torch.zeros(shape), atol=1e-5)
        assert torch.allclose(ds.x_train.std(0, unbiased=False), torch.ones(shape), atol=1e-4)


def test_sklearn_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DataError, match=r"tricklab\[sklearn\]"):
        load_dataset("wine")


# -- IDX / Fashion-MNIST ------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, code: int) -> None:
    """Encode an IDX file independently of read_idx: header via struct, data via numpy big-endian."""
    big = array.astype(array.dtype.newbyteorder(">"))
    payload = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += big.tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)


def test_read_idx_matches_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(7,), dtype=np.uint8)
    ints = rng.integers(-1000, 1000, size=(3, 2), dtype=np.int32)
    floats = rng.standard_normal((2, 3)).astype(np.float32)
    cases = [
        ("img.idx3", images, 0x08),
        ("lab.idx1", labels, 0x08),
        ("img.idx3.gz", images, 0x08),
        ("ints.idx", ints, 0x0C),
        ("floats.idx", floats, 0x0D),
    ]
    for fname, arr, code in cases:
        write_idx(tmp_path / fname, arr, code)
        got = fm.read_idx(tmp_path / fname)
        assert got.shape == arr.shape and got.dtype == arr.dtype.newbyteorder("=")
        np.testing.assert_array_equal(got, arr)
        assert got.flags.writeable


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "good"
    write_idx(good, np.zeros((4, 3, 3), np.uint8), 0x08)
    raw = good.read_bytes()

    truncated = tmp_path / "truncated-images"
    truncated.write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated-images is truncated"):
        fm.read_idx(truncated)

    short_header = tmp_path / "short-header"
    short_header.write_bytes(raw[:9])
    with pytest.raises(DataError, match="short-header is truncated"):
        fm.read_idx(short_header)

    bad_magic = tmp_path / "bad-magic"
    bad_magic.write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match="bad-magic is not an IDX file: bad magic number"):
        fm.read_idx(bad_magic)

    bad_type = tmp_path / "bad-type"
    bad_type.write_bytes(b"\x00\x00\x07" + raw[3:])
    with pytest.raises(DataError, match="bad-type is not an IDX file"):
        fm.read_idx(bad_type)

    broken_gz = tmp_path / "broken.gz"
    broken_gz.write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(DataError, match="broken.gz"):
        fm.read_idx(broken_gz)


def test_fashion_mnist_missing_folder_message(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_dir=str(missing))
    msg = str(info.value)
    for needle in (str(missing), "dataset-fashion-mnist", "--data-dir", "data.data_dir="):
        assert needle in msg


def fake_fashion_folder(folder: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, 0x08)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n, dtype=np.uint8) % 10, 0x08)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_data_dir(tmp_path: Path, gz: bool) -> None:
    fake_fashion_folder(tmp_path, gz=gz)
    ds = load_dataset("fashion-mnist", data_dir=str(tmp_path))
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert torch.equal(ds.y_train, torch.arange(6))


def test_fashion_mnist_missing_file_and_bad_file(tmp_path: Path) -> None:
    fake_fashion_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.*missing.*dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    fake_fashion_folder(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-100]))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path))


@pytest.mark.skipif(
    not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)"
)
def test_real_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    assert torch.equal(torch.bincount(ds.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 1000))
