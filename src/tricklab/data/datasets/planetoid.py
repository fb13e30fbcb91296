"""Planetoid citation graphs (Cora, CiteSeer, PubMed) from the raw ``ind.<name>.*`` files.

The format (Yang, Cohen & Salakhutdinov 2016, as shipped with Kipf & Welling's GCN code) is eight files:
``x``, ``tx``, ``allx`` (scipy csr feature matrices of the labelled training nodes, the test nodes and all
non-test nodes), ``y``, ``ty``, ``ally`` (the matching one-hot label arrays), ``graph`` (a
``defaultdict(list)`` node -> neighbour list) and ``test.index`` (one test node id per line, text). All but
the last are Python 2 pickles.

Pickles can run arbitrary code, so they are never read with ``pickle.load``: :class:`RestrictedUnpickler`
admits only the globals these files reference (listed with ``pickletools``) and raises :class:`DataError`
for any other. The csr global is not scipy's class but :class:`CsrState`, a plain holder of the pickled
``data``/``indices``/``indptr``/``_shape``: no scipy code runs, and scipy is not needed.

The split is Kipf's ``load_data``: node ``test.index[i]`` gets ``tx[i]``/``ty[i]``, nodes ``0..len(allx)-1``
get ``allx``/``ally``; test ids missing from the file inside the test range (CiteSeer's isolated nodes) keep
zero features and an all-zero label row; train = ``range(len(y))``, val = ``range(len(y), len(y) + 500)``,
test = the sorted test ids. See ``docs/data-graphs.md``.
"""

from __future__ import annotations

import io
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tricklab.data.base import DATASETS
from tricklab.data.datasets.graphs import GraphDataset, edges_to_index
from tricklab.data.graph import Graph
from tricklab.errors import DataError

__all__ = [
    "load_planetoid",
    "load_cora",
    "load_planetoid_dataset",
    "read_planetoid_pickle",
    "RestrictedUnpickler",
    "CsrState",
    "DEFAULT_DIR",
    "PLANETOID_FILES",
    "NUM_VAL",
]

# The project keeps a copy of Cora's raw files in shared/data/planetoid beside the checkout; an installed
# package looks there (relative to this source tree), then at $TRICKLAB_PLANETOID_DIR.
DEFAULT_DIR = Path(__file__).resolve().parents[4].parent / "shared" / "data" / "planetoid"


def default_dirs() -> list[Path]:
    """Where a Planetoid folder is looked for when none is given, in order."""
    import os

    dirs = [Path(os.environ["TRICKLAB_PLANETOID_DIR"])] if os.environ.get("TRICKLAB_PLANETOID_DIR") else []
    return dirs + [DEFAULT_DIR, Path("/work/shared/data/planetoid")]
PLANETOID_FILES = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
NUM_VAL = 500


