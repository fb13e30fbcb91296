"""Tests for the Planetoid reader (tricklab.data.datasets.planetoid) and its restricted unpickler.

References: Cora's sizes (2708 nodes, 1433 features, 7 classes, split 140/500/1000) from Kipf & Welling
(2017) Table 1 and the GCN code's ``load_data``; 10556 directed edges = 5278 undirected pairs, as
torch_geometric's ``Planetoid('Cora')`` reports. torch_geometric's ``read_planetoid_data`` is the oracle for
the split, reordering and edges (its file reader is swapped for ours so no plain ``pickle.load`` runs);
scipy's ``csr_matrix`` is the oracle for the csr decoding.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.data import load_dataset
from tricklab.data.datasets import planetoid as pl
from tricklab.errors import DataError

# the project's copy of Cora (shared/data/planetoid beside the checkout); CI has it, so it never skips there
CORA_DIR = next((d for d in pl.default_dirs() if (d / "ind.cora.graph").is_file()), pl.DEFAULT_DIR)
pytestmark = pytest.mark.skipif(not (CORA_DIR / "ind.cora.graph").is_file() and not os.environ.get("CI"),
                                reason=f"no Cora files in {[str(d) for d in pl.default_dirs()]}")


@pytest.fixture(scope="module")
def cora() -> pl.GraphDataset:
    return load_dataset("cora")


@pytest.fixture()
def cora_copy(tmp_path: Path) -> Path:
    """A writable copy of the Cora folder."""
    folder = tmp_path / "planetoid"
    folder.mkdir()
    for name in pl.PLANETOID_FILES:
        (folder / f"ind.cora.{name}").write_bytes((CORA_DIR / f"ind.cora.{name}").read_bytes())
    return folder


def test_cora_sizes_split_and_edges(cora: pl.GraphDataset) -> None:
    g = cora.graph
    assert cora.task == "node" and cora.num_classes == 7 and cora.num_features == 1433
    assert g.x.shape == (2708, 1433) and g.x.dtype == torch.float32
    assert g.x.layout == torch.sparse_coo and g.x.is_coalesced() and g.x._nnz() == 49216  # 1.27% non-zero
    assert g.y.shape == (2708,) and g.y.dtype == torch.int64 and set(g.y.unique().tolist()) == set(range(7))
    masks = g.masks
    assert {k: int(m.sum()) for k, m in masks.items()} == {"train": 140, "val": 500, "test": 1000}
    assert not (masks["train"] & masks["val"]).any()
    assert not (masks["train"] & masks["test"]).any()
    assert not (masks["val"] & masks["test"]).any()
    assert masks["train"][:140].all() and masks["val"][140:640].all() and masks["test"][1708:].all()
    assert torch.equal(cora.splits["test"], torch.arange(1708, 2708))
    assert torch.bincount(g.y[masks["train"]]).tolist() == [20] * 7  # Planetoid: 20 labelled nodes per class

    ei = g.edge_index
    assert ei.shape == (2, 10556) and ei.dtype == torch.int64
    assert not (ei[0] == ei[1]).any()
    key = ei[0] * 2708 + ei[1]
    assert key.unique().numel() == 10556  # no duplicates
    assert torch.equal(key.sort().values, (ei[1] * 2708 + ei[0]).sort().values)  # symmetric
    assert torch.equal(key, key.sort().values)  # sorted by (source, target)

    # Kipf's row normalisation: every Cora node has at least one word, so every row sums to 1.
    assert torch.allclose(g.x.to_dense().sum(1), torch.ones(2708), atol=1e-5)
    assert cora.meta["unlabelled_nodes"] == 0
    assert cora.fingerprint() == load_dataset("planetoid", dataset="cora").fingerprint()


def test_cora_matches_torch_geometric(monkeypatch: pytest.MonkeyPatch) -> None:
    tg = pytest.importorskip("torch_geometric.io.planetoid")
    scipy_sparse = pytest.importorskip("scipy.sparse")

    def read_file(folder: str, prefix: str, name: str) -> object:
        # torch_geometric's reader uses plain pickle.load; ours is swapped in, converting via scipy.
        path = Path(folder) / f"ind.{prefix.lower()}.{name}"
        if name == "test.index":
            return torch.tensor([int(v) for v in path.read_text().split()])
        out = pl.read_planetoid_pickle(path)
        if name == "graph":
            return out
        if isinstance(out, pl.CsrState):
            out = scipy_sparse.csr_matrix((out.data, out.indices, out.indptr), shape=out.shape).toarray()
        return torch.from_numpy(np.asarray(out)).to(torch.float)

    monkeypatch.setattr(tg, "read_file", read_file)
    ref = tg.read_planetoid_data(str(CORA_DIR), "cora")
    raw = pl.load_planetoid(CORA_DIR, "cora", normalize_features=False)
    assert torch.equal(raw.x.to_dense(), ref.x)
    assert torch.equal(raw.y, ref.y)
    for k in ("train", "val", "test"):
        assert torch.equal(raw.masks[k], getattr(ref, f"{k}_mask"))
    n = raw.num_nodes
    ours = (raw.edge_index[0] * n + raw.edge_index[1]).sort().values
    theirs = (ref.edge_index[0] * n + ref.edge_index[1]).sort().values
    assert torch.equal(ours, theirs)
    # Row normalisation = torch_geometric's NormalizeFeatures on the raw features.
    normed = pl.load_planetoid(CORA_DIR, "cora").x.to_dense()
    assert torch.allclose(normed, ref.x / ref.x.sum(1, keepdim=True).clamp(min=1), atol=1e-7)


def test_csr_state_matches_scipy() -> None:
    scipy_sparse = pytest.importorskip("scipy.sparse")
    for name in ("x", "tx", "allx"):
        m = pl.read_planetoid_pickle(CORA_DIR / f"ind.cora.{name}")
        assert isinstance(m, pl.CsrState)
        ref = scipy_sparse.csr_matrix((m.data, m.indices, m.indptr), shape=m.shape).toarray()
        np.testing.assert_array_equal(m.toarray(ref.dtype), ref)
    assert pl.read_planetoid_pickle(CORA_DIR / "ind.cora.x").shape == (140, 1433)


def test_missing_folder_and_files(tmp_path: Path, cora_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="does not exist"):
        pl.load_planetoid(tmp_path / "nowhere")
    (cora_copy / "ind.cora.ty").unlink()
    with pytest.raises(DataError, match=r"ind\.cora\.ty is missing") as err:
        load_dataset("cora", data_dir=str(cora_copy))
    assert str(cora_copy) in str(err.value)
    with pytest.raises(DataError, match="ind.citeseer.x is missing"):
        load_dataset("planetoid", data_dir=str(CORA_DIR), dataset="citeseer")
    monkeypatch.setattr(pl, "default_dirs", lambda: [tmp_path / "absent"])
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cora")


def test_truncated_and_wrong_content(cora_copy: Path) -> None:
    x = cora_copy / "ind.cora.x"
    x.write_bytes((CORA_DIR / "ind.cora.x").read_bytes()[:500])
    with pytest.raises(DataError, match="cannot unpickle .*ind.cora.x"):
        pl.load_planetoid(cora_copy)
    x.write_bytes(pickle.dumps([1, 2, 3], protocol=2))  # only admitted globals, wrong type
    with pytest.raises(DataError, match="ind.cora.x: expected a csr matrix"):
        pl.load_planetoid(cora_copy)
    (cora_copy / "ind.cora.x").write_bytes((CORA_DIR / "ind.cora.x").read_bytes())
    (cora_copy / "ind.cora.test.index").write_text("1708\n1708\n")
    with pytest.raises(DataError, match="test.index"):
        pl.load_planetoid(cora_copy)


# -- the restricted unpickler refuses hostile files -------------------------------------------------------


class _Reduce:
    """Pickles as ``func(*args)``: what a hostile pickle does to run code on load."""

    def __init__(self, func: object, args: tuple) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (pickle bytes, the global that must be refused). Every payload would create ``marker``."""
    cmd = f"touch {marker}"
    return {
        # protocol 0 written by hand, as an attacker would
        "os.system-proto0": (f"cos\nsystem\n(S'{cmd}'\ntR.".encode(), "os.system"),
        "builtins.eval-proto0": (f"c__builtin__\neval\n(S'open({str(marker)!r}, \"w\").close()'\ntR.".encode(),
                                 "__builtin__.eval"),
        # made by pickle from __reduce__ (os.system pickles as posix.system on Linux)
        "posix.system": (pickle.dumps(_Reduce(os.system, (cmd,)), protocol=2), f"{os.system.__module__}.system"),
        "builtins.eval": (pickle.dumps(_Reduce(eval, (f"open({str(marker)!r}, 'w').close()",)), protocol=4),
                          "builtins.eval"),
        "subprocess.check_call": (pickle.dumps(_Reduce(subprocess.check_call, (["touch", str(marker)],)), protocol=4),
                                  "subprocess.check_call"),
        "subprocess.Popen": (pickle.dumps(_Reduce(subprocess.Popen, (["touch", str(marker)],)), protocol=3),
                             "subprocess.Popen"),
        # hidden after admitted numpy globals: refused when reached, before its REDUCE runs
        "after-numpy": (pickle.dumps([np.zeros(3), _Reduce(os.system, (cmd,))], protocol=3),
                        f"{os.system.__module__}.system"),
    }


