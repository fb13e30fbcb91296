"""``files``: the user's own data, read from files by :mod:`tricklab.data.files`.

A recipe names it like any data set and passes the file spec as the data set's arguments, e.g.
``load_dataset("files", format="csv", path="houses.csv", target="price")``; ``data_dir`` is the folder
relative paths are read from. See ``docs/data-files.md``.
"""

from __future__ import annotations

from typing import Any

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.data.files import load_files

__all__ = ["load_files_dataset"]


@DATASETS.register("files", summary="your own data from files: npz/npy/hdf5 arrays, csv/parquet tables, image "
                                   "folders, text, (text, label) tables, Hugging Face datasets saved to disk")
def load_files_dataset(data_dir: str | None = None, **spec: Any) -> ArrayDataset:
    """Load the data the file spec ``spec`` (format=, path= or train=/val=/test=, options) describes."""
    return load_files(spec, data_dir=data_dir)
