"""Data from files: a user's arrays, tables, image folders, texts or saved Hugging Face data sets.

``load_files({"format": "csv", "path": "houses.csv", "target": "price"})`` (or ``load_dataset("files",
format=..., path=..., ...)``, the registered name a recipe uses) returns an :class:`ArrayDataset` whose
``meta`` records the target kind, the splits, everything fitted on the training split and the digest of the
files read. Every optional reader (pandas/pyarrow, h5py, Pillow, datasets) is imported only when its format
is used. See ``docs/data-files.md``.
"""

from __future__ import annotations

from tricklab.data.files.load import load_files
from tricklab.data.files.spec import FORMATS, TARGET_KIND_CHOICES, FileSpec, format_options, parse_spec

__all__ = ["FORMATS", "TARGET_KIND_CHOICES", "FileSpec", "format_options", "load_files", "parse_spec"]