@pytest.mark.parametrize("payload", ["os.system-proto0", "builtins.eval-proto0", "posix.system", "builtins.eval",
                                     "subprocess.check_call", "subprocess.Popen", "after-numpy"])
@pytest.mark.parametrize("target", ["x", "graph"])
def test_hostile_pickle_is_refused_and_never_runs(cora_copy: Path, tmp_path: Path, payload: str,
                                                  target: str) -> None:
    marker = tmp_path / "pwned"
    data, refused = _payloads(marker)[payload]
    module, name = refused.rsplit(".", 1)
    # the payload really references the global (GLOBAL for protocols 0-3, STACK_GLOBAL strings for 4). Protocols
    # 0-2 write Python 2 names (subprocess -> commands), hence protocol 3 where a payload needs Python 3 names.
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(io.BytesIO(data))]
    assert ("GLOBAL", f"{module} {name}") in ops or (("SHORT_BINUNICODE", module) in ops and
                                                     ("SHORT_BINUNICODE", name) in ops)
    (cora_copy / f"ind.cora.{target}").write_bytes(data)
    with pytest.raises(DataError, match="refused to unpickle global") as err:
        pl.load_planetoid(cora_copy, "cora")
    assert refused in str(err.value) and f"ind.cora.{target}" in str(err.value)
    assert not marker.exists(), "the hostile pickle ran"


