"""Data: in-memory data sets, their registry and the loaders the trainer draws batches from.

``load_dataset(name)`` returns an :class:`ArrayDataset`; :class:`InMemoryLoader` batches tensors with a
resumable, seed-determined order; :class:`StreamingLoader` gives the same order over a
``torch.utils.data.Dataset`` that does not fit in memory. See ``docs/data.md``.
"""

from __future__ import annotations

from tricklab.data.base import DATASETS, ArrayDataset, cache_dir
from tricklab.data.datasets import GraphDataset, load_dataset, read_idx  # also registers the built-in data sets
from tricklab.data.graph import Graph, batch_graphs
from tricklab.data.graph_loaders import FullBatchGraphLoader, GraphBatchLoader
from tricklab.data.loader import (
    InMemoryLoader,
    StreamingLoader,
    epoch_permutation,
    iterate_eval_batches,
)

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "FullBatchGraphLoader",
    "Graph",
    "GraphBatchLoader",
    "GraphDataset",
    "batch_graphs",
    "InMemoryLoader",
    "StreamingLoader",
    "cache_dir",
    "epoch_permutation",
    "iterate_eval_batches",
    "load_dataset",
    "read_idx",
]
