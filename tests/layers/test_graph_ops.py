"""graph_ops against simple Python-loop references (the slow path for each fast scatter) and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from tricklab.layers.graph_ops import (
    add_remaining_self_loops,
    add_self_loops,
    degree,
    gcn_norm,
    global_pool,
    propagate,
    remove_self_loops,
    scatter,
    segment_softmax,
)


def _loop_scatter(src: torch.Tensor, index: torch.Tensor, dim: int, n: int, reduce: str) -> torch.Tensor:
    """Reference: move ``dim`` to the front and reduce each group with a Python loop (empty group -> 0)."""
    s = src.movedim(dim, 0)
    rows = []
    for k in range(n):
        members = s[index == k]
        if members.shape[0] == 0:
            rows.append(torch.zeros_like(s[0]))
        elif reduce == "sum":
            rows.append(members.sum(0))
        elif reduce == "mean":
            rows.append(members.mean(0))
        else:
            rows.append(members.max(0).values)
    return torch.stack(rows).movedim(0, dim)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_scatter_matches_loop_outputs_and_gradients(reduce: str, dim: int) -> None:
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(7, 9, 5, generator=gen, dtype=torch.float64)  # continuous: no ties for max
    length = src.shape[dim]
    n = length + 2  # the last groups are empty
    index = torch.randint(0, length - 1, (length,), generator=gen)
    a = src.clone().requires_grad_(True)
    b = src.clone().requires_grad_(True)
    out = scatter(a, index, dim, n, reduce)  # type: ignore[arg-type]
    ref = _loop_scatter(b, index, dim, n, reduce)
    torch.testing.assert_close(out, ref)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_scatter_infers_dim_size_and_rejects_unknown_reduce() -> None:
    src = torch.ones(4, 2)
    assert scatter(src, torch.tensor([0, 2, 2, 0]), 0).shape == (3, 2)
    with pytest.raises(ValueError, match="reduce"):
        scatter(src, torch.tensor([0, 1, 1, 0]), 0, 2, "min")  # type: ignore[arg-type]


def test_segment_softmax_sums_to_one_and_matches_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    e, n, h = 40, 10, 3
    index = torch.randint(0, n - 2, (e,), generator=gen)  # nodes n-2, n-1 have no edges
    src = torch.randn(e, h, generator=gen, dtype=torch.float64) * 5
    a = src.clone().requires_grad_(True)
    b = src.clone().requires_grad_(True)
    out = segment_softmax(a, index, n)
    ref_parts = {}
    for k in range(n):  # reference: torch.softmax on each group separately
        m = index == k
        if m.any():
            ref_parts[k] = (m, torch.softmax(b[m], dim=0))
    ref = torch.zeros_like(b)
    for m, part in ref_parts.values():
        ref = ref.index_put((torch.nonzero(m, as_tuple=True)[0],), part)
    torch.testing.assert_close(out, ref)
    sums = torch.zeros(n, h, dtype=torch.float64).index_add_(0, index, out.detach())
    present = torch.bincount(index, minlength=n) > 0
    torch.testing.assert_close(sums[present], torch.ones_like(sums[present]))
    g = torch.randn(e, h, generator=gen, dtype=torch.float64)
    (out * g).sum().backward()
    (ref * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_segment_softmax_is_stable_for_huge_scores() -> None:
    # reference: closed form, softmax([1000, 1000 + log 3]) = [1/4, 3/4]; exp(1000) alone overflows
    src = torch.tensor([1000.0, 1000.0 + math.log(3.0), -1000.0])
    out = segment_softmax(src, torch.tensor([0, 0, 1]), 2)
    torch.testing.assert_close(out, torch.tensor([0.25, 0.75, 1.0]))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_global_pool_matches_loop(reduce: str) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(12, 4, generator=gen, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 3, 3, 3, 3, 3, 1, 0])  # graph 2 has no nodes
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    out = global_pool(a, batch, 4, reduce)  # type: ignore[arg-type]
    ref = _loop_scatter(b, batch, 0, 4, reduce)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    # batch=None: one graph, reference torch.sum / mean / amax over the nodes
    one = global_pool(x, None, reduce=reduce)  # type: ignore[arg-type]
    torch.testing.assert_close(one, {"sum": x.sum(0), "mean": x.mean(0), "max": x.amax(0)}[reduce][None])


def test_self_loops() -> None:
    ei = torch.tensor([[0, 1, 1, 2, 2], [1, 1, 0, 2, 2]])
    w = torch.tensor([1.0, 5.0, 2.0, 7.0, 8.0])
    kept, kw = remove_self_loops(ei, w)
    assert kept.tolist() == [[0, 1], [1, 0]] and kw.tolist() == [1.0, 2.0]
    added, aw = add_self_loops(ei, 4, w, fill_value=3.0)
    assert added[:, :5].tolist() == ei.tolist() and added[:, 5:].tolist() == [[0, 1, 2, 3]] * 2
    assert aw.tolist() == [1.0, 5.0, 2.0, 7.0, 8.0, 3.0, 3.0, 3.0, 3.0]
    rem, rw = add_remaining_self_loops(ei, 4, w, fill_value=1.0)
    # one loop per node; an existing loop keeps its weight (the last one for node 2)
    assert rem.tolist() == [[0, 1, 0, 1, 2, 3], [1, 0, 0, 1, 2, 3]]
    assert rw.tolist() == [1.0, 2.0, 1.0, 5.0, 8.0, 1.0]


def test_degree_and_gcn_norm_match_dense_closed_form() -> None:
    # reference: the dense matrix D^-1/2 (A + I) D^-1/2 of Kipf & Welling eq. 2 computed in NumPy-style dense torch
    gen = torch.Generator().manual_seed(3)
    n = 8
    ei = torch.randint(0, n - 1, (2, 20), generator=gen)  # node 7 isolated; duplicates and loops possible
    w = torch.rand(20, generator=gen, dtype=torch.float64) + 0.5
    assert degree(ei[1], n).tolist() == [float((ei[1] == k).sum()) for k in range(n)]
    torch.testing.assert_close(degree(ei[1], n, w), torch.zeros(n, dtype=torch.float64).index_add_(0, ei[1], w))
    a = torch.zeros(n, n, dtype=torch.float64)  # a[i, j] = weight of j -> i
    for (j, i), wt in zip(ei.t().tolist(), w.tolist(), strict=True):
        if i != j:
            a[i, j] += wt
    diag = torch.ones(n, dtype=torch.float64)
    for (j, i), wt in zip(ei.t().tolist(), w.tolist(), strict=True):
        if i == j:
            diag[i] = wt  # remaining-self-loop convention: the existing loop weight replaces the fill value
    a_hat = a + torch.diag(diag)
    dinv = a_hat.sum(1).pow(-0.5)
    dense = dinv[:, None] * a_hat * dinv[None, :]
    e2, coeff = gcn_norm(ei, n, w)
    x = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(propagate(x, e2, coeff), dense @ x)


def test_propagate_matches_dense_and_handles_empty_graph() -> None:
    gen = torch.Generator().manual_seed(4)
    ei = torch.randint(0, 5, (2, 11), generator=gen)
    x = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    dense = torch.zeros(6, 6, dtype=torch.float64).index_put_((ei[1], ei[0]), torch.ones(11, dtype=torch.float64),
                                                              accumulate=True)
    torch.testing.assert_close(propagate(x, ei), dense @ x)
    empty = torch.empty(2, 0, dtype=torch.long)
    assert propagate(x, empty).abs().sum() == 0 and propagate(x, empty, reduce="max").shape == (6, 2)
