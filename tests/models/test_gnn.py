"""Graph models: registry, shapes, every parameter gets a gradient, no NaN, a closed-form check of each model's
wiring against the layers it is made of, and that GCN learns a small separable node task."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tricklab.data.graph import Graph, batch_graphs
from tricklab.errors import ConfigError
from tricklab.layers.graph import sample_neighbors
from tricklab.layers.graph_ops import global_pool
from tricklab.models import MODELS, build_model

NODE_MODELS = [("gcn", {}), ("gat", {}), ("gat", {"protocol": "paper"}), ("graphsage", {}),
               ("graphsage", {"aggr": "max"}), ("graphsage", {"aggr": "lstm"})]
GRAPH_MODELS = [("gcn_graph", {}), ("gcn_graph", {"pool": "max"}), ("gated_gnn", {}), ("gated_gnn", {"hidden": 4})]


def node_graph(n: int = 40, f: int = 12, e: int = 120, seed: int = 0) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - 2, (2, e), generator=gen)  # two isolated nodes
    return Graph(x=torch.randn(n, f, generator=gen), edge_index=ei, y=torch.randint(0, 3, (n,), generator=gen))


def graph_batch(f: int = 12, seed: int = 0) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    graphs = []
    for k, n in enumerate([5, 1, 8, 3]):  # a one-node graph without edges
        ei = torch.randint(0, n, (2, 2 * n if n > 1 else 0), generator=gen)
        graphs.append(Graph(x=torch.randn(n, f, generator=gen), edge_index=ei, y=torch.tensor([k % 3])))
    return batch_graphs(graphs)


def test_registered_with_summaries() -> None:
    for name in ("gcn", "gat", "graphsage", "gcn_graph", "gated_gnn"):
        assert name in MODELS and MODELS.summary(name)


@pytest.mark.parametrize("name,kw", NODE_MODELS + GRAPH_MODELS)
def test_shapes_gradients_and_finite(name: str, kw: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, (12,), 3, **kw)
    g = node_graph() if (name, kw) in NODE_MODELS else graph_batch()
    out = model(g)
    rows = g.num_nodes if (name, kw) in NODE_MODELS else g.num_graphs
    assert out.shape == (rows, 3) and torch.isfinite(out).all()
    F.cross_entropy(out, g.y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{name}: {pname} got a zero gradient"
    model.eval()
    assert torch.equal(model(g), model(g))  # dropout off in eval


def test_gcn_model_matches_two_layer_closed_form() -> None:
    # reference: Kipf & Welling eq. 9 with a dense Â = D^-1/2 (A + I) D^-1/2 (eval mode, no dropout)
    g = node_graph(n=10, f=4, e=20, seed=1)
    model = build_model("gcn", (4,), 3).eval()
    a = torch.eye(10)
    a.index_put_((g.edge_index[1], g.edge_index[0]), torch.ones(20), accumulate=True)
    a = a - torch.diag(torch.diag(a)) + torch.eye(10)  # one loop per node
    dinv = a.sum(1).pow(-0.5)
    a_hat = dinv[:, None] * a * dinv[None, :]
    c1, c2 = model.conv1, model.conv2
    ref = a_hat @ torch.relu(a_hat @ g.x @ c1.weight.t() + c1.bias) @ c2.weight.t() + c2.bias
    torch.testing.assert_close(model(g), ref)


def test_paper_settings() -> None:
    gcn = build_model("gcn", (1433,), 7)
    assert (gcn.conv1.weight.shape, gcn.conv2.weight.shape, gcn.dropout) == ((16, 1433), (7, 16), 0.5)
    gat = build_model("gat", (1433,), 7)
    assert gat.conv1.heads == 8 and gat.conv1.out_channels == 8 and gat.conv1.concat
    assert gat.conv2.heads == 1 and not gat.conv2.concat and gat.conv2.in_channels == 64
    assert gat.dropout == 0.6 and gat.conv1.dropout == 0.6 and gat.conv2.dropout == 0.6
    sage = build_model("graphsage", (1433,), 7)
    assert len(sage.convs) == 2 and sage.convs[0].out_channels == 64


def test_graph_model_pools_per_graph() -> None:
    # reference: running the model on each graph alone gives the rows of the batched output
    torch.manual_seed(0)
    model = build_model("gcn_graph", (12,), 3).eval()
    g = graph_batch()
    out = model(g)
    for k in range(g.num_graphs):
        keep = g.batch == k
        remap = torch.cumsum(keep.long(), 0) - 1
        em = keep[g.edge_index[0]]
        sub = Graph(x=g.x[keep], edge_index=remap[g.edge_index[:, em]])
        torch.testing.assert_close(model(sub)[0], out[k])
    h = g.x
    for conv in model.convs:
        h = torch.relu(conv(h, g.edge_index))
    torch.testing.assert_close(out, model.head(global_pool(h, g.batch, g.num_graphs, "mean")))


def test_graphsage_on_sampled_neighbourhoods_matches_full_graph() -> None:
    # reference: the full-graph forward at the seed nodes (fanout >= max degree keeps every neighbour)
    torch.manual_seed(0)
    model = build_model("graphsage", (12,), 3).eval()
    g = node_graph()
    seeds = torch.tensor([3, 7, 11])
    nodes, edge_indices = sample_neighbors(g.edge_index, seeds, [1000, 1000], torch.Generator().manual_seed(0),
                                           g.num_nodes)
    sub = Graph(x=g.x[nodes], edge_index=edge_indices[0])
    torch.testing.assert_close(model(sub, edge_indices)[:3], model(g)[seeds])


def test_gat_paper_protocol_settings() -> None:
    """Velickovic et al.'s code: per-head input dropout, dropout 0.6 on projected features, attention biases
    (two per head per layer: 8 + 8 + 1 + 1 parameters more than the pyg protocol), per-head init."""
    paper, pyg = build_model("gat", (1433,), 7, protocol="paper"), build_model("gat", (1433,), 7)
    for conv in (paper.conv1, paper.conv2):
        assert conv.independent_head_dropout and conv.input_dropout == 0.6 and conv.feature_dropout == 0.6
        assert conv.dropout == 0.6 and conv.per_head_init and conv.att_src_bias is not None
    assert not pyg.conv1.independent_head_dropout and pyg.conv1.feature_dropout == 0.0
    n_paper, n_pyg = (sum(p.numel() for p in m.parameters()) for m in (paper, pyg))
    assert n_paper - n_pyg == 18
    with pytest.raises(ConfigError, match="protocol"):
        build_model("gat", (12,), 3, protocol="dgl")


@pytest.mark.parametrize("name,kw", NODE_MODELS + GRAPH_MODELS)
def test_sparse_features_give_the_dense_results(name: str, kw: dict) -> None:
    """Reference: the same model on the dense features (float64, eval mode): outputs and every parameter's
    gradient. gcn and gat keep the features sparse, the others densify them."""
    torch.manual_seed(0)
    model = build_model(name, (12,), 3, **kw).double().eval()
    g = node_graph() if (name, kw) in NODE_MODELS else graph_batch()
    keep = torch.rand(g.x.shape, generator=torch.Generator().manual_seed(1)) < 0.3  # mostly zeros, as bag-of-words
    dense = Graph(x=(g.x * keep).double(), edge_index=g.edge_index, y=g.y, batch=g.batch, num_graphs=g.num_graphs)
    sparse = Graph(x=dense.x.to_sparse(), edge_index=g.edge_index, y=g.y, batch=g.batch, num_graphs=g.num_graphs)
    out_d = model(dense)
    grads_d = torch.autograd.grad(out_d.square().sum(), list(model.parameters()), allow_unused=True)
    out_s = model(sparse)
    grads_s = torch.autograd.grad(out_s.square().sum(), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(out_s, out_d)
    for a, b in zip(grads_s, grads_d):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b)
    model.train()
    out = model(sparse)  # dropout on the non-zeros: runs, finite, and differs from eval
    assert torch.isfinite(out).all()


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="aggr"):
        build_model("graphsage", (12,), 3, aggr="sum")
    with pytest.raises(ConfigError, match="dropout"):
        build_model("gat", (12,), 3, dropout=1.5)
    with pytest.raises(ConfigError, match="input_shape"):
        build_model("gcn", (3, 12), 3)
    with pytest.raises(ConfigError, match="pool"):
        build_model("gated_gnn", (12,), 3, pool="attention")


def test_gcn_learns_a_homophilous_node_task() -> None:
    # two communities with noisy features; a trained GCN classifies the held-out nodes (>= 90%)
    gen = torch.Generator().manual_seed(0)
    n = 60
    y = torch.arange(n) % 2
    src = torch.randint(0, n, (400,), generator=gen)
    dst = torch.randint(0, n, (400,), generator=gen)
    same = y[src] == y[dst]
    ei = torch.stack([src[same], dst[same]])
    x = y[:, None].float() + 1.5 * torch.randn(n, 8, generator=gen)
    g = Graph(x=x, edge_index=ei, y=y)
    torch.manual_seed(0)
    model = build_model("gcn", (8,), 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=5e-4)
    train = torch.arange(n) < 20
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(g)[train], y[train]).backward()
        opt.step()
    model.eval()
    acc = (model(g).argmax(1)[~train] == y[~train]).float().mean()
    assert acc >= 0.9, acc
