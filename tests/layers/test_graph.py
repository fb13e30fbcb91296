"""GNN layers against torch_geometric 2.8 (test-only oracle) with the same weights and inputs: outputs and the
gradients w.r.t. inputs and every weight must agree (float64, torch.testing defaults: rtol 1e-7, atol 1e-7,
tighter than 1e-5). Where torch_geometric differs by design (LSTM padding) the reference is a Python loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from tricklab.layers.graph import (
    GATConv,
    GatedGraphConv,
    GCNConv,
    SAGEConv,
    gat_conv,
    gru_cell,
    sample_neighbors,
)

pyg = pytest.importorskip("torch_geometric.nn")

DT = torch.float64


def random_graph(n: int = 30, e: int = 90, isolated: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random directed multigraph: the last ``isolated`` nodes have no edges, plus explicit self loops and a
    repeated edge. Returns (edge_index (2, E), generator state for features)."""
    gen = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, n - isolated, (2, e), generator=gen)
    extra = torch.tensor([[0, 0, 4, 4, 5], [0, 1, 4, 1, 5]])  # loops 0->0, 4->4, 5->5; 0->1 and 4->1 repeated
    return torch.cat([ei, extra, extra[:, 1:2]], dim=1), gen


def check_same(
    ours: nn.Module,
    theirs: nn.Module,
    pairs: list[tuple[torch.Tensor, torch.Tensor]],
    call_ours: Callable[[torch.Tensor], torch.Tensor],
    call_theirs: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
) -> None:
    """Same output, same input gradient, same gradient of each (our param, their param) pair for a random
    cotangent."""
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    out_a, out_b = call_ours(xa), call_theirs(xb)
    torch.testing.assert_close(out_a, out_b)
    cot = torch.randn(out_a.shape, generator=torch.Generator().manual_seed(123), dtype=out_a.dtype)
    (out_a * cot).sum().backward()
    (out_b * cot).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for pa, pb in pairs:
        assert pa.grad is not None and pb.grad is not None
        torch.testing.assert_close(pa.grad, pb.grad.reshape(pa.grad.shape))


def copy_(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src.reshape(dst.shape))


