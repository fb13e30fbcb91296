"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) read from local IDX files.

Nothing is downloaded: the files come from the Debian package ``dataset-fashion-mnist``, which installs
them under ``/usr/share/datasets/fashion-mnist``, or from any folder given as ``data_dir`` (CLI
``--data-dir``, recipe key ``data.data_dir``). Both the gzipped (``*.gz``) and the plain files are read.
Reading and decompressing takes well under a second, so nothing is cached.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.errors import DataError

__all__ = ["read_idx", "load_fashion_mnist", "DEFAULT_DIR", "FASHION_MNIST_CLASSES", "IDX_DTYPES"]

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# IDX type codes (third byte of the magic number). Multi-byte values are big-endian in the file.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST family's format) into a native-byte-order numpy array.

    Layout: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, then one big-endian uint32 size per dimension and the data.
    Files ending in ``.gz`` (or starting with the gzip magic) are decompressed. A bad magic number, an
    unknown type code or a data size that does not match the header raises :class:`DataError` naming the file.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(
            f"{path} is not an IDX file: bad magic number 0x{raw[:4].hex()} "
            f"(expected 0x0000TTNN with type TT in {', '.join(f'{c:02x}' for c in IDX_DTYPES)})"
        )
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: header declares {ndim} dimensions but the file has {len(raw)} bytes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = math.prod(shape)
    expected = header + count * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {what}: header shape {shape} of {dtype.name} needs {expected} bytes, file has {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    # astype copies into native byte order, so the result is writable and torch.from_numpy accepts it.
    return data.astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    raise DataError(_missing_message(folder, f"file {stem}(.gz) is missing"))


def _missing_message(folder: Path, what: str) -> str:
    return (
        f"Fashion-MNIST not found in {folder}: {what}. Install the Debian package "
        f"(apt-get install dataset-fashion-mnist, files land in {DEFAULT_DIR}) or point to a folder holding "
        f"train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz) and "
        f"t10k-labels-idx1-ubyte(.gz) with --data-dir DIR or the recipe key data.data_dir=DIR."
    )


@DATASETS.register(
    "fashion-mnist", summary="Fashion-MNIST: 60000/10000 28x28 greyscale clothing images, from local IDX files"
)
def load_fashion_mnist(data_dir: str | None = None) -> ArrayDataset:
    """Fashion-MNIST from ``data_dir`` or ``/usr/share/datasets/fashion-mnist``.

    Images are scaled to [0, 1] float32 and shaped ``(1, 28, 28)``; labels are int64 in 0..9.
    """
    folder = Path(data_dir).expanduser() if data_dir else DEFAULT_DIR
    if not folder.is_dir():
        raise DataError(_missing_message(folder, "the folder does not exist"))
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in _FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        path = _find(folder, _FILES[f"x_{split}"])
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise DataError(f"{path}: expected uint8 images of shape (N, 28, 28), got {x.dtype} {x.shape}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise DataError(
                f"{_find(folder, _FILES[f'y_{split}'])}: expected {x.shape[0]} labels, got shape {y.shape}"
            )
        if y.size and int(y.max()) > 9:
            raise DataError(f"{_find(folder, _FILES[f'y_{split}'])}: label {int(y.max())} outside 0..9")

    def images(a: np.ndarray) -> torch.Tensor:
        # Divide in float32 directly: the float64 intermediate would be 376 MB for the training set.
        return torch.from_numpy(a).to(torch.float32).div_(255.0).unsqueeze(1)

    return ArrayDataset(
        name="fashion-mnist",
        x_train=images(arrays["x_train"]),
        y_train=torch.from_numpy(arrays["y_train"].astype(np.int64)),
        x_test=images(arrays["x_test"]),
        y_test=torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=list(FASHION_MNIST_CLASSES),
        meta={"source": str(folder)},
    )
