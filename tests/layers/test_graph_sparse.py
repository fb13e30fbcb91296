"""Sparse node features: the sparse path must equal the dense one (float64, outputs and gradients) and
torch_geometric's layers on the dense features.

References: torch dense products ``X W^T`` on ``x.to_dense()`` (and per head on ``X * M_k`` for fixed masks M),
torch_geometric 2.8 ``GCNConv`` / ``GATConv`` on the dense features with copied weights, and a dense
re-implementation of Velickovic et al.'s ``attn_head`` (N x N scores, -inf off the graph, softmax over rows) for
the paper protocol. Where dropout is on, the mask the layer drew is reproduced by re-running the same draw from
the same seed with an identity weight (the draw is the layer's first random op), or by drawing a mask of the same
shape from the same seed (``F.dropout`` consumes the generator the same way for the same number of elements).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tricklab.layers.graph import GATConv, GCNConv, gat_conv
from tricklab.layers.graph_ops import SparsePlan, dropout_linear, gcn_norm, sparse_linear

pyg = pytest.importorskip("torch_geometric.nn")

DT = torch.float64


def features(n: int = 12, f: int = 10, density: float = 0.3, seed: int = 0) -> torch.Tensor:
    """Dense (n, f) float64 with ~density non-zeros, one empty row and one empty column (row-normalised)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, f, generator=g) < density).to(DT) * torch.rand(n, f, generator=g, dtype=DT)
    x[3] = 0.0
    x[:, 5] = 0.0
    return x / x.sum(1, keepdim=True).clamp(min=1e-12)


def graph(n: int = 12, e: int = 40, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    return torch.randint(0, n, (2, e), generator=g)


def head_matrices(plan: SparsePlan, values: torch.Tensor) -> torch.Tensor:
    """(H, N, F) dense per-head matrices from a plan's documented layout: entry (n H + k, f H + k) of B."""
    n, f = plan.shape
    h = plan.heads
    rows = torch.repeat_interleave(torch.arange(n * h), plan.crow.diff())
    out = torch.zeros(h, n, f, dtype=values.dtype)
    out[rows % h, rows // h, plan.col // h] = values
    assert torch.equal(rows % h, plan.col % h)  # entries of row n H + k sit in columns f H + k
    return out


# ------------------------------------------------------------------------------------------- products
@pytest.mark.parametrize("heads", [1, 3])
def test_sparse_linear_equals_dense_product(heads: int) -> None:
    x = features()
    w1 = torch.randn(heads * 4, 10, dtype=DT, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    out = sparse_linear(x.to_sparse(), w1, heads=heads)
    ref = x @ w2.t()
    torch.testing.assert_close(out, ref)
    cot = torch.randn(out.shape, dtype=DT)
    (out * cot).sum().backward()
    (ref * cot).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad)


@pytest.mark.parametrize("heads", [1, 4])
def test_sparse_linear_with_per_head_values_equals_dense_per_head_products(heads: int) -> None:
    """Fixed masks M (H, N, F): B's values X[n, f] M[k, n, f] give head k the product (X * M_k) W_k^T."""
    x = features(seed=1)
    c = 3
    plan = SparsePlan(x.to_sparse(), heads)
    masks = (torch.rand(heads, *x.shape, generator=torch.Generator().manual_seed(2)) < 0.5).to(DT) * 2.0
    base = head_matrices(plan, plan.values)
    assert torch.equal(base, x.expand(heads, -1, -1) * (x != 0))  # every head holds X
    n_idx = torch.repeat_interleave(torch.arange(12 * heads), plan.crow.diff())
    vals = plan.values * masks[n_idx % heads, n_idx // heads, plan.col // heads]
    w1 = torch.randn(heads * c, 10, dtype=DT, requires_grad=True)
    w2 = w1.detach().clone().requires_grad_(True)
    out = sparse_linear(x.to_sparse(), w1, heads=heads, plan=plan, values=vals)
    ref = torch.cat([(x * masks[k]) @ w2[k * c:(k + 1) * c].t() for k in range(heads)], dim=1)
    torch.testing.assert_close(out, ref)
    cot = torch.randn(out.shape, dtype=DT)
    (out * cot).sum().backward()
    (ref * cot).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad)


def test_empty_sparse_features_and_errors() -> None:
    x = torch.zeros(5, 4, dtype=DT).to_sparse()
    w = torch.randn(6, 4, dtype=DT, requires_grad=True)
    out = sparse_linear(x, w, heads=2, dropout=0.5, training=True)
    assert torch.equal(out, torch.zeros(5, 6, dtype=DT))
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))
    with pytest.raises(ValueError, match="multiple of heads"):
        sparse_linear(features().to_sparse(), torch.randn(5, 10, dtype=DT), heads=2)
    with pytest.raises(ValueError, match="cannot require a gradient"):
        sparse_linear(features().to_sparse().requires_grad_(True), torch.randn(4, 10, dtype=DT))


