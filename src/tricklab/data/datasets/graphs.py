"""Graph data sets: the :class:`GraphDataset` container, Zachary's karate club and ``synthetic-graphs``.

:class:`ArrayDataset` holds one tensor per split, which does not fit graphs: a node-classification set is
one graph whose nodes are split by boolean masks, a graph-classification set is a list of small graphs split
by graph index. :class:`GraphDataset` covers both (``task="node"`` / ``task="graph"``) and is what the graph
factories in :data:`~tricklab.data.base.DATASETS` return; they keep the registry's calling convention
``f(data_dir=None, **kwargs)``.

* ``karate``: networkx's ``karate_club_graph()`` (Zachary 1977): 34 nodes, 78 undirected edges (156
  directed), identity one-hot features, label = the ``club`` attribute (``Mr. Hi`` 0, ``Officer`` 1), a
  seeded stratified split. networkx is imported only inside the loader.
* ``synthetic-graphs``: graph classification made by code with ``numpy.random.default_rng(seed)``: cycles,
  stars, bounded-degree trees and random graphs whose node counts come from the same range, so only the
  structure tells the classes apart. Features are constant ones (default) or a one-hot of the node degree.

See ``docs/data-graphs.md``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tricklab.data.base import DATASETS
from tricklab.data.graph import Graph
from tricklab.errors import DataError

__all__ = [
    "GraphDataset",
    "load_karate",
    "load_synthetic_graphs",
    "make_synthetic_graphs",
    "SYNTHETIC_GRAPH_CLASSES",
    "edges_to_index",
]

_NETWORKX_HINT = "pip install networkx"
SPLITS = ("train", "val", "test")
SYNTHETIC_GRAPH_CLASSES = ("cycle", "star", "tree", "random")


@dataclass
class GraphDataset:
    """A graph data set: one graph with node masks (``task="node"``) or many labelled graphs (``"graph"``).

    Attributes:
        name: registry name.
        graphs: the graphs; exactly one for a node task.
        num_classes: number of node (node task) or graph (graph task) classes.
        num_features: node feature width ``F`` (every graph's ``x`` is ``(N, F)``).
        task: ``"node"`` or ``"graph"``.
        splits: split name -> sorted int64 indices: node indices (node task, derived from the graph's masks
            when not given) or graph indices (graph task).
        class_names: optional names of the classes.
        meta: free-form facts (source folder, seed...) shown to the user, not part of the data.
    """

    name: str
    graphs: list[Graph]
    num_classes: int
    num_features: int
    task: str
    splits: dict[str, Tensor] = field(default_factory=dict)
    class_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in ("node", "graph"):
            raise ValueError(f"{self.name}: task must be 'node' or 'graph', got {self.task!r}")
        if not self.graphs:
            raise ValueError(f"{self.name}: a graph data set needs at least one graph")
        for i, g in enumerate(self.graphs):
            if g.x.shape[1] != self.num_features:
                raise ValueError(f"{self.name}: graph {i} has {g.x.shape[1]} features, expected {self.num_features}")
            if g.y is None:
                raise ValueError(f"{self.name}: graph {i} has no labels (y is None)")
        if self.task == "node":
            if len(self.graphs) != 1:
                raise ValueError(f"{self.name}: a node task holds exactly one graph, got {len(self.graphs)}")
            g = self.graphs[0]
            if g.y.shape != (g.num_nodes,):
                raise ValueError(f"{self.name}: node labels must have shape ({g.num_nodes},), got {tuple(g.y.shape)}")
            if not self.splits:
                self.splits = {k: m.nonzero().reshape(-1) for k, m in g.masks.items()}
            n = g.num_nodes
        else:
            for i, g in enumerate(self.graphs):
                if g.y.numel() != 1:
                    raise ValueError(f"{self.name}: graph {i} must hold one graph label, got shape {tuple(g.y.shape)}")
            n = len(self.graphs)
        for k, idx in self.splits.items():
            if idx.dtype != torch.int64 or idx.ndim != 1:
                raise ValueError(f"{self.name}: split {k!r} must be 1-D int64 indices")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise ValueError(f"{self.name}: split {k!r} has indices outside [0, {n})")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes")

    @property
    def graph(self) -> Graph:
        """The single graph of a node task (also the first graph of a graph task)."""
        return self.graphs[0]

    @property
    def num_graphs(self) -> int:
        return len(self.graphs)

    def split_graphs(self, split: str) -> list[Graph]:
        """The graphs of ``split`` (graph task only)."""
        if self.task != "graph":
            raise ValueError(f"{self.name} is a node task: use the graph's masks[{split!r}]")
        if split not in self.splits:
            raise KeyError(f"{self.name} has no split {split!r}; it has {sorted(self.splits)}")
        return [self.graphs[i] for i in self.splits[split].tolist()]

    def fingerprint(self) -> str:
        """SHA-256 over every graph's tensors (x, edge_index, y, masks) and the split indices.

        Like :meth:`ArrayDataset.fingerprint`, the name and metadata are left out: equal fingerprints mean
        bit-identical graphs and splits.
        """
        h = hashlib.sha256()

        def add(key: str, t: Tensor | None) -> None:
            h.update(key.encode())
            if t is None:
                h.update(b"<none>")
                return
            t = t.detach().to("cpu")
            t = (t.to_dense() if t.layout != torch.strided else t).contiguous()  # sparse x: as its dense values
            h.update(repr((tuple(t.shape), str(t.dtype))).encode())
            if t.dtype == torch.bool:
                t = t.to(torch.uint8)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())

        h.update(f"task={self.task};graphs={len(self.graphs)}".encode())
        for i, g in enumerate(self.graphs):
            add(f"g{i}.x", g.x)
            add(f"g{i}.edge_index", g.edge_index)
            add(f"g{i}.y", g.y)
            for k in sorted(g.masks):
                add(f"g{i}.mask.{k}", g.masks[k])
        for k in sorted(self.splits):
            add(f"split.{k}", self.splits[k])
        return h.hexdigest()

    def summary(self) -> str:
        """One line for logs."""
        sizes = ", ".join(f"{k} {int(v.numel())}" for k, v in self.splits.items())
        if self.task == "node":
            g = self.graph
            return (f"{self.name}: {g.num_nodes} nodes, {g.num_edges} directed edges, {self.num_features} "
                    f"features, {self.num_classes} classes; {sizes} nodes")
        return (f"{self.name}: {len(self.graphs)} graphs ({sizes}), {self.num_features} features, "
                f"{self.num_classes} classes")


def edges_to_index(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> Tensor:
    """Undirected, deduplicated, self-loop-free edge index sorted by (source, target).

    Both directions of every pair are kept; duplicate pairs and ``i -> i`` loops are dropped.
    """
    src = np.asarray(src, dtype=np.int64).reshape(-1)
    dst = np.asarray(dst, dtype=np.int64).reshape(-1)
    s = np.concatenate([src, dst])
    d = np.concatenate([dst, src])
    keep = s != d
    key = np.unique(s[keep] * num_nodes + d[keep])  # sorted by (source, target)
    return torch.from_numpy(np.stack([key // num_nodes, key % num_nodes])).to(torch.int64)


def _stratified_split(labels: np.ndarray, counts: dict[str, int], seed: int) -> dict[str, Tensor]:
    """Per class, shuffle its indices with ``default_rng(seed)`` and cut them into consecutive splits of
    ``counts[split]`` per class; a count of -1 takes the rest."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in counts}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, n in counts.items():
            end = len(idx) if n < 0 else start + n
            if end > len(idx):
                raise ValueError(f"class {int(c)} has {len(idx)} samples, too few for the split {counts}")
            out[k].append(idx[start:end])
            start = end
    return {k: torch.from_numpy(np.sort(np.concatenate(v))).to(torch.int64) for k, v in out.items()}


def _masks(num_nodes: int, splits: dict[str, Tensor]) -> dict[str, Tensor]:
    masks = {}
    for k, idx in splits.items():
        m = torch.zeros(num_nodes, dtype=torch.bool)
        m[idx] = True
        masks[k] = m
    return masks


# -- karate ------------------------------------------------------------------------------------------------


@DATASETS.register("karate", summary="Zachary's karate club (networkx): 34 nodes, 2 clubs, node classification")
def load_karate(data_dir: str | None = None, *, seed: int = 0, train_per_class: int = 4,
                val_per_class: int = 3) -> GraphDataset:
    """Karate club as a node-classification :class:`GraphDataset` (``data_dir`` is ignored).

    Features are the 34x34 identity; labels the ``club`` attribute (0 ``Mr. Hi``, 1 ``Officer``). The split
    is stratified and seeded: ``train_per_class`` and ``val_per_class`` nodes of each club, the rest test
    (defaults 8/6/20).
    """
    del data_dir
    try:
        import networkx as nx
    except ImportError as exc:
        raise DataError(f"the karate club graph comes from networkx, which cannot be imported ({exc}): "
                        f"{_NETWORKX_HINT}") from exc
    g = nx.karate_club_graph()
    nodes = sorted(g.nodes())
    if nodes != list(range(len(nodes))):
        raise DataError(f"networkx karate_club_graph has unexpected node ids {nodes[:5]}...")
    clubs = ["Mr. Hi", "Officer"]
    labels = np.array([clubs.index(g.nodes[v]["club"]) for v in nodes], dtype=np.int64)
    src, dst = (np.array(a, dtype=np.int64) for a in zip(*g.edges(), strict=True))
    n = len(nodes)
    splits = _stratified_split(labels, {"train": train_per_class, "val": val_per_class, "test": -1}, seed)
    graph = Graph(x=torch.eye(n), edge_index=edges_to_index(src, dst, n), y=torch.from_numpy(labels),
                  masks=_masks(n, splits))
    return GraphDataset(name="karate", graphs=[graph], num_classes=2, num_features=n, task="node",
                        splits=splits, class_names=clubs,
                        meta={"source": f"networkx {nx.__version__} karate_club_graph()", "seed": seed})


# -- synthetic graph classification -----------------------------------------------------------------------


def _structure(kind: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Edge endpoint arrays (one direction) of a graph of class ``kind`` on ``n`` nodes."""
    if kind == "cycle":
        src = np.arange(n)
        return src, (src + 1) % n
    if kind == "star":
        return np.zeros(n - 1, dtype=np.int64), np.arange(1, n)
    if kind == "tree":
        # Random recursive tree with degree <= 3: node i attaches to a random earlier node that has room.
        deg = np.zeros(n, dtype=np.int64)
        src, dst = [], []
        for i in range(1, n):
            parent = int(rng.choice(np.flatnonzero(deg[:i] < 3)))
            src.append(parent)
            dst.append(i)
            deg[parent] += 1
            deg[i] += 1
        return np.array(src), np.array(dst)
    if kind == "random":
        # G(n, m) with m = 1.5 n distinct pairs: more edges than nodes and an irregular degree sequence.
        pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
        pick = rng.choice(len(pairs), size=min(len(pairs), (3 * n) // 2), replace=False)
        return pairs[pick, 0], pairs[pick, 1]
    raise ValueError(f"unknown synthetic graph class {kind!r}; known: {SYNTHETIC_GRAPH_CLASSES}")


def make_synthetic_graphs(num_graphs: int = 600, num_classes: int = 4, *, seed: int = 0, min_nodes: int = 10,
                          max_nodes: int = 20, features: str = "constant", max_degree: int = 10
                          ) -> tuple[list[Graph], np.ndarray]:
    """``num_graphs`` graphs of the first ``num_classes`` of :data:`SYNTHETIC_GRAPH_CLASSES`, balanced
    (class ``i % num_classes`` for graph ``i``), node count uniform in ``[min_nodes, max_nodes]`` whatever the
    class, node ids randomly permuted. ``features``: ``"constant"`` (one feature, all ones) or ``"degree"``
    (one-hot of ``min(degree, max_degree)``, width ``max_degree + 1``). Returns the graphs and the labels.
    """
    if not 2 <= num_classes <= len(SYNTHETIC_GRAPH_CLASSES):
        raise ValueError(f"num_classes must be in [2, {len(SYNTHETIC_GRAPH_CLASSES)}], got {num_classes}")
    if features not in ("constant", "degree"):
        raise ValueError(f"features must be 'constant' or 'degree', got {features!r}")
    if not 4 <= min_nodes <= max_nodes:
        raise ValueError(f"need 4 <= min_nodes <= max_nodes, got {min_nodes}, {max_nodes}")
    rng = np.random.default_rng(seed)
    labels = np.arange(num_graphs, dtype=np.int64) % num_classes
    graphs = []
    for label in labels:
        n = int(rng.integers(min_nodes, max_nodes + 1))
        src, dst = _structure(SYNTHETIC_GRAPH_CLASSES[label], n, rng)
        perm = rng.permutation(n)  # so node ids carry no class information
        edge_index = edges_to_index(perm[src], perm[dst], n)
        if features == "constant":
            x = torch.ones(n, 1)
        else:
            deg = torch.bincount(edge_index[0], minlength=n).clamp_(max=max_degree)
            x = torch.nn.functional.one_hot(deg, max_degree + 1).to(torch.float32)
        graphs.append(Graph(x=x, edge_index=edge_index, y=torch.tensor([int(label)], dtype=torch.int64)))
    return graphs, labels


@DATASETS.register(
    "synthetic-graphs",
    summary="code-made graph classification: 600 cycles/stars/trees/random graphs, told apart by structure only",
)
def load_synthetic_graphs(data_dir: str | None = None, *, num_graphs: int = 600, num_classes: int = 4,
                          seed: int = 0, features: str = "constant", val_fraction: float = 0.1,
                          test_fraction: float = 0.1, min_nodes: int = 10, max_nodes: int = 20) -> GraphDataset:
    """``synthetic-graphs`` as a graph-classification :class:`GraphDataset` (``data_dir`` is ignored).

    The split is stratified per class and seeded (``seed + 1`` so it is independent of the generation
    stream): ``round(val_fraction * per_class)`` val and ``round(test_fraction * per_class)`` test graphs of
    each class, the rest train (480/60/60 by default).
    """
    del data_dir
    if num_graphs < 10 * num_classes:
        raise ValueError(f"num_graphs must be at least 10 per class ({10 * num_classes}), got {num_graphs}")
    graphs, labels = make_synthetic_graphs(num_graphs, num_classes, seed=seed, features=features,
                                           min_nodes=min_nodes, max_nodes=max_nodes)
    per_class = num_graphs // num_classes
    n_val, n_test = round(val_fraction * per_class), round(test_fraction * per_class)
    splits = _stratified_split(labels, {"test": n_test, "val": n_val, "train": -1}, seed + 1)
    splits = {k: splits[k] for k in SPLITS}
    return GraphDataset(name="synthetic-graphs", graphs=graphs, num_classes=num_classes,
                        num_features=int(graphs[0].x.shape[1]), task="graph", splits=splits,
                        class_names=list(SYNTHETIC_GRAPH_CLASSES[:num_classes]),
                        meta={"seed": seed, "features": features, "nodes": (min_nodes, max_nodes)})
