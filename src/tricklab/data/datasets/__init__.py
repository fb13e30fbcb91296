"""Built-in data sets. Importing this package registers them in :data:`tricklab.data.base.DATASETS`, and
:func:`load_dataset` (the one entry point recipes and the CLI use) lives here, beside the registrations it
relies on, so that ``base`` never imports the data sets that import it.

Each module imports its optional dependency (mnist1d, scikit-learn, pandas, Pillow...) only inside the loader
function, so registering every data set costs nothing and a missing extra is reported only when that set is loaded.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.data.files.code import dataset_from
from tricklab.errors import ConfigError

from tricklab.data.datasets.collage import DetectionDataset, load_fashion_collage
from tricklab.data.datasets.fairness import load_breast_cancer_groups, load_fair_synthetic
from tricklab.data.datasets.fashion_mnist import load_fashion_mnist, read_idx
from tricklab.data.datasets.fashion_rotations import load_fashion_mnist_rot40
from tricklab.data.datasets.files import load_files_dataset
from tricklab.data.datasets.graphs import GraphDataset, load_karate, load_synthetic_graphs
from tricklab.data.datasets.mnist1d import load_mnist1d, load_mnist1d_shuffled
from tricklab.data.datasets.planetoid import load_cora, load_planetoid, load_planetoid_dataset
from tricklab.data.datasets.seq2seq_toy import load_seq_reverse, load_seq_sort
from tricklab.data.datasets.sklearn_sets import load_breast_cancer, load_digits, load_wine
from tricklab.data.datasets.synthetic_seq import load_induction_heads, load_selective_copying
from tricklab.data.datasets.text import load_shakespeare_char, load_shakespeare_mlm, load_shakespeare_plays

__all__ = [
    "DetectionDataset",
    "GraphDataset",
    "load_dataset",
    "load_breast_cancer",
    "load_breast_cancer_groups",
    "load_cora",
    "load_digits",
    "load_fair_synthetic",
    "load_fashion_collage",
    "load_fashion_mnist",
    "load_fashion_mnist_rot40",
    "load_files_dataset",
    "load_induction_heads",
    "load_karate",
    "load_mnist1d",
    "load_mnist1d_shuffled",
    "load_planetoid",
    "load_planetoid_dataset",
    "load_selective_copying",
    "load_seq_reverse",
    "load_seq_sort",
    "load_shakespeare_char",
    "load_shakespeare_mlm",
    "load_shakespeare_plays",
    "load_synthetic_graphs",
    "load_wine",
    "read_idx",
]


def _outside_loader(name: str, obj: Any) -> Any:
    """A data set from a plugin (entry point group ``tricklab.datasets``) or a ``module:attribute`` reference:
    a function called with the recipe's data arguments (and ``data_dir=`` when it takes it) that returns an
    ArrayDataset, arrays or a torch Dataset (made into an ArrayDataset as data from code is), or such data
    itself."""
    if not callable(obj) or isinstance(obj, ArrayDataset):
        return lambda data_dir=None, **kwargs: dataset_from(obj, name)
    try:
        takes_dir = "data_dir" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        takes_dir = False

    @functools.wraps(obj)
    def load(data_dir: str | None = None, **kwargs: Any) -> ArrayDataset:
        args = {**kwargs, **({"data_dir": data_dir} if takes_dir else {})}
        try:
            inspect.signature(obj).bind(**args)
        except TypeError as e:  # only a mismatch of the arguments, not a TypeError inside the function
            raise ConfigError(f"data set {name!r}: {e}; data.args are passed to it as keyword arguments") from e
        except ValueError:
            pass  # no signature to check
        return dataset_from(obj(**args), name)

    return load


DATASETS.check = _outside_loader


def load_dataset(name: str, data_dir: str | None = None, **kwargs: Any) -> ArrayDataset:
    """Load the registered data set ``name``.

    ``data_dir`` overrides where a data set looks for its files (Fashion-MNIST) or keeps its cache
    (MNIST-1D); data sets that need no files ignore it. Extra keyword arguments go to the loader.
    Unknown names raise :class:`~tricklab.errors.UnknownNameError` with the closest registered names.
    """
    loader = DATASETS.get(name)
    return loader(data_dir=data_dir, **kwargs)