def _masks_through_identity(x: torch.Tensor, heads: int, p: float, seed: int, sparse: bool) -> torch.Tensor:
    """(H, N, F): what each head saw, read through identity weights (head k's rows = I_F)."""
    f = x.shape[1]
    eye = torch.eye(f, dtype=DT).repeat(heads, 1)
    torch.manual_seed(seed)
    out = dropout_linear(x.to_sparse() if sparse else x, eye, heads=heads, dropout=p, training=True,
                         independent_heads=True)
    return out.view(x.shape[0], heads, f).transpose(0, 1)


@pytest.mark.parametrize("sparse", [True, False])
def test_independent_head_dropout_drops_each_head_on_its_own(sparse: bool) -> None:
    """Each head sees X with its own Bernoulli(1 - p) mask, scaled by 1/(1 - p); zeros stay zeros."""
    x = features(n=200, f=50, density=0.5, seed=3)
    p = 0.6
    seen = _masks_through_identity(x, 4, p, 0, sparse)
    nz = x != 0
    for k in range(4):
        kept = seen[k] != 0
        assert not (kept & ~nz).any()
        torch.testing.assert_close(seen[k][kept], x[kept] / (1 - p))
    rate = float((seen != 0).sum()) / (4 * float(nz.sum()))
    assert abs(rate - (1 - p)) < 0.03, rate  # ~10k non-zeros: 3 standard deviations is 0.015
    assert not torch.equal(seen[0] != 0, seen[1] != 0)  # independent masks
    # the sparse path draws one Bernoulli per non-zero and head: H x nnz, not H x N x F
    assert (seen != 0).sum() < 4 * nz.sum()


# ------------------------------------------------------------------------------------------- GCN
@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("out_ch", [4, 15])  # shrinking and growing (the dense path's two product orders)
def test_gcn_sparse_equals_dense_and_pyg(cached: bool, out_ch: int) -> None:
    x, ei = features(), graph()
    ours = GCNConv(10, out_ch, cached=cached).to(DT)
    dense = GCNConv(10, out_ch).to(DT)
    dense.load_state_dict(ours.state_dict())
    theirs = pyg.GCNConv(10, out_ch).to(DT)
    with torch.no_grad():
        theirs.lin.weight.copy_(ours.weight)
        ours.bias.normal_()
        dense.bias.copy_(ours.bias)
        theirs.bias.copy_(ours.bias)
    xs = x.to_sparse()
    outs = [ours(xs, ei), dense(x, ei), theirs(x, ei)]
    for o in outs[1:]:
        torch.testing.assert_close(outs[0], o)
    cot = torch.randn(outs[0].shape, dtype=DT)
    for o in outs:
        (o * cot).sum().backward()
    for w in (dense.weight, theirs.lin.weight):
        torch.testing.assert_close(ours.weight.grad, w.grad)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad)
    ours(xs, ei)
    assert ours._plan_cache[0] is xs  # the plan is kept for the same features


