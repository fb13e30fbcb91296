"""Built-in data sets. Importing this package registers them in :data:`tricklab.data.base.DATASETS`.

Each module imports its optional dependency (mnist1d, scikit-learn) only inside the loader function, so
registering every data set costs nothing and a missing extra is reported only when that set is loaded.
"""

from __future__ import annotations

from tricklab.data.datasets.collage import DetectionDataset, load_fashion_collage
from tricklab.data.datasets.fashion_mnist import load_fashion_mnist, read_idx
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
    "load_breast_cancer",
    "load_cora",
    "load_digits",
    "load_fashion_collage",
    "load_fashion_mnist",
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
