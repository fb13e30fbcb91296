"""Tests for graph data sets (karate, synthetic-graphs, GraphDataset) and the graph loaders.

References: the karate club (Zachary 1977) has 34 members, 78 ties and two clubs of 17 (networkx's
``club`` attribute); batching offsets are checked against a hand-written loop over the graphs, and the
masked cross-entropy against the loss on the masked nodes alone.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from tricklab.data import load_dataset
from tricklab.data.datasets.graphs import GraphDataset, make_synthetic_graphs
from tricklab.data.graph import Graph, batch_graphs
from tricklab.data.graph_loaders import FullBatchGraphLoader, GraphBatchLoader, masked_targets
from tricklab.data.loader import epoch_permutation
from tricklab.errors import DataError


@pytest.fixture(scope="module")
def synthetic() -> GraphDataset:
    return load_dataset("synthetic-graphs")


def _degrees(g: Graph) -> torch.Tensor:
    return torch.bincount(g.edge_index[0], minlength=g.num_nodes)


def _undirected_ok(g: Graph) -> bool:
    ei, n = g.edge_index, g.num_nodes
    key = ei[0] * n + ei[1]
    return (not bool((ei[0] == ei[1]).any()) and key.unique().numel() == key.numel()
            and torch.equal(key.sort().values, (ei[1] * n + ei[0]).sort().values))


# -- karate ----------------------------------------------------------------------------------------------


def test_karate() -> None:
    nx = pytest.importorskip("networkx")
    ds = load_dataset("karate")
    g = ds.graph
    assert ds.task == "node" and ds.num_classes == 2 and ds.num_features == 34
    assert g.num_nodes == 34 and g.num_edges == 156 and _undirected_ok(g)
    assert torch.equal(g.x, torch.eye(34))
    ref = nx.karate_club_graph()
    assert g.y.tolist() == [0 if ref.nodes[v]["club"] == "Mr. Hi" else 1 for v in range(34)]
    assert torch.bincount(g.y).tolist() == [17, 17]
    assert {(min(a, b), max(a, b)) for a, b in g.edge_index.t().tolist()} == {(min(e), max(e)) for e in ref.edges()}
    m = g.masks
    assert [int(m[k].sum()) for k in ("train", "val", "test")] == [8, 6, 20]
    assert bool((m["train"].int() + m["val"].int() + m["test"].int() == 1).all())  # disjoint, cover all
    assert torch.bincount(g.y[m["train"]]).tolist() == [4, 4]
    assert ds.fingerprint() == load_dataset("karate").fingerprint()
    assert ds.fingerprint() != load_dataset("karate", seed=1).fingerprint()


def test_karate_without_networkx_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "networkx", None)  # import networkx now raises ImportError
    with pytest.raises(DataError, match="pip install networkx"):
        load_dataset("karate")


# -- synthetic-graphs ------------------------------------------------------------------------------------


def test_synthetic_graphs_reproducible_balanced_and_structural(synthetic: GraphDataset) -> None:
    ds = synthetic
    assert ds.task == "graph" and ds.num_graphs == 600 and ds.num_classes == 4 and ds.num_features == 1
    labels = torch.cat([g.y for g in ds.graphs])
    assert torch.bincount(labels).tolist() == [150] * 4
    sizes = {k: int(v.numel()) for k, v in ds.splits.items()}
    assert sizes == {"train": 480, "val": 60, "test": 60}
    all_idx = torch.cat(list(ds.splits.values()))
    assert torch.equal(all_idx.sort().values, torch.arange(600))  # disjoint and complete
    for k, n in (("train", 120), ("val", 15), ("test", 15)):
        assert torch.bincount(labels[ds.splits[k]]).tolist() == [n] * 4
    assert ds.fingerprint() == load_dataset("synthetic-graphs").fingerprint()
    assert ds.fingerprint() != load_dataset("synthetic-graphs", seed=1).fingerprint()

    node_counts = {c: set() for c in range(4)}
    for g in ds.graphs:
        c, n, deg = int(g.y), g.num_nodes, _degrees(g)
        node_counts[c].add(n)
        assert 10 <= n <= 20 and _undirected_ok(g) and torch.equal(g.x, torch.ones(n, 1))
        if c == 0:  # cycle
            assert bool((deg == 2).all())
        elif c == 1:  # star
            assert sorted(deg.tolist()) == [1] * (n - 1) + [n - 1]
        elif c == 2:  # tree, max degree 3
            assert g.num_edges == 2 * (n - 1) and int(deg.max()) <= 3 and int(deg.min()) >= 1
        else:  # random G(n, 1.5 n)
            assert g.num_edges == 2 * (3 * n // 2)
    # node counts do not give the class away: every class covers (nearly) the whole range
    assert all(len(s) >= 9 for s in node_counts.values())


def test_synthetic_graph_options() -> None:
    graphs, labels = make_synthetic_graphs(40, 2, seed=3, features="degree", max_degree=5)
    assert labels.tolist() == [0, 1] * 20
    for g in graphs:
        assert g.x.shape == (g.num_nodes, 6)
        assert torch.equal(g.x.argmax(1), _degrees(g).clamp(max=5))
    ds = load_dataset("synthetic-graphs", num_graphs=200, num_classes=2)
    assert ds.num_classes == 2 and torch.bincount(torch.cat([g.y for g in ds.graphs])).tolist() == [100, 100]
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic_graphs(40, 5)


def test_graph_dataset_validation() -> None:
    g = Graph(x=torch.ones(3, 2), edge_index=torch.zeros(2, 0, dtype=torch.long), y=torch.tensor([0, 1, 0]),
              masks={"train": torch.tensor([True, False, False])})
    ds = GraphDataset("t", [g], num_classes=2, num_features=2, task="node")
    assert ds.splits["train"].tolist() == [0]
    with pytest.raises(ValueError, match="features"):
        GraphDataset("t", [g], num_classes=2, num_features=3, task="node")
    with pytest.raises(ValueError, match="exactly one graph"):
        GraphDataset("t", [g, g], num_classes=2, num_features=2, task="node")
    with pytest.raises(ValueError, match="one graph label"):
        GraphDataset("t", [g], num_classes=2, num_features=2, task="graph")


# -- FullBatchGraphLoader --------------------------------------------------------------------------------


def test_full_batch_loader_masks_targets() -> None:
    pytest.importorskip("networkx")
    g = load_dataset("karate").graph
    loader = FullBatchGraphLoader(g, "train")
    assert len(loader) == 1 and loader.epoch == 0 and loader.batch_index == 0
    graph, targets = loader.next_batch()
    assert graph is g and loader.batch_index == 1 and loader.remaining == 0
    m = g.masks["train"]
    assert torch.equal(targets[m], g.y[m]) and bool((targets[~m] == -100).all())
    logits = torch.randn(g.num_nodes, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(F.cross_entropy(logits, targets), F.cross_entropy(logits[m], g.y[m]))
    with pytest.raises(RuntimeError, match="exhausted"):
        loader.next_batch()
    state = loader.state_dict()
    loader.start_next_epoch()
    assert (loader.epoch, loader.batch_index) == (1, 0)
    assert [len(list(loader)) for _ in range(3)] == [1, 1, 1] and loader.epoch == 4
    other = FullBatchGraphLoader(g, "train")
    other.load_state_dict(state)
    assert (other.epoch, other.batch_index) == (0, 1)
    with pytest.raises(ValueError, match="mask"):
        FullBatchGraphLoader(g, "val").load_state_dict(state)
    with pytest.raises(ValueError, match="no mask"):
        FullBatchGraphLoader(g, "dev")
    assert torch.equal(masked_targets(g, "test", ignore_index=-1)[g.masks["train"]], torch.full((8,), -1))


# -- GraphBatchLoader ------------------------------------------------------------------------------------


def _manual_batch(graphs: list[Graph]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xs, edges, batch, offset = [], [], [], 0
    for gid, g in enumerate(graphs):
        xs.append(g.x)
        for s, t in g.edge_index.t().tolist():
            edges.append((s + offset, t + offset))
        batch += [gid] * g.num_nodes
        offset += g.num_nodes
    return torch.cat(xs), torch.tensor(edges, dtype=torch.long).t(), torch.tensor(batch)


def test_graph_batch_loader_epoch_coverage_and_offsets(synthetic: GraphDataset) -> None:
    graphs = synthetic.split_graphs("train")  # 480 graphs
    loader = GraphBatchLoader(graphs, 64, seed=5)
    assert len(loader) == 8  # 7 full batches + 32
    for epoch in range(2):
        perm = epoch_permutation(480, 5, epoch)
        seen = []
        for b, (batched, y) in enumerate(loader):
            idx = perm[b * 64:(b + 1) * 64].tolist()
            seen += idx
            members = [graphs[i] for i in idx]
            assert batched.num_graphs == len(members) and torch.equal(y, torch.cat([g.y for g in members]))
            x, ei, batch = _manual_batch(members)
            assert torch.equal(batched.x, x) and torch.equal(batched.edge_index, ei)
            assert torch.equal(batched.batch, batch)
        assert sorted(seen) == list(range(480)) and loader.epoch == epoch + 1
    assert len(GraphBatchLoader(graphs, 64, drop_last=True)) == 7


def test_graph_batch_loader_resumes_mid_epoch(synthetic: GraphDataset) -> None:
    graphs = synthetic.graphs
    run = GraphBatchLoader(graphs, 50, seed=1)
    run.start_next_epoch()
    for _ in range(5):
        run.next_batch()
    state = run.state_dict()
    rest = [run.next_batch() for _ in range(run.remaining)]
    resumed = GraphBatchLoader(graphs, 50, seed=1)
    resumed.load_state_dict(state)
    assert (resumed.epoch, resumed.batch_index) == (1, 5)
    again = [resumed.next_batch() for _ in range(resumed.remaining)]
    assert len(again) == len(rest) == 7
    for (g1, y1), (g2, y2) in zip(rest, again, strict=True):
        assert torch.equal(y1, y2) and torch.equal(g1.x, g2.x) and torch.equal(g1.edge_index, g2.edge_index)
    with pytest.raises(ValueError, match="global batch"):
        GraphBatchLoader(graphs, 40, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="permutation"):
        GraphBatchLoader(graphs, 50, seed=2).load_state_dict({**state, "seed": 2})


def test_graph_batch_loader_shards_union_equals_single(synthetic: GraphDataset) -> None:
    graphs = synthetic.graphs[:100]
    single = GraphBatchLoader(graphs, 20, seed=0, drop_last=True)
    ranks = [GraphBatchLoader(graphs, 10, seed=0, drop_last=True, rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == 5
    for _ in range(5):
        _, y = single.next_batch()
        assert torch.equal(y, torch.cat([r.next_batch()[1] for r in ranks]))
    with pytest.raises(ValueError, match="drop_last"):
        GraphBatchLoader(graphs, 10, rank=0, world_size=2)
    with pytest.raises(ValueError, match="graph label"):
        GraphBatchLoader([Graph(x=torch.ones(2, 1), edge_index=torch.zeros(2, 0, dtype=torch.long))], 1)


# -- sparse node features ----------------------------------------------------------------------------------


def _sparse_graph(n: int, seed: int, label: int | None = None) -> tuple[Graph, Graph]:
    """(sparse, dense) copies of one graph with bag-of-words-like features."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, 9, generator=gen) < 0.2).float()
    ei = torch.randint(0, n, (2, 2 * n), generator=gen)
    y = torch.tensor([label]) if label is not None else torch.randint(0, 3, (n,), generator=gen)
    return Graph(x=x.to_sparse(), edge_index=ei, y=y), Graph(x=x, edge_index=ei, y=y)


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_graph_keeps_sparse_features_coalesced_coo() -> None:
    sparse, dense = _sparse_graph(7, 0)
    assert sparse.x.layout == torch.sparse_coo and sparse.x.is_coalesced() and sparse.num_nodes == 7
    csr = Graph(x=dense.x.to_sparse_csr(), edge_index=dense.edge_index)  # other layouts become COO
    assert csr.x.layout == torch.sparse_coo and torch.equal(csr.x.to_dense(), dense.x)