def test_gcn_input_dropout_on_sparse_features() -> None:
    """Reference: the dense closed form P (D(X) W^T) + b with P = D^-1/2 (A + I) D^-1/2 and D(X) the mask the
    layer drew (reproduced from the same seed through an identity weight)."""
    x, ei = features(), graph()
    layer = GCNConv(10, 4, cached=True, input_dropout=0.5).to(DT).train()
    torch.manual_seed(7)
    out = layer(x.to_sparse(), ei)
    dx = _masks_through_identity(x, 1, 0.5, 7, True)[0]
    assert not torch.equal(dx, x) and ((dx == 0) | (dx == 2 * x)).all()
    ei2, coeff = gcn_norm(ei, 12, dtype=DT)
    p = torch.zeros(12, 12, dtype=DT).index_put_((ei2[1], ei2[0]), coeff, accumulate=True)
    w = layer.weight.detach().clone().requires_grad_(True)
    ref = p @ (dx @ w.t()) + layer.bias
    torch.testing.assert_close(out, ref)
    cot = torch.randn(out.shape, dtype=DT)
    (out * cot).sum().backward()
    (ref * cot).sum().backward()
    torch.testing.assert_close(layer.weight.grad, w.grad)


# ------------------------------------------------------------------------------------------- GAT
@pytest.mark.parametrize("heads,concat", [(1, True), (4, True), (3, False)])
def test_gat_sparse_equals_dense_and_pyg(heads: int, concat: bool) -> None:
    x, ei = features(seed=4), graph(seed=4)
    ours = GATConv(10, 5, heads, concat=concat).to(DT)
    theirs = pyg.GATConv(10, 5, heads, concat=concat).to(DT)
    with torch.no_grad():
        theirs.lin.weight.copy_(ours.weight)
        theirs.att_src.copy_(ours.att_src.view_as(theirs.att_src))
        theirs.att_dst.copy_(ours.att_dst.view_as(theirs.att_dst))
        ours.bias.normal_()
        theirs.bias.copy_(ours.bias)
    out_s, out_d, out_t = ours(x.to_sparse(), ei), ours(x, ei), theirs(x, ei)
    torch.testing.assert_close(out_s, out_d)
    torch.testing.assert_close(out_s, out_t)
    cot = torch.randn(out_s.shape, dtype=DT)
    (out_s * cot).sum().backward()
    grads_sparse = [p.grad.clone() for p in (ours.weight, ours.att_src, ours.att_dst, ours.bias)]
    (out_t * cot).sum().backward()
    for g, q in zip(grads_sparse, (theirs.lin.weight, theirs.att_src, theirs.att_dst, theirs.bias)):
        torch.testing.assert_close(g, q.grad.reshape(g.shape))