# ----------------------------------------------------------------------------------------------- GCN
@pytest.mark.parametrize("add_loops,normalize,bias", [(True, True, True), (False, True, True), (False, False, False),
                                                      (True, True, False)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("out_ch", [4, 9])  # both multiplication orders (transform first / propagate first)
@pytest.mark.parametrize("cached", [False, True])  # gather/scatter path and cached sparse-CSR path
def test_gcn_matches_pyg(add_loops: bool, normalize: bool, bias: bool, weighted: bool, out_ch: int,
                         cached: bool) -> None:
    ei, gen = random_graph()
    x = torch.randn(30, 6, generator=gen, dtype=DT)
    w = (torch.rand(ei.shape[1], generator=gen, dtype=DT) + 0.1) if weighted else None
    ours = GCNConv(6, out_ch, add_self_loops=add_loops, normalize=normalize, bias=bias, cached=cached).to(DT)
    theirs = pyg.GCNConv(6, out_ch, add_self_loops=add_loops, normalize=normalize, bias=bias).to(DT)
    copy_(theirs.lin.weight, ours.weight)
    pairs = [(ours.weight, theirs.lin.weight)]
    if bias:
        copy_(ours.bias, torch.randn(out_ch, generator=gen, dtype=DT))
        copy_(theirs.bias, ours.bias)
        pairs.append((ours.bias, theirs.bias))
    check_same(ours, theirs, pairs, lambda v: ours(v, ei, w), lambda v: theirs(v, ei, w), x)


def test_gcn_edge_weight_gradient_matches_pyg() -> None:
    ei, gen = random_graph(seed=1)
    x = torch.randn(30, 5, generator=gen, dtype=DT)
    w = torch.rand(ei.shape[1], generator=gen, dtype=DT) + 0.1
    ours, theirs = GCNConv(5, 3).to(DT), pyg.GCNConv(5, 3).to(DT)
    copy_(theirs.lin.weight, ours.weight)
    wa, wb = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    check_same(ours, theirs, [(ours.weight, theirs.lin.weight)], lambda v: ours(v, ei, wa),
               lambda v: theirs(v, ei, wb), x)
    torch.testing.assert_close(wa.grad, wb.grad)


def test_gcn_self_loops_without_normalisation_match_dense_closed_form() -> None:
    # torch_geometric refuses this combination; reference: dense (A + I) X W^T with one loop per node
    ei = torch.tensor([[0, 1, 2, 2], [1, 2, 2, 0]])
    x = torch.randn(4, 3, dtype=DT)
    layer = GCNConv(3, 2, normalize=False, bias=False).to(DT)
    a = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=DT)  # a[i, j]: j -> i
    torch.testing.assert_close(layer(x, ei), a @ x @ layer.weight.t())


def test_gcn_cache_is_reused_and_invalidated() -> None:
    ei, gen = random_graph()
    x = torch.randn(30, 4, generator=gen)
    layer = GCNConv(4, 3, cached=True)
    ref = GCNConv(4, 3)
    ref.load_state_dict(layer.state_dict())
    out = layer(x, ei)
    cached_adj = layer._cache[5]  # type: ignore[index]
    layer(x, ei)
    assert layer._cache[5] is cached_adj  # type: ignore[index]  # same graph: no recomputation
    ei2 = ei[:, :40].clone()
    torch.testing.assert_close(layer(x, ei2), ref(x, ei2))  # another graph: recomputed, not stale
    ei2[0, 0] = (ei2[0, 0] + 1) % 27  # in-place edit of the same tensor: version counter invalidates
    torch.testing.assert_close(layer(x, ei2), ref(x, ei2))
    torch.testing.assert_close(out, ref(x, ei))


# ----------------------------------------------------------------------------------------------- GAT
@pytest.mark.parametrize("heads", [1, 4])
@pytest.mark.parametrize("concat", [True, False])
def test_gat_matches_pyg(heads: int, concat: bool) -> None:
    ei, gen = random_graph(seed=2)
    x = torch.randn(30, 7, generator=gen, dtype=DT)
    ours = GATConv(7, 5, heads, concat=concat).to(DT)
    theirs = pyg.GATConv(7, 5, heads, concat=concat).to(DT)
    copy_(ours.bias, torch.randn(ours.bias.shape, generator=gen, dtype=DT))  # type: ignore[union-attr]
    for a, b in [(ours.weight, theirs.lin.weight), (ours.att_src, theirs.att_src), (ours.att_dst, theirs.att_dst),
                 (ours.bias, theirs.bias)]:
        copy_(b, a)
    pairs = [(ours.weight, theirs.lin.weight), (ours.att_src, theirs.att_src), (ours.att_dst, theirs.att_dst),
             (ours.bias, theirs.bias)]
    check_same(ours, theirs, pairs, lambda v: ours(v, ei), lambda v: theirs(v, ei), x)  # type: ignore[arg-type]
    # attention coefficients: same edges (loops replaced, appended) and same alpha
    _, (e_ours, a_ours) = ours(x, ei, return_attention=True)  # type: ignore[misc]
    _, (e_theirs, a_theirs) = theirs(x, ei, return_attention_weights=True)
    assert torch.equal(e_ours, e_theirs)
    torch.testing.assert_close(a_ours, a_theirs)
    sums = torch.zeros(30, heads, dtype=DT).index_add_(0, e_ours[1], a_ours)
    torch.testing.assert_close(sums, torch.ones_like(sums))  # every node (isolated ones via their loop) sums to 1


def test_gat_attention_dropout_only_in_training() -> None:
    ei, gen = random_graph(seed=3)
    x = torch.randn(30, 4, generator=gen)
    layer = GATConv(4, 3, 2, dropout=0.5)
    ref = gat_conv(x, ei, layer.weight, layer.att_src, layer.att_dst, layer.bias)  # reference: dropout off
    layer.eval()
    torch.testing.assert_close(layer(x, ei), ref)
    layer.train()
    torch.manual_seed(0)
    assert not torch.allclose(layer(x, ei), ref)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- GraphSAGE
def _sage_pair(aggr: str, normalize: bool, root: bool) -> tuple[SAGEConv, nn.Module, list]:
    ours = SAGEConv(6, 5, aggr, normalize=normalize, root_weight=root).to(DT)  # type: ignore[arg-type]
    kw = {"project": True} if aggr == "max" else {}
    theirs = pyg.SAGEConv(6, 5, aggr=aggr, normalize=normalize, root_weight=root, **kw).to(DT)
    theirs.lin_l.load_state_dict(ours.lin_l.state_dict())
    pairs = [(ours.lin_l.weight, theirs.lin_l.weight), (ours.lin_l.bias, theirs.lin_l.bias)]
    if root:
        theirs.lin_r.load_state_dict(ours.lin_r.state_dict())  # type: ignore[union-attr]
        pairs.append((ours.lin_r.weight, theirs.lin_r.weight))  # type: ignore[union-attr]
    if aggr == "max":  # Hamilton's pooling aggregator = torch_geometric's aggr='max' with project=True
        theirs.lin.load_state_dict(ours.proj.state_dict())  # type: ignore[union-attr]
        pairs += [(ours.proj.weight, theirs.lin.weight), (ours.proj.bias, theirs.lin.bias)]  # type: ignore[union-attr]
    if aggr == "lstm":
        theirs.aggr_module.lstm.load_state_dict(ours.lstm.state_dict())  # type: ignore[union-attr]
        pairs += list(zip(ours.lstm.parameters(), theirs.aggr_module.lstm.parameters(), strict=True))  # type: ignore[union-attr]
    return ours, theirs, pairs


@pytest.mark.parametrize("aggr", ["mean", "max"])
@pytest.mark.parametrize("normalize,root", [(False, True), (True, True), (False, False)])
def test_sage_mean_and_max_pool_match_pyg(aggr: str, normalize: bool, root: bool) -> None:
    ei, gen = random_graph(seed=4)
    x = torch.randn(30, 6, generator=gen, dtype=DT)
    ours, theirs, pairs = _sage_pair(aggr, normalize, root)
    check_same(ours, theirs, pairs, lambda v: ours(v, ei), lambda v: theirs(v, ei), x)


def test_sage_lstm_matches_pyg_on_regular_graph() -> None:
    # torch_geometric's LSTMAggregation pads every neighbour sequence with zeros to the maximum degree and reads
    # the output after the padding; on a graph where every node has the same in-degree (no padding) both read the
    # last hidden state after the node's own neighbours. Edges sorted by target (torch_geometric requires it).
    gen = torch.Generator().manual_seed(5)
    n, k = 25, 4
    dst = torch.arange(n).repeat_interleave(k)
    src = torch.randint(0, n, (n * k,), generator=gen)
    src[:3] = torch.tensor([0, 0, 0])  # a loop and a repeated edge on node 0
    ei = torch.stack([src, dst])
    x = torch.randn(n, 6, generator=gen, dtype=DT)
    ours, theirs, pairs = _sage_pair("lstm", False, True)
    check_same(ours, theirs, pairs, lambda v: ours(v, ei), lambda v: theirs(v, ei), x)
    # our aggregator sorts stably by target itself: a shuffled-by-target edge list (same per-node order) agrees
    perm = torch.argsort(torch.rand(n, generator=gen))[dst] * k + torch.arange(n * k) % k
    torch.testing.assert_close(ours(x, ei[:, torch.argsort(perm)]), ours(x, ei))


def test_sage_lstm_matches_loop_on_irregular_graph() -> None:
    # reference: for each node, nn.LSTM over its neighbours' features in edge order; last hidden state; 0 if none
    ei, gen = random_graph(seed=6)
    x = torch.randn(30, 6, generator=gen, dtype=DT)
    layer = SAGEConv(6, 5, "lstm").to(DT)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = layer(xa, ei)
    ref_layer = SAGEConv(6, 5, "lstm").to(DT)
    ref_layer.load_state_dict(layer.state_dict())
    rows = []
    for i in range(30):
        nbrs = ei[0, ei[1] == i]
        if nbrs.numel() == 0:
            rows.append(torch.zeros(6, dtype=DT))
        else:
            _, (h, _) = ref_layer.lstm(xb[nbrs].unsqueeze(0))  # type: ignore[misc]
            rows.append(h[-1, 0])
    agg = torch.stack(rows)
    ref = ref_layer.lin_l(agg) + ref_layer.lin_r(xb)  # type: ignore[misc]
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    for pa, pb in zip(layer.parameters(), ref_layer.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)


# ----------------------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("aggr", ["mean", "max", "lstm"])
def test_sampling_with_full_fanout_reproduces_full_graph_two_layer_sage(aggr: str) -> None:
    # reference: the same 2-layer SAGE run on the whole graph, read at the seed nodes
    ei, gen = random_graph(n=60, e=200, seed=7)
    x = torch.randn(60, 6, generator=gen, dtype=DT)
    l1 = SAGEConv(6, 8, aggr).to(DT)  # type: ignore[arg-type]
    l2 = SAGEConv(8, 3, aggr).to(DT)  # type: ignore[arg-type]
    full = l2(torch.relu(l1(x, ei)), ei)
    seeds = torch.tensor([5, 0, 17, 58, 5])  # 58 is isolated; 5 repeated
    max_deg = int(torch.bincount(ei[1]).max())
    nodes, layers = sample_neighbors(ei, seeds, [max_deg, max_deg + 3], torch.Generator().manual_seed(0), 60)
    assert nodes[:4].tolist() == [5, 0, 17, 58] and nodes.unique().numel() == nodes.numel()
    h = l1(x[nodes], layers[0])
    out = l2(torch.relu(h), layers[1])
    torch.testing.assert_close(out[:4], full[torch.tensor([5, 0, 17, 58])])


def test_sampling_respects_fanout_and_is_seeded() -> None:
    ei, _ = random_graph(n=80, e=600, isolated=0, seed=8)
    seeds = torch.arange(10)

    def run(seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return sample_neighbors(ei, seeds, [3, 2], torch.Generator().manual_seed(seed), 80)

    nodes, layers = run(0)
    nodes2, layers2 = run(0)
    assert torch.equal(nodes, nodes2) and all(torch.equal(a, b) for a, b in zip(layers, layers2, strict=True))
    nodes3, _ = run(1)
    assert not torch.equal(nodes, nodes3)
    real = {tuple(e) for e in ei.t().tolist()}
    glob = nodes[layers[0]]  # local -> global
    assert all(tuple(e) in real for e in glob.t().tolist())  # every sampled edge is a real edge
    hop1 = layers[1]  # edges into the seeds only
    assert int(hop1[1].max()) < 10
    assert int(torch.bincount(hop1[1]).max()) <= 3  # fanout 3 per seed
    hop2 = layers[0][:, hop1.shape[1]:]
    assert int(torch.bincount(hop2[1]).max()) <= 2 and int(hop2[1].min()) >= 10  # fanout 2 per hop-1 node


# ----------------------------------------------------------------------------------------------- gated GNN
@pytest.mark.parametrize("weighted", [False, True])
def test_gated_graph_conv_matches_pyg(weighted: bool) -> None:
    ei, gen = random_graph(seed=9)
    x = torch.randn(30, 5, generator=gen, dtype=DT)  # 5 < 8 channels: zero padded
    w = torch.rand(ei.shape[1], generator=gen, dtype=DT) if weighted else None
    ours, theirs = GatedGraphConv(8, 3).to(DT), pyg.GatedGraphConv(8, 3).to(DT)
    copy_(theirs.weight, ours.weight)
    theirs.rnn.load_state_dict(ours.rnn.state_dict())
    pairs = [(ours.weight, theirs.weight), *zip(ours.rnn.parameters(), theirs.rnn.parameters(), strict=True)]
    check_same(ours, theirs, pairs, lambda v: ours(v, ei, w), lambda v: theirs(v, ei, w), x)
    with pytest.raises(ValueError, match="exceed"):
        ours(torch.randn(30, 9, dtype=DT), ei)


def test_gru_cell_matches_torch_gru_cell() -> None:
    # reference: torch.nn.GRUCell
    cell = nn.GRUCell(4, 4).to(DT)
    m, h = torch.randn(6, 4, dtype=DT), torch.randn(6, 4, dtype=DT)
    ma, ha = m.clone().requires_grad_(True), h.clone().requires_grad_(True)
    mb, hb = m.clone().requires_grad_(True), h.clone().requires_grad_(True)
    out_a = gru_cell(ma, ha, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    out_b = cell(mb, hb)
    torch.testing.assert_close(out_a, out_b)
    out_a.sum().backward()
    out_b.sum().backward()
    torch.testing.assert_close((ma.grad, ha.grad), (mb.grad, hb.grad))
