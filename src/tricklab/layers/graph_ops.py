"""Edge-index graph primitives in plain PyTorch: self loops, degrees, GCN normalisation, scatter reductions,
segment softmax and global pooling.

Convention (as in :mod:`tricklab.data.graph`): ``edge_index`` is (2, E) int64 with sources ``j = edge_index[0]``
and targets ``i = edge_index[1]``; a message flows j -> i and node i reduces the messages of its incoming edges.
Every reduction here is a scatter over the *target* index, built on ``Tensor.index_add_`` (sums; one fused
kernel, deterministic on CPU) and ``Tensor.scatter_reduce_`` (max). Empty groups (isolated nodes, graphs without
nodes) reduce to 0, the convention of the message-passing literature.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduce = Literal["sum", "mean", "max"]


# --------------------------------------------------------------------------------------------- self loops
def remove_self_loops(edge_index: Tensor, edge_weight: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """Drop every edge i -> i. Returns the kept (2, E') edges and their weights (or None)."""
    keep = edge_index[0] != edge_index[1]
    return edge_index[:, keep], (edge_weight[keep] if edge_weight is not None else None)


def add_self_loops(
    edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None, fill_value: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """Append one loop i -> i per node (after the existing edges, existing loops kept): A -> A + I.

    Loops are appended at the end so that edge e keeps its position; ``edge_weight`` (E, ...) is extended with
    ``fill_value``.
    """
    loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype).unsqueeze(0).expand(2, -1)
    out = torch.cat([edge_index, loops], dim=1)
    if edge_weight is None:
        return out, None
    fill = edge_weight.new_full((num_nodes, *edge_weight.shape[1:]), fill_value)
    return out, torch.cat([edge_weight, fill], dim=0)


def add_remaining_self_loops(
    edge_index: Tensor, num_nodes: int, edge_weight: Tensor | None = None, fill_value: float = 1.0
) -> tuple[Tensor, Tensor | None]:
    """Exactly one loop per node: existing loops are removed and one loop i -> i appended per node, whose weight is
    that of an existing loop of i (the last one, if several) or ``fill_value``. This is Kipf & Welling's A + I on a
    graph that may already hold loops (the diagonal is set, not incremented), and torch_geometric's GCN convention.
    """
    is_loop = edge_index[0] == edge_index[1]
    kept = edge_index[:, ~is_loop]
    loops = torch.arange(num_nodes, device=edge_index.device, dtype=edge_index.dtype).unsqueeze(0).expand(2, -1)
    out = torch.cat([kept, loops], dim=1)
    if edge_weight is None:
        return out, None
    loop_w = edge_weight.new_full((num_nodes, *edge_weight.shape[1:]), fill_value)
    # index_put with duplicate indices keeps the last write on CPU; the order is not guaranteed on CUDA
    loop_w[edge_index[0, is_loop]] = edge_weight[is_loop]
    return out, torch.cat([edge_weight[~is_loop], loop_w], dim=0)


# --------------------------------------------------------------------------------------------- degrees
def degree(index: Tensor, num_nodes: int, edge_weight: Tensor | None = None,
           dtype: torch.dtype | None = None) -> Tensor:
    """(N,) number (or weighted sum) of entries of ``index`` per node: in-degree for ``edge_index[1]``."""
    if edge_weight is None:
        return torch.bincount(index, minlength=num_nodes).to(dtype or torch.get_default_dtype())
    return edge_weight.new_zeros(num_nodes).index_add_(0, index, edge_weight).to(dtype or edge_weight.dtype)


def gcn_norm(
    edge_index: Tensor,
    num_nodes: int,
    edge_weight: Tensor | None = None,
    add_self_loops: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-edge coefficients of Kipf & Welling's (2017, eq. 2) propagation matrix  D^-1/2 (A + I) D^-1/2.

    With Â = A + I (loops via :func:`add_remaining_self_loops`) and D_ii = sum_j Â_ij (the weighted in-degree of i,
    counted over targets), edge j -> i of weight w gets  w / sqrt(D_jj D_ii).  A node of degree 0 (possible only
    without self loops) gets coefficient 0 rather than inf.

    Returns ``(edge_index', coeff)`` with (2, E') edges (loops appended) and (E',) coefficients.
    """
    dtype = dtype or (edge_weight.dtype if edge_weight is not None else torch.get_default_dtype())
    if edge_weight is None:
        edge_weight = torch.ones(edge_index.shape[1], dtype=dtype, device=edge_index.device)
    if add_self_loops:
        edge_index, edge_weight = add_remaining_self_loops(edge_index, num_nodes, edge_weight, 1.0)
        assert edge_weight is not None
    row, col = edge_index[0], edge_index[1]
    deg = edge_weight.new_zeros(num_nodes).index_add_(0, col, edge_weight)  # D_ii over targets
    dinv = deg.pow(-0.5)
    dinv = dinv.masked_fill(torch.isinf(dinv), 0.0)
    return edge_index, dinv[row] * edge_weight * dinv[col]


# --------------------------------------------------------------------------------------------- scatter
def _norm_dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def scatter_sum(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> Tensor:
    """out[.., k, ..] = sum of src[.., e, ..] over the e with index[e] = k, along ``dim``; index is 1-D
    (src.shape[dim],)."""
    dim = _norm_dim(dim, src.ndim)
    size = list(src.shape)
    size[dim] = int(index.max()) + 1 if dim_size is None and index.numel() else (dim_size or 0)
    return src.new_zeros(size).index_add_(dim, index, src)


def scatter_count(index: Tensor, dim_size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(dim_size,) number of entries per group."""
    return torch.bincount(index, minlength=dim_size).to(dtype)


def scatter_mean(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> Tensor:
    """Group mean along ``dim``; empty groups give 0 (the count is clamped to 1)."""
    dim = _norm_dim(dim, src.ndim)
    total = scatter_sum(src, index, dim, dim_size)
    count = scatter_count(index, total.shape[dim], src.dtype).clamp_(min=1)
    shape = [1] * src.ndim
    shape[dim] = -1
    return total / count.view(shape)


def scatter_max(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None) -> Tensor:
    """Group maximum along ``dim``; empty groups give 0. The gradient flows to the maximal entries (split evenly
    between ties, as ``torch.amax``)."""
    dim = _norm_dim(dim, src.ndim)
    size = list(src.shape)
    size[dim] = int(index.max()) + 1 if dim_size is None and index.numel() else (dim_size or 0)
    shape = [1] * src.ndim
    shape[dim] = -1
    idx = index.view(shape).expand_as(src)
    # include_self=False: the zeros only survive where no entry was scattered, i.e. in empty groups
    return src.new_zeros(size).scatter_reduce_(dim, idx, src, reduce="amax", include_self=False)


def scatter(src: Tensor, index: Tensor, dim: int = 0, dim_size: int | None = None, reduce: Reduce = "sum") -> Tensor:
    """Dispatch to :func:`scatter_sum`, :func:`scatter_mean` or :func:`scatter_max`."""
    if reduce == "sum" or reduce == "add":
        return scatter_sum(src, index, dim, dim_size)
    if reduce == "mean":
        return scatter_mean(src, index, dim, dim_size)
    if reduce == "max":
        return scatter_max(src, index, dim, dim_size)
    raise ValueError(f"unknown reduce {reduce!r}; expected 'sum', 'mean' or 'max'")


def segment_softmax(src: Tensor, index: Tensor, num_segments: int | None = None, dim: int = 0) -> Tensor:
    """Softmax of ``src`` within each group of entries sharing ``index`` (e.g. the incoming edges of a node).

    alpha_e = exp(s_e - m_g) / sum_{e' in g} exp(s_e' - m_g),  m_g = max_{e in g} s_e.  Subtracting the group max
    keeps exp() <= 1 (no overflow) and does not change the value; it is detached because the softmax is invariant
    to it (its gradient contribution is exactly 0). ``src`` is (E, ...) with ``index`` (E,) along ``dim``.
    """
    dim = _norm_dim(dim, src.ndim)
    n = num_segments if num_segments is not None else (int(index.max()) + 1 if index.numel() else 0)
    m = scatter_max(src.detach(), index, dim, n).index_select(dim, index)
    e = (src - m).exp()
    denom = scatter_sum(e, index, dim, n).index_select(dim, index)
    return e / denom


# --------------------------------------------------------------------------------------------- pooling
def global_pool(x: Tensor, batch: Tensor | None, num_graphs: int | None = None, reduce: Reduce = "mean") -> Tensor:
    """(G, F) readout of (N, F) node features per graph (``batch[n]`` = graph of node n; None = one graph)."""
    if batch is None:
        if reduce == "sum":
            return x.sum(0, keepdim=True)
        if reduce == "mean":
            return x.mean(0, keepdim=True)
        if reduce == "max":
            return x.amax(0, keepdim=True) if x.shape[0] else x.new_zeros(1, x.shape[1])
        raise ValueError(f"unknown reduce {reduce!r}; expected 'sum', 'mean' or 'max'")
    g = num_graphs if num_graphs is not None else (int(batch.max()) + 1 if batch.numel() else 0)
    return scatter(x, batch, 0, g, reduce)


def global_sum_pool(x: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
    return global_pool(x, batch, num_graphs, "sum")


def global_mean_pool(x: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
    return global_pool(x, batch, num_graphs, "mean")


def global_max_pool(x: Tensor, batch: Tensor | None, num_graphs: int | None = None) -> Tensor:
    return global_pool(x, batch, num_graphs, "max")


def sort_by_target(edge_index: Tensor) -> tuple[Tensor, Tensor]:
    """Edges stably sorted by target (ties keep edge order). Returns (sorted edge_index, permutation)."""
    perm = torch.argsort(edge_index[1], stable=True)
    return edge_index[:, perm], perm


__all__ = [
    "add_remaining_self_loops",
    "add_self_loops",
    "degree",
    "gcn_norm",
    "global_max_pool",
    "global_mean_pool",
    "global_pool",
    "global_sum_pool",
    "remove_self_loops",
    "scatter",
    "scatter_count",
    "scatter_max",
    "scatter_mean",
    "scatter_sum",
    "segment_softmax",
    "sort_by_target",
]


def propagate(
    x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None, num_nodes: int | None = None,
    reduce: Reduce = "sum",
) -> Tensor:
    """Message passing with identity messages: out_i = REDUCE_{(j -> i)} w_ji x_j over the incoming edges of i.

    ``x`` is (N, ...) and ``edge_weight`` (E,) or (E, ...) broadcastable to the gathered (E, ...) messages.
    For ``reduce="sum"`` this is the sparse-dense product A^T x with A_ji = w_ji, computed as one gather
    (x[j], (E, ...)) and one ``index_add_`` over targets.
    """
    n = num_nodes if num_nodes is not None else x.shape[0]
    msg = x.index_select(0, edge_index[0])
    if edge_weight is not None:
        msg = msg * edge_weight.view(-1, *([1] * (msg.ndim - 1))) if edge_weight.ndim == 1 else msg * edge_weight
    return scatter(msg, edge_index[1], 0, n, reduce)


__all__ += ["propagate"]


# --------------------------------------------------------------------------------------------- sparse propagation
def csr_adjacency(edge_index: Tensor, edge_weight: Tensor, num_nodes: int) -> tuple[Tensor, Tensor]:
    """The propagation matrix P (P[i, j] = sum of the weights of the edges j -> i; multi-edges add up) and its
    transpose, both as sparse CSR (N, N) tensors, for :func:`spmm`. Build once per graph (e.g. in a cache): the
    build sorts the edges, the products then run without any per-call sort or scatter."""
    w = edge_weight.detach()
    shape = (num_nodes, num_nodes)
    a = torch.sparse_coo_tensor(edge_index.flip(0), w, shape, check_invariants=False).coalesce()
    at = torch.sparse_coo_tensor(edge_index, w, shape, check_invariants=False).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matmul with a dense matrix is stable
        warnings.simplefilter("ignore", UserWarning)
        return a.to_sparse_csr(), at.to_sparse_csr()


class _SpMM(torch.autograd.Function):
    """y = P x with dL/dx = P^T dL/dy; P is a constant (no gradient w.r.t. the edge weights)."""

    @staticmethod
    def forward(ctx, a: Tensor, at: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.at = at
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:  # type: ignore[override]
        return None, None, torch.sparse.mm(ctx.at, grad.contiguous())


def spmm(adjacency: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    """P x for ``adjacency = csr_adjacency(...)`` and x (N, F): the same sums as :func:`propagate` with constant
    edge weights, with P^T precomputed for the backward pass."""
    a, at = adjacency
    return _SpMM.apply(a, at, x.contiguous())


__all__ += ["csr_adjacency", "spmm"]


# --------------------------------------------------------------------------------------------- sparse features
# Bag-of-words node features (Planetoid: 1-2% non-zero) are kept as a sparse COO (N, F) tensor. A layer's first
# product x W^T then touches only the non-zeros, and dropout on the input draws one Bernoulli per non-zero
# instead of N x F (dropout leaves a zero a zero, so this is the same distribution over the same outputs).


def is_sparse(x: Tensor) -> bool:
    """True for a sparse (COO or compressed) tensor."""
    return x.layout != torch.strided


def to_dense_features(x: Tensor) -> Tensor:
    """``x`` as a dense tensor (for layers without a sparse path)."""
    return x.to_dense() if is_sparse(x) else x


def _csr(crow: Tensor, col: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR x dense products are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


class SparsePlan:
    """The CSR structure of a sparse (N, F) matrix X and of its transpose, for X W^T with a gradient for W.

    With ``heads = H > 1`` it is the structure of the (N H, F H) matrix B whose row n H + k holds row n of X in
    the columns f H + k: B times W^T viewed as (F H, C) gives, in row n H + k, row n of X times head k's weight
    (C, F), i.e. (N, H C) per-head products in one sparse product, each head with its own copy of the values
    (so dropout on B's values is independent per head, as in Velickovic et al.'s code where each attention head
    drops its input on its own). ``values`` are X's values in B's entry order; ``perm`` orders B's entries as
    B^T's CSR needs them (for the backward product). Built without sorting beyond one stable argsort of X's
    columns.
    """

    def __init__(self, x: Tensor, heads: int = 1) -> None:
        if x.ndim != 2:
            raise ValueError(f"sparse features must be (num_nodes, num_features), got shape {tuple(x.shape)}")
        x = (x.to_sparse_coo() if x.layout != torch.sparse_coo else x).coalesce()  # sorted by (row, col)
        n, f = x.shape
        h = int(heads)
        row, col = x.indices()
        dev = row.device
        count = torch.bincount(row, minlength=n)  # non-zeros per row of X
        start = torch.cumsum(count, 0) - count
        count_t = torch.bincount(col, minlength=f)  # per column
        start_t = torch.cumsum(count_t, 0) - count_t
        order_t = torch.argsort(col, stable=True)  # X^T's entry order: by (col, row)
        rank_t = torch.empty_like(order_t)
        rank_t[order_t] = torch.arange(order_t.numel(), device=dev)
        rank_t = rank_t - start_t[col]  # position of each entry inside its column
        e = torch.arange(row.numel(), device=dev)
        k = torch.arange(h, device=dev).view(h, 1)  # (H, 1): entry (e, k) of B is X's entry e in head k
        pos = h * start[row] + k * count[row] + (e - start[row])  # (H, nnz) position in B's CSR order
        pos_t = h * start_t[col] + k * count_t[col] + rank_t  # position in B^T's CSR order
        nnz = h * row.numel()
        self.shape, self.heads, self.dtype = (int(n), int(f)), h, x.dtype
        self.crow = torch.cat([count.new_zeros(1), torch.cumsum(count.repeat_interleave(h), 0)])
        self.col = torch.empty(nnz, dtype=torch.long, device=dev)
        self.col[pos.reshape(-1)] = (col * h + k).reshape(-1)
        self.values = torch.empty(nnz, dtype=x.dtype, device=dev)
        self.values[pos.reshape(-1)] = x.values().expand(h, -1).reshape(-1)
        self.crow_t = torch.cat([count_t.new_zeros(1), torch.cumsum(count_t.repeat_interleave(h), 0)])
        self.col_t = torch.empty(nnz, dtype=torch.long, device=dev)
        self.col_t[pos_t.reshape(-1)] = (row * h + k).reshape(-1)
        self.perm = torch.empty(nnz, dtype=torch.long, device=dev)
        self.perm[pos_t.reshape(-1)] = pos.reshape(-1)


class _SparseLinear(torch.autograd.Function):
    """out = B W^T (see :class:`SparsePlan`); dL/dW = (B^T dL/dout)^T. B is constant (no gradient)."""

    @staticmethod
    def forward(ctx, plan: SparsePlan, values: Tensor, weight: Tensor) -> Tensor:  # type: ignore[override]
        n, f = plan.shape
        h = plan.heads
        wt = weight.t().contiguous().view(f * h, weight.shape[0] // h)  # row f H + k = head k's column f
        out = torch.sparse.mm(_csr(plan.crow, plan.col, values, (n * h, f * h)), wt)  # (N H, C)
        ctx.plan = plan
        ctx.save_for_backward(values)
        return out.view(n, weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:  # type: ignore[override]
        plan: SparsePlan = ctx.plan
        (values,) = ctx.saved_tensors
        n, f = plan.shape
        h = plan.heads
        g = grad.contiguous().view(n * h, grad.shape[1] // h)
        bt = _csr(plan.crow_t, plan.col_t, values[plan.perm], (f * h, n * h))
        return None, None, torch.sparse.mm(bt, g).view(f, grad.shape[1]).t()


def sparse_linear(
    x: Tensor, weight: Tensor, *, heads: int = 1, dropout: float = 0.0, training: bool = False,
    plan: SparsePlan | None = None, values: Tensor | None = None,
) -> Tensor:
    """X W^T for a sparse (N, F) ``x`` and a dense (out, F) ``weight``, touching only the non-zeros.

    ``dropout`` (active if ``training``) drops the non-zeros of X only. With ``heads = H > 1`` the weight's rows are
    H heads of out / H rows each and every head gets its own dropout mask (without dropout the heads share X and
    one product is used). ``plan``: a :class:`SparsePlan` of ``x`` for these heads, built once and reused when the
    same features come back every epoch (the layers cache it); ``values``: the plan's values with dropout already
    applied (for tests that fix the mask). The gradient flows to ``weight`` only: sparse features are data.
    """
    if weight.shape[0] % heads:
        raise ValueError(f"weight has {weight.shape[0]} rows, not a multiple of heads={heads}")
    if x.requires_grad:
        raise ValueError("sparse features cannot require a gradient (the sparse path differentiates the weight only); "
                         "pass x.to_dense() to differentiate the features")
    drop = dropout > 0.0 and training
    h = heads if (drop or values is not None) else 1  # without dropout every head reads the same X
    if plan is None or plan.heads != h:
        plan = SparsePlan(x, h)
    if values is None:
        values = F.dropout(plan.values, dropout, True) if drop else plan.values
    return _SparseLinear.apply(plan, values.to(weight.dtype), weight)


def dropout_linear(
    x: Tensor, weight: Tensor, *, heads: int = 1, dropout: float = 0.0, training: bool = False,
    independent_heads: bool = False, plans: dict[int, SparsePlan] | None = None,
) -> Tensor:
    """F.linear(dropout(x), weight) without bias, for sparse or dense ``x``; ``independent_heads``: each of the
    ``heads`` blocks of weight rows sees its own dropout of x (Velickovic et al.'s GAT code), else one shared mask.

    Sparse x goes through :func:`sparse_linear` (``plans``: a dict heads -> :class:`SparsePlan` to reuse and fill).
    Dense x with independent masks draws an (H, N, F) mask and runs one batched product.
    """
    h = heads if (independent_heads and dropout > 0.0 and training) else 1
    if is_sparse(x):
        plan = None
        if plans is not None:
            plan = plans.get(h)
            if plan is None:
                plan = plans[h] = SparsePlan(x, h)
        return sparse_linear(x, weight, heads=h, dropout=dropout, training=training, plan=plan)
    if h == 1:
        return F.linear(F.dropout(x, dropout, training) if dropout > 0.0 else x, weight)
    n, f = x.shape
    xs = F.dropout(x.unsqueeze(0).expand(h, n, f), dropout, True)  # (H, N, F): an independent mask per head
    out = torch.bmm(xs, weight.view(h, -1, f).transpose(1, 2))  # (H, N, C)
    return out.transpose(0, 1).reshape(n, weight.shape[0])


__all__ += ["SparsePlan", "dropout_linear", "is_sparse", "sparse_linear", "to_dense_features"]