def attn_head_dense(x_k: torch.Tensor, w_k: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor, b: float,
                    adj: torch.Tensor, alpha_mask: torch.Tensor, feat_mask: torch.Tensor) -> torch.Tensor:
    """One head of Velickovic et al.'s attn_head, dense: seq_fts = x W; logits_ij = f1_i + f2_j + b (f1 the
    target's, f2 the source's score); softmax over j of LeakyReLU(logits) + bias_mat (-inf off the graph, self
    loops on); coefficient dropout; aggregation of the dropped seq_fts."""
    fts = x_k @ w_k.t()  # (N, C)
    logits = (fts @ a1).unsqueeze(1) + (fts @ a2).unsqueeze(0) + b
    scores = F.leaky_relu(logits, 0.2).masked_fill(adj == 0, -math.inf)
    coefs = torch.softmax(scores, dim=1) * alpha_mask
    return coefs @ (fts * feat_mask)


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("which", ["input", "attention", "features", "none"])
def test_gat_paper_protocol_matches_dense_attn_head(sparse: bool, which: str) -> None:
    """The paper protocol of one layer (4 heads, concat) against the dense reference, one dropout at a time
    (each mask reproduced from the same seed), outputs and weight gradients."""
    n, heads, c, p = 12, 4, 3, 0.5
    x, ei = features(seed=5), torch.unique(graph(seed=5), dim=1)  # a simple graph: one coefficient per pair
    layer = GATConv(10, c, heads, input_dropout=p if which == "input" else 0.0, independent_head_dropout=True,
                    dropout=p if which == "attention" else 0.0, feature_dropout=p if which == "features" else 0.0,
                    attention_bias=True, per_head_init=True).to(DT).train()
    with torch.no_grad():
        layer.att_src_bias.normal_()
        layer.att_dst_bias.normal_()
        layer.bias.normal_()
    torch.manual_seed(11)
    out = layer(x.to_sparse() if sparse else x, ei)

    # the masks the layer drew, reproduced
    x_heads = x.expand(heads, -1, -1)
    alpha_masks = torch.ones(heads, n, n, dtype=DT)
    feat_masks = torch.ones(heads, n, c, dtype=DT)
    adj = torch.zeros(n, n, dtype=DT)
    adj[ei[1], ei[0]] = 1.0
    adj.fill_diagonal_(1.0)  # adj[i, j]: j -> i, one self loop per node
    if which == "input":
        x_heads = _masks_through_identity(x, heads, p, 11, sparse)
    elif which == "attention":
        # the layer drops alpha (E', H) over its edges (loops removed, then one per node appended)
        torch.manual_seed(11)
        full = torch.cat([ei[:, ei[0] != ei[1]], torch.arange(n).expand(2, n)], dim=1)
        kept = F.dropout(torch.ones(full.shape[1], heads, dtype=DT), p, True)
        alpha_masks = torch.zeros(heads, n, n, dtype=DT)
        alpha_masks[:, full[1], full[0]] = kept.t()
    elif which == "features":
        torch.manual_seed(11)
        feat_masks = F.dropout(torch.ones(n, heads, c, dtype=DT), p, True).transpose(0, 1)

    w = layer.weight.detach().clone().requires_grad_(True)
    a_src = layer.att_src.detach().clone().requires_grad_(True)
    a_dst = layer.att_dst.detach().clone().requires_grad_(True)
    b = (layer.att_src_bias + layer.att_dst_bias).detach().clone().requires_grad_(True)
    ref = torch.cat([attn_head_dense(x_heads[k], w[k * c:(k + 1) * c], a_dst[k], a_src[k], b[k], adj,
                                     alpha_masks[k], feat_masks[k]) for k in range(heads)], dim=1) + layer.bias
    torch.testing.assert_close(out, ref)
    cot = torch.randn(out.shape, dtype=DT)
    (out * cot).sum().backward()
    (ref * cot).sum().backward()
    for ours, theirs in ((layer.weight, w), (layer.att_src, a_src), (layer.att_dst, a_dst)):
        torch.testing.assert_close(ours.grad, theirs.grad)
    torch.testing.assert_close(layer.att_src_bias.grad, b.grad)
    torch.testing.assert_close(layer.att_dst_bias.grad, b.grad)


def test_gat_per_head_init_bounds() -> None:
    """Glorot per head (their 1x1 convolutions): |W| <= sqrt(6 / (F + C)), |a| <= sqrt(6 / (C + 1)); the shared
    bound over all heads' rows, sqrt(6 / (F + H C)), is smaller and is exceeded."""
    torch.manual_seed(0)
    layer = GATConv(500, 8, 8, per_head_init=True)
    assert layer.weight.abs().max() <= math.sqrt(6 / 508) and layer.weight.abs().max() > math.sqrt(6 / 564)
    assert layer.att_src.abs().max() <= math.sqrt(6 / 9) and layer.att_src.abs().max() > math.sqrt(6 / 16)
    shared = GATConv(500, 8, 8)
    assert shared.weight.abs().max() <= math.sqrt(6 / 564)


def test_gat_functional_sparse_without_cache_equals_module() -> None:
    x, ei = features(seed=6), graph(seed=6)
    layer = GATConv(10, 4, 2).to(DT).eval()
    out = gat_conv(x.to_sparse(), ei, layer.weight, layer.att_src, layer.att_dst, layer.bias)
    torch.testing.assert_close(out, layer(x.to_sparse(), ei))