def test_batch_graphs_with_sparse_features_equals_dense() -> None:
    """Reference: batch_graphs of the dense copies (a mix of sparse and dense is joined dense)."""
    pairs = [_sparse_graph(n, s, label=s % 2) for s, n in enumerate([4, 1, 6])]
    sb = batch_graphs([s for s, _ in pairs])
    db = batch_graphs([d for _, d in pairs])
    assert sb.x.layout == torch.sparse_coo and sb.x.is_coalesced()
    assert torch.equal(sb.x.to_dense(), db.x) and torch.equal(sb.edge_index, db.edge_index)
    assert torch.equal(sb.batch, db.batch) and torch.equal(sb.y, db.y)
    mixed = batch_graphs([pairs[0][0], pairs[1][1]])
    assert mixed.x.layout == torch.strided and torch.equal(mixed.x, batch_graphs([pairs[0][1], pairs[1][1]]).x)


def test_neighbor_loader_with_sparse_features_equals_dense() -> None:
    """Reference: the NeighborLoader over the dense copy, same seed: the same sampled subgraphs and features."""
    from tricklab.data.graph_loaders import NeighborLoader

    sparse, dense = _sparse_graph(30, 3)
    for g in (sparse, dense):
        g.masks["train"] = torch.arange(30) < 20
    a = NeighborLoader(sparse, "train", 8, [3, 2], seed=1)
    b = NeighborLoader(dense, "train", 8, [3, 2], seed=1)
    for (ga, ta), (gb, tb) in zip(a, b):
        assert ga.x.layout == torch.sparse_coo
        assert torch.equal(ga.x.to_dense(), gb.x) and torch.equal(ga.edge_index, gb.edge_index)
        assert torch.equal(ta, tb)


def test_fingerprint_of_sparse_features_is_that_of_their_dense_values() -> None:
    sparse, dense = _sparse_graph(7, 4)
    fp = [GraphDataset(name="t", graphs=[g], num_classes=3, num_features=9, task="node").fingerprint()
          for g in (sparse, dense)]
    assert fp[0] == fp[1]
