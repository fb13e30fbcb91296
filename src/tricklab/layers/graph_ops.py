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
def degree(index: Tensor, num_nodes: int, edge_weight: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
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
    """out[.., k, ..] = sum of src[.., e, ..] over the e with index[e] = k, along ``dim``; index is 1-D (src.shape[dim],)."""
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
