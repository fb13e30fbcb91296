"""Graph neural network layers on edge-index graphs: GCN, GAT, GraphSAGE (+ neighbour sampling), gated GNN.

Each layer is a pure function over tensors (``gcn_conv``, ``gat_conv``, ``sage_conv``, ``gated_graph_conv``) and a
thin ``nn.Module`` that owns the parameters and calls it. Shapes: ``x`` (N, F_in) node features, ``edge_index``
(2, E) int64 with sources j in row 0 and targets i in row 1 (messages flow j -> i), outputs (N, F_out).
Reductions are the scatters of :mod:`tricklab.layers.graph_ops` (isolated nodes aggregate to 0).

References:
    Kipf & Welling 2017, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR.
    Velickovic et al. 2018, "Graph Attention Networks", ICLR.
    Hamilton, Ying & Leskovec 2017, "Inductive Representation Learning on Large Graphs", NeurIPS.
    Li, Tarlow, Brockschmidt & Zemel 2016, "Gated Graph Sequence Neural Networks", ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.layers.graph_ops import (
    SparsePlan,
    add_remaining_self_loops,
    add_self_loops as _add_loops,
    csr_adjacency,
    dropout_linear,
    gcn_norm,
    is_sparse,
    propagate,
    remove_self_loops,
    scatter,
    segment_softmax,
    spmm,
)

SageAggr = Literal["mean", "max", "lstm"]


def _sparse_plans(module: nn.Module, x: Tensor) -> dict[int, SparsePlan] | None:
    """The module's cache of :class:`SparsePlan` s (by number of heads) for sparse features ``x``, kept while the
    same tensor comes back unmodified (full-batch training passes the same features every epoch)."""
    if not is_sparse(x):
        return None
    c = module.__dict__.get("_plan_cache")
    if c is None or c[0] is not x or c[1] != x._version:
        c = (x, x._version, {})
        module.__dict__["_plan_cache"] = c
    return c[2]


def _glorot_(t: Tensor) -> Tensor:
    # Glorot & Bengio 2010 uniform bound sqrt(6 / (fan_in + fan_out)) over the last two dims, as Kipf and
    # Velickovic initialise their weights.
    fan_in, fan_out = t.shape[-1], t.shape[-2]
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


# ================================================================================================ GCN
def gcn_conv(
    x: Tensor,
    edge_index: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    edge_weight: Tensor | None = None,
    add_self_loops: bool = True,
    normalize: bool = True,
    norm: tuple[Tensor, Tensor] | None = None,
    adjacency: tuple[Tensor, Tensor] | None = None,
    input_dropout: float = 0.0,
    training: bool = False,
    plans: dict[int, SparsePlan] | None = None,
) -> Tensor:
    """Graph convolution (Kipf & Welling 2017, eq. 2):  X' = D^-1/2 (A + I) D^-1/2 X W^T + b.

    Args:
        x: (N, F_in), dense or sparse (a sparse COO tensor: bag-of-words features; the product X W^T then
            touches only the non-zeros); weight: (F_out, F_in) (``nn.Linear`` layout); bias: (F_out,).
        edge_weight: (E,) edge weights of A (default 1).
        add_self_loops: use A + I (one loop per node, existing loops replaced).
        normalize: apply the symmetric D^-1/2 . D^-1/2 scaling; without it the (weighted) sum over incoming edges.
        norm: precomputed ``(edge_index', coeff)`` from :func:`gcn_norm` (skips the normalisation; used by the
            module's cache in full-batch transductive training where the graph never changes).
        adjacency: the same propagation matrix as a CSR pair from :func:`csr_adjacency` (used instead of ``norm``;
            constant edge weights): sparse-dense products instead of gather + scatter, faster once built.
        input_dropout: dropout on ``x`` (active if ``training``); on sparse x, on its non-zeros only.
        plans: a cache of :class:`~tricklab.layers.graph_ops.SparsePlan` s of sparse x (see ``GCNConv``).
    """
    n = x.shape[0]
    sparse = is_sparse(x)
    if adjacency is not None:
        def prop(v: Tensor) -> Tensor:
            return spmm(adjacency, v)
    else:
        if norm is None:
            norm = gcn_propagation_coefficients(edge_index, n, edge_weight, add_self_loops, normalize,
                                                weight.dtype if sparse else x.dtype)
        ei, coeff = norm

        def prop(v: Tensor) -> Tensor:
            return propagate(v, ei, coeff, n)
    # Â X W = (Â X) W = Â (X W): multiply by W first when it shrinks the features (Kipf's 1433 -> 16 on Cora),
    # so that the propagation moves N x F_out numbers instead of N x F_in; sparse X always goes first through W
    if sparse or weight.shape[0] <= weight.shape[1]:
        out = prop(dropout_linear(x, weight, dropout=input_dropout, training=training, plans=plans))
    else:
        x = F.dropout(x, input_dropout, training) if input_dropout > 0.0 else x
        out = F.linear(prop(x), weight)
    return out + bias if bias is not None else out


def gcn_propagation_coefficients(
    edge_index: Tensor,
    num_nodes: int,
    edge_weight: Tensor | None = None,
    add_self_loops: bool = True,
    normalize: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """(edge_index', coeff (E',)) of the GCN propagation matrix for the given options (see :func:`gcn_conv`)."""
    if normalize:
        return gcn_norm(edge_index, num_nodes, edge_weight, add_self_loops, dtype)
    w = (edge_weight if edge_weight is not None
         else torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device))
    if add_self_loops:
        edge_index, w = add_remaining_self_loops(edge_index, num_nodes, w, 1.0)
        assert w is not None
    return edge_index, w


class GCNConv(nn.Module):
    """Kipf & Welling (2017) graph convolution; see :func:`gcn_conv`.

    ``cached=True`` keeps the normalised propagation matrix (as CSR, plus its transpose for the backward pass)
    between calls: full-batch transductive training then runs sparse-dense products only. The cache is keyed on
    the edge_index tensor object and its in-place version counter (and the edge_weight object), so calling the
    layer on a different graph rebuilds it instead of silently reusing a stale normalisation; edge weights that
    require a gradient bypass the cache.

    ``input_dropout`` drops the layer's input (on sparse features, their non-zeros only). Sparse features keep
    the structure of their product with the weight (:class:`~tricklab.layers.graph_ops.SparsePlan`) while the
    same feature tensor comes back unmodified.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        add_self_loops: bool = True,
        normalize: bool = True,
        bias: bool = True,
        cached: bool = False,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.add_self_loops, self.normalize, self.cached = add_self_loops, normalize, cached
        self.input_dropout = input_dropout
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._cache: tuple[Tensor, int, Tensor | None, int, tuple[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._cache = None

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        drop = {"input_dropout": self.input_dropout, "training": self.training, "plans": _sparse_plans(self, x)}
        if not self.cached or (edge_weight is not None and edge_weight.requires_grad):
            return gcn_conv(x, edge_index, self.weight, self.bias, edge_weight=edge_weight,
                            add_self_loops=self.add_self_loops, normalize=self.normalize, **drop)
        dtype = self.weight.dtype if is_sparse(x) else x.dtype
        c = self._cache
        if not (c is not None and c[0] is edge_index and c[1] == edge_index._version and c[2] is edge_weight
                and c[3] == x.shape[0] and c[4][1].dtype == dtype and c[4][1].device == x.device):
            norm = gcn_propagation_coefficients(edge_index, x.shape[0], edge_weight, self.add_self_loops,
                                                self.normalize, dtype)
            # the normalised matrix as CSR (and its transpose, for the backward pass), built once per graph
            c = (edge_index, edge_index._version, edge_weight, x.shape[0], norm, csr_adjacency(*norm, x.shape[0]))
            self._cache = c
        return gcn_conv(x, edge_index, self.weight, self.bias, adjacency=c[5], **drop)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, add_self_loops={self.add_self_loops}, "
                f"normalize={self.normalize}, cached={self.cached}, input_dropout={self.input_dropout}")


# ================================================================================================ GAT
def gat_conv(
    x: Tensor,
    edge_index: Tensor,
    weight: Tensor,
    att_src: Tensor,
    att_dst: Tensor,
    bias: Tensor | None = None,
    *,
    concat: bool = True,
    negative_slope: float = 0.2,
    dropout: float = 0.0,
    training: bool = False,
    add_self_loops: bool = True,
    return_attention: bool = False,
    input_dropout: float = 0.0,
    independent_head_dropout: bool = False,
    feature_dropout: float = 0.0,
    att_bias: Tensor | None = None,
    plans: dict[int, SparsePlan] | None = None,
) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
    """Graph attention (Velickovic et al. 2018, eqs. 1-6), H heads of C channels.

    Per head k:  h = W_k x (N, C);  e_ij = LeakyReLU(a_src,k . h_j + a_dst,k . h_i) for each edge j -> i (the
    paper's a^T [W h_i || W h_j] split into its two halves, so the scores are two (N,) dot products gathered
    per edge rather than an (E, 2C) concatenation);  alpha_ij = softmax over the incoming edges of i (incl. its
    self loop);  h'_i = sum_j alpha_ij h_j.  Heads are concatenated (N, H*C) or averaged (N, C), then + bias.

    Args:
        x: (N, F_in), dense or sparse (a sparse COO tensor; W x then touches only its non-zeros).
        weight: (H*C, F_in) (``nn.Linear`` layout, head-major rows); att_src, att_dst: (H, C); bias: (H*C,) or (C,).
        dropout: dropout on the normalised attention coefficients (the paper's 0.6 on Cora), active if ``training``.
        add_self_loops: remove existing loops and add one per node, so each node attends to itself once.
        return_attention: also return ``(edge_index', alpha (E', H))``.
        input_dropout: dropout on ``x`` (on sparse x, on its non-zeros only); ``independent_head_dropout``: each
            head draws its own mask, as each attention head of Velickovic et al.'s code drops its own input
            (otherwise one mask shared by the heads, torch_geometric's usual model).
        feature_dropout: dropout on the projected features W_k h_j where they are aggregated (after the scores
            are computed from them), as their code does.
        att_bias: (H,) a bias inside the LeakyReLU, e_ij = LeakyReLU(a_src . h_j + a_dst . h_i + b_k) (their code's
            attention is two 1x1 convolutions with biases; b is the sum of the two).
        plans: a cache of :class:`~tricklab.layers.graph_ops.SparsePlan` s of sparse x (see ``GATConv``).
    """
    n = x.shape[0]
    heads, channels = att_src.shape
    h = dropout_linear(x, weight, heads=heads, dropout=input_dropout, training=training,
                       independent_heads=independent_head_dropout, plans=plans).view(n, heads, channels)  # (N, H, C)
    score_src = (h * att_src).sum(-1)  # (N, H): a_src . W h_j
    score_dst = (h * att_dst).sum(-1)  # (N, H): a_dst . W h_i
    if add_self_loops:
        edge_index, _ = remove_self_loops(edge_index)
        edge_index, _ = _add_loops(edge_index, n)
    src, dst = edge_index[0], edge_index[1]
    e = score_src.index_select(0, src) + score_dst.index_select(0, dst)  # (E, H)
    if att_bias is not None:
        e = e + att_bias
    e = F.leaky_relu(e, negative_slope)
    alpha = segment_softmax(e, dst, n)  # (E, H), sums to 1 over the incoming edges of each node
    alpha_used = F.dropout(alpha, dropout, training) if dropout > 0 else alpha
    msg = F.dropout(h, feature_dropout, training) if feature_dropout > 0 else h
    out = propagate(msg, edge_index, alpha_used.unsqueeze(-1), n)  # (N, H, C)
    out = out.reshape(n, heads * channels) if concat else out.mean(1)
    if bias is not None:
        out = out + bias
    return (out, (edge_index, alpha)) if return_attention else out


class GATConv(nn.Module):
    """Velickovic et al. (2018) multi-head graph attention layer; see :func:`gat_conv`.

    ``input_dropout``, ``independent_head_dropout``, ``feature_dropout`` and ``attention_bias`` as in
    :func:`gat_conv` (``attention_bias`` adds two (H,) parameters, the biases of the two attention 1x1
    convolutions of Velickovic et al.'s code). ``per_head_init``: Glorot bounds per head, as their code
    initialises each head's (F_in -> C) projection and (C -> 1) attention vectors separately (otherwise one
    bound over all heads' rows, torch_geometric's). Sparse features keep the structure of their product with the
    weight (:class:`~tricklab.layers.graph_ops.SparsePlan`) while the same feature tensor comes back unmodified.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 1,
        *,
        concat: bool = True,
        negative_slope: float = 0.2,
        dropout: float = 0.0,
        add_self_loops: bool = True,
        bias: bool = True,
        input_dropout: float = 0.0,
        independent_head_dropout: bool = False,
        feature_dropout: float = 0.0,
        attention_bias: bool = False,
        per_head_init: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.heads = in_channels, out_channels, heads
        self.concat, self.negative_slope, self.dropout = concat, negative_slope, dropout
        self.add_self_loops = add_self_loops
        self.input_dropout, self.independent_head_dropout = input_dropout, independent_head_dropout
        self.feature_dropout, self.per_head_init = feature_dropout, per_head_init
        self.weight = nn.Parameter(torch.empty(heads * out_channels, in_channels))
        self.att_src = nn.Parameter(torch.empty(heads, out_channels))
        self.att_dst = nn.Parameter(torch.empty(heads, out_channels))
        self.att_src_bias = nn.Parameter(torch.empty(heads)) if attention_bias else None
        self.att_dst_bias = nn.Parameter(torch.empty(heads)) if attention_bias else None
        self.bias = nn.Parameter(torch.empty(heads * out_channels if concat else out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.per_head_init:  # per head: W_k (C, F_in) and a_k (1, C), as separate 1x1 convolutions
            h, c = self.heads, self.out_channels
            _glorot_(self.weight.data.view(h, c, self.in_channels))
            _glorot_(self.att_src.data.view(h, 1, c))
            _glorot_(self.att_dst.data.view(h, 1, c))
        else:
            _glorot_(self.weight)
            _glorot_(self.att_src)
            _glorot_(self.att_dst)
        for b in (self.bias, self.att_src_bias, self.att_dst_bias):
            if b is not None:
                nn.init.zeros_(b)

    def forward(self, x: Tensor, edge_index: Tensor,
                return_attention: bool = False) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        att_bias = (self.att_src_bias + self.att_dst_bias) if self.att_src_bias is not None else None
        return gat_conv(x, edge_index, self.weight, self.att_src, self.att_dst, self.bias, concat=self.concat,
                        negative_slope=self.negative_slope, dropout=self.dropout, training=self.training,
                        add_self_loops=self.add_self_loops, return_attention=return_attention,
                        input_dropout=self.input_dropout, independent_head_dropout=self.independent_head_dropout,
                        feature_dropout=self.feature_dropout, att_bias=att_bias, plans=_sparse_plans(self, x))

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)}" for k in ("input_dropout", "feature_dropout")
                        if getattr(self, k))
        if self.independent_head_dropout:
            extra += ", independent_head_dropout=True"
        if self.att_src_bias is not None:
            extra += ", attention_bias=True"
        return (f"{self.in_channels}, {self.out_channels}, heads={self.heads}, concat={self.concat}, "
                f"dropout={self.dropout}{extra}")


# ================================================================================================ GraphSAGE
def lstm_aggregate(x: Tensor, edge_index: Tensor, num_nodes: int, lstm: nn.LSTM) -> Tensor:
    """Hamilton et al.'s LSTM aggregator: each node's neighbour features, as a sequence ordered by edge order
    (edges stably sorted by target), run through ``lstm`` (batch_first); the aggregate is the last hidden state
    after the node's *own* neighbours (packed sequences: no padding is read). Isolated nodes aggregate to 0.

    Returns (N, hidden_size).
    """
    perm = torch.argsort(edge_index[1], stable=True)
    src, dst = edge_index[0, perm], edge_index[1, perm]
    deg = torch.bincount(dst, minlength=num_nodes)  # (N,)
    out = x.new_zeros(num_nodes, lstm.hidden_size)
    if dst.numel() == 0:
        return out
    nodes = torch.nonzero(deg, as_tuple=True)[0]  # (M,) nodes with >= 1 neighbour
    lengths = deg[nodes]
    local = torch.full((num_nodes,), -1, dtype=torch.long, device=x.device)
    local[nodes] = torch.arange(nodes.numel(), device=x.device)
    start = torch.cumsum(deg, 0) - deg  # first sorted edge of each node
    pos = torch.arange(dst.numel(), device=x.device) - start[dst]  # position of each edge in its node's sequence
    dense = x.new_zeros(nodes.numel(), int(lengths.max()), x.shape[1])  # (M, max_deg, F)
    dense = dense.index_put((local[dst], pos), x.index_select(0, src))
    packed = nn.utils.rnn.pack_padded_sequence(dense, lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(packed)  # h_n (layers * dirs, M, hidden), already back in the input order
    return out.index_copy(0, nodes, h_n[-1])


def sage_aggregate(
    x: Tensor,
    edge_index: Tensor,
    num_nodes: int,
    aggr: SageAggr = "mean",
    *,
    project_weight: Tensor | None = None,
    project_bias: Tensor | None = None,
    lstm: nn.LSTM | None = None,
) -> Tensor:
    """AGGREGATE_k({h_j : j -> i}) of Hamilton et al. (2017, Sec. 3.3): 'mean'; 'max' (pooling aggregator: with
    ``project_weight`` the neighbours first pass through ReLU(W_pool h_j + b), then an element-wise max);
    'lstm' (see :func:`lstm_aggregate`)."""
    if aggr == "lstm":
        if lstm is None:
            raise ValueError("sage_aggregate(aggr='lstm') needs an nn.LSTM")
        return lstm_aggregate(x, edge_index, num_nodes, lstm)
    if project_weight is not None:
        x = F.relu(F.linear(x, project_weight, project_bias))
    if aggr not in ("mean", "max"):
        raise ValueError(f"unknown GraphSAGE aggregator {aggr!r}; expected 'mean', 'max' or 'lstm'")
    return scatter(x.index_select(0, edge_index[0]), edge_index[1], 0, num_nodes, aggr)


def sage_conv(
    x: Tensor,
    edge_index: Tensor,
    weight_l: Tensor,
    bias_l: Tensor | None,
    weight_r: Tensor | None,
    *,
    aggr: SageAggr = "mean",
    project_weight: Tensor | None = None,
    project_bias: Tensor | None = None,
    lstm: nn.LSTM | None = None,
    normalize: bool = False,
) -> Tensor:
    """GraphSAGE layer (Hamilton et al. 2017, Alg. 1 lines 4-5):  h'_i = W_l AGG({h_j}) + b + W_r h_i, i.e.
    W [AGG || h_i] with W split into its neighbour and root halves; optionally L2-normalised (line 7).

    weight_l: (F_out, F_agg), bias_l: (F_out,), weight_r: (F_out, F_in) or None (no root term).
    """
    agg = sage_aggregate(x, edge_index, x.shape[0], aggr, project_weight=project_weight, project_bias=project_bias,
                         lstm=lstm)
    out = F.linear(agg, weight_l, bias_l)
    if weight_r is not None:
        out = out + F.linear(x, weight_r)
    return F.normalize(out, p=2.0, dim=-1) if normalize else out


class SAGEConv(nn.Module):
    """GraphSAGE layer; see :func:`sage_conv`. ``aggr='max'`` uses Hamilton's pooling aggregator (a Linear+ReLU
    before the max) unless ``project=False``; ``aggr='lstm'`` owns an ``nn.LSTM(in, in)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        aggr: SageAggr = "mean",
        *,
        root_weight: bool = True,
        normalize: bool = False,
        bias: bool = True,
        project: bool | None = None,
    ) -> None:
        super().__init__()
        if aggr not in ("mean", "max", "lstm"):
            raise ValueError(f"unknown GraphSAGE aggregator {aggr!r}; expected 'mean', 'max' or 'lstm'")
        self.in_channels, self.out_channels, self.aggr, self.normalize = in_channels, out_channels, aggr, normalize
        project = (aggr == "max") if project is None else project
        self.proj = nn.Linear(in_channels, in_channels) if project else None
        self.lstm = nn.LSTM(in_channels, in_channels, batch_first=True) if aggr == "lstm" else None
        self.lin_l = nn.Linear(in_channels, out_channels, bias=bias)
        self.lin_r = nn.Linear(in_channels, out_channels, bias=False) if root_weight else None

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        return sage_conv(
            x, edge_index, self.lin_l.weight, self.lin_l.bias, self.lin_r.weight if self.lin_r is not None else None,
            aggr=self.aggr, project_weight=self.proj.weight if self.proj is not None else None,
            project_bias=self.proj.bias if self.proj is not None else None, lstm=self.lstm, normalize=self.normalize,
        )

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, aggr={self.aggr!r}, normalize={self.normalize}"