class CsrState:
    """Stand-in for ``scipy.sparse.csr_matrix`` inside a Planetoid pickle: it only keeps the pickled state.

    The pickle creates it with ``NEWOBJ`` (no arguments) and fills it with ``BUILD`` (a dict); only the
    four arrays that define a csr matrix are kept and :meth:`toarray` rebuilds the dense matrix with numpy.
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"csr_matrix state must be a dict, got {type(state).__name__}")
        try:
            self.data = state["data"]
            self.indices = state["indices"]
            self.indptr = state["indptr"]
            shape = state["_shape"] if "_shape" in state else state["shape"]
        except KeyError as exc:
            raise pickle.UnpicklingError(f"csr_matrix state lacks {exc}") from None
        self.shape = (int(shape[0]), int(shape[1]))

    def coo(self, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, column, value) of every stored entry, after checking that the arrays form a valid csr matrix
        (duplicate entries are kept: they add up, as in scipy)."""
        rows, cols = self.shape
        data, indices, indptr = (np.asarray(a) for a in (self.data, self.indices, self.indptr))
        if indptr.shape != (rows + 1,) or indices.shape != data.shape or int(indptr[-1]) != data.shape[0]:
            raise ValueError(f"inconsistent csr arrays for shape {self.shape}: indptr {indptr.shape}, "
                             f"indices {indices.shape}, data {data.shape}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= cols):
            raise ValueError(f"csr column index outside [0, {cols})")
        if np.any(np.diff(indptr) < 0):
            raise ValueError("csr indptr is not non-decreasing")
        row = np.repeat(np.arange(rows, dtype=np.int64), np.diff(indptr))
        return row, indices.astype(np.int64), data.astype(dtype)

    def toarray(self, dtype: Any = np.float32) -> np.ndarray:
        row, col, val = self.coo(dtype)
        out = np.zeros(self.shape, dtype=dtype)
        np.add.at(out, (row, col), val)  # add: duplicates sum, as in scipy
        return out


def _np_reconstruct() -> Any:
    try:  # numpy >= 2; importing numpy.core there warns that it is deprecated
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _safe_dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for the pickle, refusing object dtypes (an object array would unpickle arbitrary
    objects as its elements; the format only holds numbers)."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise pickle.UnpicklingError(f"object dtype {dt} is not allowed in a Planetoid file")
    return dt


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _np_reconstruct()
    return {
        # numpy arrays: _reconstruct(ndarray, (0,), b'b') then ndarray.__setstate__ with the raw bytes
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _safe_dtype,
        # feature matrices, under the module paths scipy has used for the class
        ("scipy.sparse.csr", "csr_matrix"): CsrState,
        ("scipy.sparse._csr", "csr_matrix"): CsrState,
        ("scipy.sparse", "csr_matrix"): CsrState,
        # the adjacency dict: defaultdict(list); Python 2 names __builtin__, Python 3 builtins
        ("collections", "defaultdict"): defaultdict,
        ("__builtin__", "list"): list,
        ("builtins", "list"): list,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of the Planetoid format; anything else is refused.

    :meth:`find_class` is the only way a pickle reaches code, so refusing there stops a hostile file before
    any of its calls (``REDUCE``/``NEWOBJ``/``BUILD``) can run. ``encoding="latin1"`` decodes Python 2 byte
    strings so numpy gets its raw array bytes back.
    """

    def __init__(self, file: Any, *, source: str = "<pickle>") -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.source}: refused to unpickle global {module}.{name}; a Planetoid file may only reference "
                f"{', '.join(sorted({f'{m}.{n}' for m, n in self._allowed}))}. The file is not a Planetoid file or "
                "has been tampered with; nothing in it was run"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.source}: refused persistent id {pid!r} (not used by the Planetoid format)")


def read_planetoid_pickle(path: str | Path) -> Any:
    """Unpickle one Planetoid file with :class:`RestrictedUnpickler`; read or format errors raise DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"Planetoid file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    try:
        return RestrictedUnpickler(io.BytesIO(raw), source=str(path)).load()
    except DataError:
        raise
    except Exception as exc:  # a truncated or malformed pickle can fail in many ways
        raise DataError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from exc


def _features(obj: Any, path: Path) -> tuple[tuple[int, int], np.ndarray, np.ndarray, np.ndarray]:
    """(shape, row, column, value) of a feature matrix file: a csr matrix, or a dense 2-D numeric array."""
    try:
        if isinstance(obj, CsrState):
            return (obj.shape, *obj.coo(np.float32))
        if isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype.kind in "biuf":
            row, col = np.nonzero(obj)
            return (obj.shape, row.astype(np.int64), col.astype(np.int64), obj[row, col].astype(np.float32))
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from exc
    raise DataError(f"{path}: expected a csr matrix or a 2-D numeric array, got {type(obj).__name__}")


def _labels(obj: Any, path: Path) -> np.ndarray:
    if not (isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype.kind in "biuf"):
        raise DataError(f"{path}: expected a 2-D one-hot label array, got {type(obj).__name__} "
                        f"{getattr(obj, 'shape', '')}")
    return obj


def _missing_message(folder: Path, what: str) -> str:
    return (f"Planetoid data not found in {folder}: {what}. Point --data-dir (recipe key data.data_dir) to a folder "
            f"holding ind.<name>.{{{','.join(PLANETOID_FILES)}}} (the raw files of Kipf's GCN repository).")


def load_planetoid(folder: str | Path, name: str = "cora", *, normalize_features: bool = True,
                   sparse_features: bool = True) -> Graph:
    """Read ``ind.<name>.*`` from ``folder`` into a :class:`Graph` with Kipf's standard split.

    Returns ``x`` (N, F) float32 (row-normalised so each non-zero row sums to 1 when ``normalize_features``),
    ``edge_index`` (2, E) undirected without duplicates or self loops, sorted by (source, target), ``y`` (N,)
    int64 = argmax of the one-hot rows, and ``masks`` ``train``/``val``/``test``. ``x`` is a coalesced sparse COO
    tensor (the files store it as csr; bag-of-words rows are 1-2% non-zero), or dense with
    ``sparse_features=False`` (the same values). Missing files, refused pickle globals and inconsistent shapes
    raise :class:`DataError`.
    """
    return _read_planetoid(folder, name, normalize_features, sparse_features)[0]


def _read_planetoid(folder: str | Path, name: str, normalize_features: bool,
                    sparse_features: bool = True) -> tuple[Graph, dict[str, Any]]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(_missing_message(folder, "the folder does not exist"))
    paths = {k: folder / f"ind.{name}.{k}" for k in PLANETOID_FILES}
    for k, p in paths.items():
        if not p.is_file():
            raise DataError(_missing_message(folder, f"file {p.name} is missing"))

    x = _features(read_planetoid_pickle(paths["x"]), paths["x"])
    tx = _features(read_planetoid_pickle(paths["tx"]), paths["tx"])
    allx = _features(read_planetoid_pickle(paths["allx"]), paths["allx"])
    y = _labels(read_planetoid_pickle(paths["y"]), paths["y"])
    ty = _labels(read_planetoid_pickle(paths["ty"]), paths["ty"])
    ally = _labels(read_planetoid_pickle(paths["ally"]), paths["ally"])
    adj = read_planetoid_pickle(paths["graph"])
    try:
        test_index = np.array([int(line) for line in paths["test.index"].read_text().split()], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{paths['test.index']}: expected one integer node id per line ({exc})") from exc

    num_features = allx[0][1]
    num_classes = ally.shape[1]
    for key, width_of, width in (("x", x[0][1], num_features), ("tx", tx[0][1], num_features),
                                 ("y", y.shape[1], num_classes), ("ty", ty.shape[1], num_classes)):
        if width_of != width:
            raise DataError(f"{paths[key]}: {width_of} columns, but allx/ally have {width}")
    n_x, n_tx, n_allx = x[0][0], tx[0][0], allx[0][0]
    if n_allx != len(ally) or n_tx != len(ty) or n_x != len(y):
        raise DataError(f"{folder}: row counts disagree: allx {n_allx}/ally {len(ally)}, tx {n_tx}/"
                        f"ty {len(ty)}, x {n_x}/y {len(y)}")
    if len(test_index) != n_tx or len(np.unique(test_index)) != len(test_index):
        raise DataError(f"{paths['test.index']}: {len(test_index)} ids ({len(np.unique(test_index))} distinct) "
                        f"for {n_tx} rows of tx")
    if len(test_index) and int(test_index.min()) < n_allx:
        raise DataError(f"{paths['test.index']}: test node {int(test_index.min())} collides with the {n_allx} "
                        "allx rows (test ids must come after them)")
    n_train = len(y)
    if n_train + NUM_VAL > n_allx:
        raise DataError(f"{folder}: {n_allx} allx rows cannot hold {n_train} train + {NUM_VAL} val nodes")

    # Kipf: features = vstack(allx, tx) (tx padded to the test id range for CiteSeer), then row
    # test_index[i] <- tx[i]. Written directly as entries: allx row r is node r, tx row i is node test_index[i];
    # the nodes in between that no file row names stay empty.
    num_nodes = max(n_allx, int(test_index.max()) + 1 if len(test_index) else 0)
    rows = np.concatenate([allx[1], test_index[tx[1]]])
    cols = np.concatenate([allx[2], tx[2]])
    vals = np.concatenate([allx[3], tx[3]])
    onehot = np.zeros((num_nodes, num_classes), dtype=np.float64)
    onehot[:n_allx] = ally
    onehot[test_index] = ty
    labels = onehot.argmax(1).astype(np.int64)
    unlabelled = int((onehot.sum(1) == 0).sum())

    if not isinstance(adj, dict):
        raise DataError(f"{paths['graph']}: expected a dict of adjacency lists, got {type(adj).__name__}")
    src_list, dst_list = [], []
    for node, nbrs in adj.items():
        if not isinstance(node, int) or not isinstance(nbrs, list) or not all(isinstance(v, int) for v in nbrs):
            raise DataError(f"{paths['graph']}: entry {node!r} is not an int -> list of ints")
        src_list.extend([node] * len(nbrs))
        dst_list.extend(nbrs)
    src, dst = np.array(src_list, dtype=np.int64), np.array(dst_list, dtype=np.int64)
    ends = np.concatenate([src, dst, np.array(list(adj), dtype=np.int64)])
    if ends.size and (int(ends.min()) < 0 or int(ends.max()) >= num_nodes):
        raise DataError(f"{paths['graph']}: node ids outside [0, {num_nodes}) (the feature rows)")
    edge_index = edges_to_index(src, dst, num_nodes)

    # duplicate entries add up (as in scipy and the dense assembly); entries sorted by (row, column)
    features = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals),
                                       (num_nodes, num_features), check_invariants=True).coalesce()
    if normalize_features:
        # Kipf's preprocess_features: D^-1 X with 1/0 -> 0 for empty rows. Done in float64 on the non-zeros, like
        # scipy there (a sum over the stored values: the zeros add nothing).
        r, v = features.indices()[0], features.values().double()
        rowsum = torch.zeros(num_nodes, dtype=torch.float64).index_add_(0, r, v)
        inv = torch.where(rowsum > 0, 1.0 / torch.where(rowsum > 0, rowsum, 1.0), 0.0)
        features = torch.sparse_coo_tensor(features.indices(), (v * inv[r]).float(), features.shape,
                                           is_coalesced=True, check_invariants=False)
    if not sparse_features:
        features = features.to_dense()

    masks = {k: torch.zeros(num_nodes, dtype=torch.bool) for k in ("train", "val", "test")}
    masks["train"][:n_train] = True
    masks["val"][n_train:n_train + NUM_VAL] = True
    masks["test"][torch.from_numpy(np.sort(test_index))] = True
    graph = Graph(x=features, edge_index=edge_index, y=torch.from_numpy(labels), masks=masks)
    return graph, {"unlabelled_nodes": unlabelled}


def _resolve_folder(data_dir: str | None, name: str) -> Path:
    if data_dir:
        return Path(data_dir).expanduser()
    for d in default_dirs():
        if (d / f"ind.{name}.x").is_file():
            return d
    raise DataError(f"no Planetoid folder given and none of {[str(d) for d in default_dirs()]} holds "
                    f"ind.{name}.* files: pass --data-dir DIR (recipe key data.data_dir=DIR) naming a folder with "
                    f"the ind.{name}.* files")


def _dataset(name: str, folder: Path, normalize_features: bool, sparse_features: bool) -> GraphDataset:
    graph, info = _read_planetoid(folder, name, normalize_features, sparse_features)
    meta = {"source": str(folder), "normalize_features": normalize_features, "sparse_features": sparse_features,
            **info}
    num_classes = int(graph.y.max()) + 1
    return GraphDataset(name=name, graphs=[graph], num_classes=num_classes, num_features=int(graph.x.shape[1]),
                        task="node", meta=meta)


@DATASETS.register("cora", summary="Cora citation graph (Planetoid files): 2708 nodes, 1433 features, 7 classes")
def load_cora(data_dir: str | None = None, *, normalize_features: bool = True,
              sparse_features: bool = True) -> GraphDataset:
    """Cora as a node-classification :class:`GraphDataset` with the 140/500/1000 Planetoid split.

    Files ``ind.cora.*`` from ``data_dir`` or :data:`DEFAULT_DIR`. Features sparse unless ``sparse_features=False``.
    """
    return _dataset("cora", _resolve_folder(data_dir, "cora"), normalize_features, sparse_features)


@DATASETS.register("planetoid", summary="any Planetoid citation graph (dataset=cora|citeseer|pubmed) from ind.* files")
def load_planetoid_dataset(data_dir: str | None = None, *, dataset: str = "cora",
                           normalize_features: bool = True, sparse_features: bool = True) -> GraphDataset:
    """The Planetoid set ``ind.<dataset>.*`` in ``data_dir`` (default :data:`DEFAULT_DIR`).

    The keyword is ``dataset``, not ``name``: ``load_dataset(name, ...)`` already uses ``name``.
    """
    return _dataset(dataset, _resolve_folder(data_dir, dataset), normalize_features, sparse_features)


# ------------------------------------------------------------------------------------------- code-made sets
#: CiteSeer's shape (Yang et al. 2016; Kipf & Welling 2017 Table 1; torch_geometric's Planetoid('CiteSeer')):
#: 3327 nodes, 3703 binary word features with 105,165 non-zeros (31.6 words per node, density 0.85%),
#: 4552 undirected edges, 6 classes, 120 training nodes (20 per class), 500 validation, 1000 test.
CITESEER_SHAPE: dict[str, Any] = {"num_nodes": 3327, "num_features": 3703, "words_per_node": 105165 / 3327,
                                  "num_edges": 4552, "num_classes": 6, "train_per_class": 20, "num_test": 1000}


def write_planetoid_like(
    folder: str | Path,
    name: str = "citeseer-like",
    *,
    num_nodes: int = CITESEER_SHAPE["num_nodes"],
    num_features: int = CITESEER_SHAPE["num_features"],
    words_per_node: float = CITESEER_SHAPE["words_per_node"],
    num_edges: int = CITESEER_SHAPE["num_edges"],
    num_classes: int = CITESEER_SHAPE["num_classes"],
    train_per_class: int = CITESEER_SHAPE["train_per_class"],
    num_test: int = CITESEER_SHAPE["num_test"],
    homophily: float = 0.75,
    topic_fraction: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write a code-made citation-like graph as Planetoid files ``ind.<name>.*`` into ``folder``; return it.

    CiteSeer's shape by default (:data:`CITESEER_SHAPE`), for measuring on a set of that size where the real
    files are not on disk. Seeded (``numpy.random.default_rng(seed)``):

    * labels uniform over ``num_classes``;
    * binary bag-of-words rows: each node draws Poisson(``words_per_node``) distinct words (at least one), each
      from its class's topic words (a disjoint 1/num_classes of the vocabulary) with probability
      ``topic_fraction``, else from a Zipf-like distribution (weight 1/rank^0.8) over the whole vocabulary;
    * ``num_edges`` distinct undirected edges without loops, the second end in the first's class with
      probability ``homophily``;
    * the Planetoid layout: ``train_per_class`` training nodes per class are rows 0.. of ``x``/``allx``, the next
      500 the validation nodes, ``num_test`` test nodes after all ``allx`` rows, listed in ``test.index`` in a
      shuffled order (as in the real files); csr features and one-hot labels pickled (protocol 3, bytes as
      bytes) with scipy's ``csr_matrix``, the graph as a ``defaultdict(list)``.

    Needs scipy (the ``data`` extra) to write csr matrices; reading them back does not.
    """
    try:
        import scipy.sparse as sp
    except ImportError as exc:  # pragma: no cover - scipy is in the data extra
        raise DataError("writing Planetoid files needs scipy: pip install 'tricklab[data]'") from exc
    n, f, c = int(num_nodes), int(num_features), int(num_classes)
    n_train = c * int(train_per_class)
    if n - num_test < n_train + NUM_VAL:
        raise DataError(f"{n} nodes cannot hold {n_train} train + {NUM_VAL} val + {num_test} test nodes")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    if np.bincount(labels, minlength=c).min() < train_per_class:
        raise DataError(f"a class has fewer than {train_per_class} nodes: use more nodes or fewer classes")

    topics = np.array_split(rng.permutation(f), c)
    base = 1.0 / np.arange(1, f + 1) ** 0.8
    base = base[np.argsort(rng.permutation(f))]  # Zipf weights in a random word order
    base /= base.sum()
    probs = []
    for k in range(c):
        p = (1.0 - topic_fraction) * base
        p[topics[k]] += topic_fraction / len(topics[k])
        probs.append(p / p.sum())
    counts = np.clip(rng.poisson(words_per_node, n), 1, f)
    rows = np.repeat(np.arange(n), counts)
    cols = np.concatenate([rng.choice(f, size=int(counts[i]), replace=False, p=probs[labels[i]]) for i in range(n)])
    features = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, f))

    by_class = [np.flatnonzero(labels == k) for k in range(c)]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < num_edges:
        u = int(rng.integers(n))
        same = by_class[labels[u]]
        v = int(same[rng.integers(len(same))]) if rng.random() < homophily else int(rng.integers(n))
        if u != v:
            pairs.add((min(u, v), max(u, v)))

    # the Planetoid order: training nodes first (20 per class), then the other non-test nodes (the first 500 of
    # them are the validation nodes), then the test nodes
    train = np.concatenate([rng.choice(by_class[k], train_per_class, replace=False) for k in range(c)])
    rest = rng.permutation(np.setdiff1d(np.arange(n), train))
    order = np.concatenate([rng.permutation(train), rest])  # new id -> old id
    new_id = np.empty(n, dtype=np.int64)
    new_id[order] = np.arange(n)
    features, labels = features[order], labels[order]
    onehot = np.eye(c, dtype=np.int32)[labels]
    n_allx = n - num_test
    test_index = rng.permutation(np.arange(n_allx, n))
    graph: defaultdict[int, list[int]] = defaultdict(list)
    for i in range(n):
        graph[i] = []
    for u, v in pairs:
        a, b = int(new_id[u]), int(new_id[v])
        graph[a].append(b)
        graph[b].append(a)

    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"x": features[:n_train], "y": onehot[:n_train], "allx": features[:n_allx], "ally": onehot[:n_allx],
             "tx": features[test_index], "ty": onehot[test_index], "graph": graph}
    for key, obj in parts.items():
        (folder / f"ind.{name}.{key}").write_bytes(pickle.dumps(obj, protocol=3))
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in test_index))
    return folder


__all__ += ["CITESEER_SHAPE", "write_planetoid_like"]
