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

    def toarray(self, dtype: Any = np.float32) -> np.ndarray:
        rows, cols = self.shape
        data, indices, indptr = (np.asarray(a) for a in (self.data, self.indices, self.indptr))
        if indptr.shape != (rows + 1,) or indices.shape != data.shape or int(indptr[-1]) != data.shape[0]:
            raise ValueError(f"inconsistent csr arrays for shape {self.shape}: indptr {indptr.shape}, "
                             f"indices {indices.shape}, data {data.shape}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= cols):
            raise ValueError(f"csr column index outside [0, {cols})")
        if np.any(np.diff(indptr) < 0):
            raise ValueError("csr indptr is not non-decreasing")
        out = np.zeros(self.shape, dtype=dtype)
        row = np.repeat(np.arange(rows), np.diff(indptr))
        np.add.at(out, (row, indices.astype(np.int64)), data.astype(dtype))  # add: duplicates sum, as in scipy
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


def _features(obj: Any, path: Path) -> np.ndarray:
    try:
        if isinstance(obj, CsrState):
            return obj.toarray(np.float32)
        if isinstance(obj, np.ndarray) and obj.ndim == 2 and obj.dtype.kind in "biuf":
            return obj.astype(np.float32)
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


def load_planetoid(folder: str | Path, name: str = "cora", *, normalize_features: bool = True) -> Graph:
    """Read ``ind.<name>.*`` from ``folder`` into a :class:`Graph` with Kipf's standard split.

    Returns ``x`` (N, F) float32 (row-normalised so each non-zero row sums to 1 when ``normalize_features``),
    ``edge_index`` (2, E) undirected without duplicates or self loops, sorted by (source, target), ``y`` (N,)
    int64 = argmax of the one-hot rows, and ``masks`` ``train``/``val``/``test``. Missing files, refused
    pickle globals and inconsistent shapes raise :class:`DataError`.
    """
    return _read_planetoid(folder, name, normalize_features)[0]


def _read_planetoid(folder: str | Path, name: str, normalize_features: bool) -> tuple[Graph, dict[str, Any]]:
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

    num_features = allx.shape[1]
    num_classes = ally.shape[1]
    for key, arr, width in (("x", x, num_features), ("tx", tx, num_features), ("y", y, num_classes),
                            ("ty", ty, num_classes)):
        if arr.shape[1] != width:
            raise DataError(f"{paths[key]}: {arr.shape[1]} columns, but allx/ally have {width}")
    if len(allx) != len(ally) or len(tx) != len(ty) or len(x) != len(y):
        raise DataError(f"{folder}: row counts disagree: allx {len(allx)}/ally {len(ally)}, tx {len(tx)}/"
                        f"ty {len(ty)}, x {len(x)}/y {len(y)}")
    if len(test_index) != len(tx) or len(np.unique(test_index)) != len(test_index):
        raise DataError(f"{paths['test.index']}: {len(test_index)} ids ({len(np.unique(test_index))} distinct) "
                        f"for {len(tx)} rows of tx")
    if len(test_index) and int(test_index.min()) < len(allx):
        raise DataError(f"{paths['test.index']}: test node {int(test_index.min())} collides with the {len(allx)} "
                        "allx rows (test ids must come after them)")
    n_train, n_allx = len(y), len(allx)
    if n_train + NUM_VAL > n_allx:
        raise DataError(f"{folder}: {n_allx} allx rows cannot hold {n_train} train + {NUM_VAL} val nodes")

    # Kipf: features = vstack(allx, tx) (tx padded to the test id range for CiteSeer), then row
    # test_index[i] <- tx[i]. Written directly: the nodes in between that no file row names stay zero.
    num_nodes = max(n_allx, int(test_index.max()) + 1 if len(test_index) else 0)
    features = np.zeros((num_nodes, num_features), dtype=np.float32)
    features[:n_allx] = allx
    features[test_index] = tx
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

    if normalize_features:
        # Kipf's preprocess_features: D^-1 X with 1/0 -> 0 for empty rows. Done in float64, like scipy there.
        rowsum = features.astype(np.float64).sum(1, keepdims=True)
        with np.errstate(divide="ignore"):
            inv = np.where(rowsum > 0, 1.0 / rowsum, 0.0)
        features = (features * inv).astype(np.float32)

    masks = {k: torch.zeros(num_nodes, dtype=torch.bool) for k in ("train", "val", "test")}
    masks["train"][:n_train] = True
    masks["val"][n_train:n_train + NUM_VAL] = True
    masks["test"][torch.from_numpy(np.sort(test_index))] = True
    graph = Graph(x=torch.from_numpy(features), edge_index=edge_index, y=torch.from_numpy(labels), masks=masks)
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


def _dataset(name: str, folder: Path, normalize_features: bool) -> GraphDataset:
    graph, info = _read_planetoid(folder, name, normalize_features)
    meta = {"source": str(folder), "normalize_features": normalize_features, **info}
    num_classes = int(graph.y.max()) + 1
    return GraphDataset(name=name, graphs=[graph], num_classes=num_classes, num_features=int(graph.x.shape[1]),
                        task="node", meta=meta)


@DATASETS.register("cora", summary="Cora citation graph (Planetoid files): 2708 nodes, 1433 features, 7 classes")
def load_cora(data_dir: str | None = None, *, normalize_features: bool = True) -> GraphDataset:
    """Cora as a node-classification :class:`GraphDataset` with the 140/500/1000 Planetoid split.

    Files ``ind.cora.*`` from ``data_dir`` or :data:`DEFAULT_DIR`.
    """
    return _dataset("cora", _resolve_folder(data_dir, "cora"), normalize_features)


@DATASETS.register("planetoid", summary="any Planetoid citation graph (dataset=cora|citeseer|pubmed) from ind.* files")
def load_planetoid_dataset(data_dir: str | None = None, *, dataset: str = "cora",
                           normalize_features: bool = True) -> GraphDataset:
    """The Planetoid set ``ind.<dataset>.*`` in ``data_dir`` (default :data:`DEFAULT_DIR`).

    The keyword is ``dataset``, not ``name``: ``load_dataset(name, ...)`` already uses ``name``.
    """
    return _dataset(dataset, _resolve_folder(data_dir, dataset), normalize_features)