def test_object_arrays_refused(cora_copy: Path) -> None:
    (cora_copy / "ind.cora.y").write_bytes(pickle.dumps(np.array([1, "a"], dtype=object), protocol=3))
    with pytest.raises(DataError, match="object dtype"):
        pl.load_planetoid(cora_copy)


def test_unpickler_admits_only_format_globals() -> None:
    allowed = set(pl._allowed_globals())
    assert allowed == {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("scipy.sparse.csr", "csr_matrix"), ("scipy.sparse._csr", "csr_matrix"), ("scipy.sparse", "csr_matrix"),
        ("collections", "defaultdict"), ("__builtin__", "list"), ("builtins", "list"),
    }
    # every global the real files use is admitted
    for name in ("x", "y", "tx", "ty", "allx", "ally", "graph"):
        data = (CORA_DIR / f"ind.cora.{name}").read_bytes()
        used = {tuple(arg.split(" ")) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}
        assert used <= allowed, used - allowed


# -- sparse features and the code-made Planetoid set ---------------------------------------------------------


def test_sparse_and_dense_loading_agree(cora: pl.GraphDataset) -> None:
    """Reference: the dense loading (``sparse_features=False``), itself checked against torch_geometric above."""
    dense = load_dataset("cora", sparse_features=False)
    assert dense.graph.x.layout == torch.strided and cora.graph.x.layout == torch.sparse_coo
    assert torch.equal(cora.graph.x.to_dense(), dense.graph.x)
    assert cora.fingerprint() == dense.fingerprint()  # the fingerprint hashes the values, not the layout


@pytest.mark.filterwarnings("ignore")
def test_write_planetoid_like_round_trips(tmp_path: Path) -> None:
    """A small code-made set (CiteSeer's density and split rule): the reader accepts the files (only the
    format's globals), and sizes, split, density, edge count, homophily and the seed all hold."""
    pytest.importorskip("scipy.sparse")
    kw = {"num_nodes": 900, "num_features": 300, "words_per_node": 8.0, "num_edges": 1200, "num_classes": 3,
          "num_test": 200}
    pl.write_planetoid_like(tmp_path / "a", "toy", seed=1, **kw)
    pl.write_planetoid_like(tmp_path / "b", "toy", seed=1, **kw)
    pl.write_planetoid_like(tmp_path / "c", "toy", seed=2, **kw)
    for key in pl.PLANETOID_FILES:
        assert (tmp_path / "a" / f"ind.toy.{key}").read_bytes() == (tmp_path / "b" / f"ind.toy.{key}").read_bytes()
    ds = load_dataset("planetoid", data_dir=str(tmp_path / "a"), dataset="toy")
    g = ds.graph
    assert (g.num_nodes, ds.num_features, ds.num_classes, g.num_edges) == (900, 300, 3, 2400)
    assert {k: int(m.sum()) for k, m in g.masks.items()} == {"train": 60, "val": 500, "test": 200}
    assert torch.bincount(g.y[g.masks["train"]]).tolist() == [20, 20, 20]
    assert g.masks["test"][700:].all()
    raw = pl.load_planetoid(tmp_path / "a", "toy", normalize_features=False).x.to_dense()
    assert set(raw.unique().tolist()) == {0.0, 1.0}
    assert abs(float(raw.sum()) / 900 - 8.0) < 0.5  # words per node ~ Poisson(8)
    same = (g.y[g.edge_index[0]] == g.y[g.edge_index[1]]).float().mean()
    assert same > 0.75  # homophily 0.75 + (1 - 0.75) / 3 by chance ~ 0.83
    assert ds.fingerprint() != load_dataset("planetoid", data_dir=str(tmp_path / "c"), dataset="toy").fingerprint()
    with pytest.raises(DataError, match="cannot hold"):
        pl.write_planetoid_like(tmp_path / "d", "toy", num_nodes=600, num_test=200)