def sample_neighbors(
    edge_index: Tensor,
    seeds: Tensor,
    fanouts: Sequence[int],
    generator: torch.Generator | None = None,
    num_nodes: int | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Layer-wise uniform neighbour sampling for mini-batch GraphSAGE (Hamilton et al. 2017, Alg. 2).

    Hop k (k = 1..K, K = len(fanouts)) samples, for every node first reached at hop k-1 (the seeds at hop 0), up
    to ``fanouts[k-1]`` of its incoming edges uniformly without replacement (all of them if the node has fewer,
    or if the fanout is negative). Each node is expanded once.

    Returns:
        node_ids: (M,) global ids of the sampled nodes; the seeds come first, in the given order (de-duplicated),
            then the nodes reached at hop 1, hop 2, ... (each hop's new nodes in increasing id).
        edge_indices: K edge indices in local ids (indices into node_ids), one per model layer from input to
            output: layer l (0-based) gets the edges sampled at hops 1..K-l, which are exactly the incoming edges
            its outputs need for the seeds' final representations. Run layer l over all M nodes with
            ``edge_indices[l]``; rows 0..len(seeds)-1 of the last layer's output are the seeds' representations.
    """
    device = edge_index.device
    n = num_nodes if num_nodes is not None else (int(edge_index.max()) + 1 if edge_index.numel() else 0)
    n = max(n, int(seeds.max()) + 1 if seeds.numel() else 0)
    # CSR over targets: the incoming edges of node v are sorted positions start[v] .. start[v] + deg[v] - 1
    perm = torch.argsort(edge_index[1], stable=True)
    src_sorted, dst_sorted = edge_index[0, perm], edge_index[1, perm]
    deg = torch.bincount(dst_sorted, minlength=n)
    start = torch.cumsum(deg, 0) - deg

    # de-duplicate the seeds, keeping their first-occurrence order
    seeds = seeds.to(device=device, dtype=torch.long)
    uniq, inverse = torch.unique(seeds, return_inverse=True)
    first = torch.full((uniq.numel(),), seeds.numel(), dtype=torch.long, device=device)
    first = first.scatter_reduce(0, inverse, torch.arange(seeds.numel(), device=device), "amin")
    seeds = uniq[torch.argsort(first)]

    local = torch.full((n,), -1, dtype=torch.long, device=device)
    local[seeds] = torch.arange(seeds.numel(), device=device)
    node_ids = [seeds]
    count = seeds.numel()
    frontier = seeds
    hop_edges: list[Tensor] = []
    for fanout in fanouts:
        d = deg[frontier]
        total = int(d.sum())
        # positions (into the sorted edges) of all incoming edges of the frontier, grouped by frontier node
        owner = torch.repeat_interleave(torch.arange(frontier.numel(), device=device), d)
        offset = torch.arange(total, device=device) - torch.repeat_interleave(torch.cumsum(d, 0) - d, d)
        pos = start[frontier].repeat_interleave(d) + offset
        if fanout >= 0 and total:
            # uniform sample without replacement: random keys, keep the fanout smallest per node (sort by key, then
            # stably by owner, so that within each owner the keys are increasing)
            keys = torch.rand(total, generator=generator, device=device)
            order = torch.argsort(keys)
            order = order[torch.argsort(owner[order], stable=True)]
            rank = torch.arange(total, device=device) - torch.repeat_interleave(torch.cumsum(d, 0) - d, d)
            pos = torch.sort(pos[order[rank < fanout]]).values  # keep edge order within each node
        src, dst = src_sorted[pos], dst_sorted[pos]
        new = torch.unique(src[local[src] < 0])
        local[new] = torch.arange(count, count + new.numel(), device=device)
        count += new.numel()
        node_ids.append(new)
        hop_edges.append(torch.stack([local[src], local[dst]]))
        frontier = new
    k = len(fanouts)
    edge_indices = [torch.cat(hop_edges[: k - layer], dim=1) for layer in range(k)]
    return torch.cat(node_ids), edge_indices


# ================================================================================================ Gated GNN
def gru_cell(inp: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """GRU cell (Cho et al. 2014) in ``nn.GRUCell``'s parameter layout (gates r, z, n stacked in rows):
    r = s(W_ir m + b_ir + W_hr h + b_hr), z = s(W_iz m + b_iz + W_hz h + b_hz),
    n = tanh(W_in m + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h."""
    gi = F.linear(inp, w_ih, b_ih)  # (N, 3C)
    gh = F.linear(h, w_hh, b_hh)
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return n + z * (h - n)  # = (1 - z) * n + z * h


def gated_graph_conv(
    x: Tensor,
    edge_index: Tensor,
    weight: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    *,
    edge_weight: Tensor | None = None,
) -> Tensor:
    """Gated graph neural network propagation (Li et al. 2016, eqs. 1-6), in torch_geometric's GatedGraphConv form.

    h^(0) = [x, 0] padded with zeros to C channels (the paper pads the node annotations); for t = 1..T:
    m_i = sum_{j -> i} w_ji h_j^(t-1) W_t   (W_t (C, C), one per step, right-multiplied),
    h^(t) = GRU(m, h^(t-1)).   ``weight`` is (T, C, C); the GRU parameters are ``nn.GRUCell(C, C)``'s.
    Since sum_j (h_j W_t) = (sum_j h_j) W_t, W_t is applied per node before the scatter (N x C, not E x C, work).
    """
    channels = weight.shape[-1]
    if x.shape[-1] > channels:
        raise ValueError(f"gated_graph_conv: {x.shape[-1]} input channels exceed the {channels} hidden channels")
    h = F.pad(x, (0, channels - x.shape[-1])) if x.shape[-1] < channels else x
    for t in range(weight.shape[0]):
        m = propagate(h @ weight[t], edge_index, edge_weight, h.shape[0])
        h = gru_cell(m, h, w_ih, w_hh, b_ih, b_hh)
    return h


class GatedGraphConv(nn.Module):
    """Li et al. (2016) gated graph layer: T propagation steps with per-step weights and a shared GRU cell."""

    def __init__(self, out_channels: int, num_layers: int, *, bias: bool = True) -> None:
        super().__init__()
        self.out_channels, self.num_layers = out_channels, num_layers
        self.weight = nn.Parameter(torch.empty(num_layers, out_channels, out_channels))
        self.rnn = nn.GRUCell(out_channels, out_channels, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.out_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        self.rnn.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None) -> Tensor:
        return gated_graph_conv(x, edge_index, self.weight, self.rnn.weight_ih, self.rnn.weight_hh,
                                self.rnn.bias_ih, self.rnn.bias_hh, edge_weight=edge_weight)

    def extra_repr(self) -> str:
        return f"{self.out_channels}, num_layers={self.num_layers}"


__all__ = [
    "GATConv",
    "GCNConv",
    "GatedGraphConv",
    "SAGEConv",
    "gat_conv",
    "gated_graph_conv",
    "gcn_conv",
    "gcn_propagation_coefficients",
    "gru_cell",
    "lstm_aggregate",
    "sage_aggregate",
    "sage_conv",
    "sample_neighbors",
]


# ---------------------------------------------------------------------------------------------------------
# Layer contract (tests/contracts/test_layers.py): a 6-node graph where every node has an incoming edge.
# ---------------------------------------------------------------------------------------------------------


def _graph_example(g: torch.Generator, channels: int = 4) -> tuple[Tensor, Tensor]:
    src = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2, 4])
    dst = torch.tensor([1, 2, 3, 4, 5, 0, 3, 5, 1])
    return torch.randn(6, channels, generator=g), torch.stack([src, dst])


def _graph_specs() -> tuple[Any, ...]:
    from tricklab.layers.spec import LayerSpec

    return (
        LayerSpec("gcn_conv", "graph", lambda: GCNConv(4, 3), _graph_example, "Kipf & Welling 2017 graph convolution"),
        LayerSpec("gat_conv", "graph", lambda: GATConv(4, 3, heads=2), _graph_example,
                  "Velickovic et al. 2018 multi-head graph attention"),
        LayerSpec("sage_conv_mean", "graph", lambda: SAGEConv(4, 3, "mean"), _graph_example,
                  "Hamilton et al. 2017 GraphSAGE, mean aggregator"),
        LayerSpec("sage_conv_max", "graph", lambda: SAGEConv(4, 3, "max"), _graph_example,
                  "Hamilton et al. 2017 GraphSAGE, max-pooling aggregator"),
        LayerSpec("sage_conv_lstm", "graph", lambda: SAGEConv(4, 3, "lstm"), _graph_example,
                  "Hamilton et al. 2017 GraphSAGE, LSTM aggregator", compile=False,
                  compile_note="packed sequences (pack_padded_sequence) are not traceable by Dynamo"),
        LayerSpec("gated_graph_conv", "graph", lambda: GatedGraphConv(4, 2), _graph_example,
                  "Li et al. 2016 gated graph network (GRU updates)"),
    )


LAYER_SPECS = _graph_specs()
