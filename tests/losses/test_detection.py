"""Detection losses (tricklab.losses.detection): our Hungarian algorithm against scipy.optimize.linear_sum_assignment
and a brute force over permutations; generalized IoU against its formula computed by hand (overlapping, disjoint,
nested, touching boxes); DETR's set loss against a slow per-image reference with brute-force matching (outputs
and gradients)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.losses import LOSSES
from tricklab.losses.detection import (
    MatchWeights,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    elementwise_giou,
    generalized_box_iou,
    hungarian_match,
    linear_sum_assignment,
    matching_cost,
    set_loss,
    unpad_targets,
)

scipy_optimize = pytest.importorskip("scipy.optimize")


def brute_force_assignment(cost: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Minimum over every injective map of the smaller side into the larger: (cost, columns per row)."""
    n, m = cost.shape
    if n <= m:
        best = min((sum(cost[i, p[i]] for i in range(n)), p) for p in itertools.permutations(range(m), n))
        return best[0], tuple(best[1])
    best_t = min((sum(cost[p[j], j] for j in range(m)), p) for p in itertools.permutations(range(n), m))
    cols = [-1] * n
    for j, i in enumerate(best_t[1]):
        cols[i] = j
    return best_t[0], tuple(cols)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 6), (6, 4), (5, 5), (2, 7), (7, 3)])
def test_assignment_equals_scipy_and_brute_force(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    for trial in range(20):
        cost = rng.normal(size=shape)
        rows, cols = linear_sum_assignment(cost)
        s_rows, s_cols = scipy_optimize.linear_sum_assignment(cost)
        # continuous random costs have a unique optimum, so the assignments themselves must agree
        np.testing.assert_array_equal(rows, s_rows)
        np.testing.assert_array_equal(cols, s_cols)
        best, per_row = brute_force_assignment(cost)
        assert cost[rows, cols].sum() == pytest.approx(best, abs=1e-12)
        mapping = dict(zip(rows.tolist(), cols.tolist()))
        assert tuple(mapping.get(i, -1) for i in range(shape[0])) == per_row


def test_assignment_with_ties_and_large_matrices_matches_scipy_cost() -> None:
    rng = np.random.default_rng(1)
    for shape in [(6, 6), (5, 8), (9, 4)]:
        cost = rng.integers(0, 3, size=shape).astype(float)  # many equally good assignments
        rows, cols = linear_sum_assignment(cost)
        s_rows, s_cols = scipy_optimize.linear_sum_assignment(cost)
        assert cost[rows, cols].sum() == cost[s_rows, s_cols].sum()
        assert len(set(rows.tolist())) == len(rows) == min(shape) and len(set(cols.tolist())) == len(cols)
    cost = rng.normal(size=(60, 90))
    rows, cols = linear_sum_assignment(torch.from_numpy(cost))
    s_rows, s_cols = scipy_optimize.linear_sum_assignment(cost)
    np.testing.assert_array_equal(cols, s_cols)
    assert linear_sum_assignment(np.zeros((0, 3)))[0].size == 0
    with pytest.raises(ValueError, match="NaN"):
        linear_sum_assignment(np.array([[np.nan]]))


def giou_by_hand(a: list[float], b: list[float]) -> float:
    """Rezatofighi et al. 2019, Alg. 1, written out for two xyxy boxes in plain Python."""
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = area_a + area_b - inter
    c = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (c - union) / c


CASES = {
    "overlapping": ([0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]),   # IoU 1/7, C = 9, GIoU = 1/7 - 2/9
    "disjoint": ([0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 3.0, 1.0]),      # IoU 0, C = 3, GIoU = -1/3
    "nested": ([0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 2.0, 2.0]),        # IoU 1/16, C = A, GIoU = IoU
    "touching": ([0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 2.0, 1.0]),      # IoU 0, C = union: GIoU 0
    "identical": ([0.5, 0.5, 2.5, 1.5], [0.5, 0.5, 2.5, 1.5]),     # 1
    "far apart": ([0.0, 0.0, 1.0, 1.0], [9.0, 9.0, 10.0, 10.0]),   # IoU 0, union 2, C = 100: -98/100
}
EXPECTED = {"overlapping": 1 / 7 - 2 / 9, "disjoint": -1 / 3, "nested": 1 / 16, "touching": 0.0, "identical": 1.0,
            "far apart": -0.98}


@pytest.mark.parametrize("case", list(CASES))
def test_giou_against_its_formula(case: str) -> None:
    a, b = CASES[case]
    ta, tb = torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64)
    expected = giou_by_hand(a, b)
    assert expected == pytest.approx(EXPECTED[case])
    assert float(generalized_box_iou(ta, tb)[0, 0]) == pytest.approx(expected, abs=1e-12)
    assert float(generalized_box_iou(tb, ta)[0, 0]) == pytest.approx(expected, abs=1e-12)  # symmetric
    assert float(elementwise_giou(ta, tb)[0]) == pytest.approx(expected, abs=1e-12)


def test_giou_table_and_gradients_against_the_hand_formula() -> None:
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(5, 2, generator=g, dtype=torch.float64) * 4
    a = torch.cat([lo, lo + 0.5 + torch.rand(5, 2, generator=g, dtype=torch.float64) * 3], 1).requires_grad_(True)
    lo = torch.rand(4, 2, generator=g, dtype=torch.float64) * 4
    b = torch.cat([lo, lo + 0.5 + torch.rand(4, 2, generator=g, dtype=torch.float64) * 3], 1)
    table = generalized_box_iou(a, b)
    for i in range(5):
        for j in range(4):
            assert float(table[i, j]) == pytest.approx(giou_by_hand(a[i].tolist(), b[j].tolist()), abs=1e-12)
    assert torch.autograd.gradcheck(lambda x: generalized_box_iou(x, b), (a,))
    iou, _ = box_iou(a.detach(), b)
    assert (table <= iou + 1e-12).all() and (table >= -1).all()
    with pytest.raises(ValueError, match="x1 >= x0"):
        generalized_box_iou(torch.tensor([[1.0, 0.0, 0.0, 1.0]]), b.float())


def test_box_conversions_round_trip() -> None:
    b = torch.tensor([[0.5, 0.4, 0.2, 0.1], [0.1, 0.9, 0.05, 0.15]], dtype=torch.float64)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(b)), b)
    torch.testing.assert_close(box_cxcywh_to_xyxy(b)[0], torch.tensor([0.4, 0.35, 0.6, 0.45], dtype=torch.float64))


def test_giou_loss_is_registered() -> None:
    assert "giou" in LOSSES.names()


# ------------------------------------------------------------------------------------------- matcher, set loss
def _random_outputs(g: torch.Generator, B: int, Q: int, C: int, aux: int = 1) -> dict:
    def one() -> dict:
        return {"logits": torch.randn(B, Q, C + 1, generator=g, dtype=torch.float64).requires_grad_(True),
                "boxes": (0.2 + 0.6 * torch.rand(B, Q, 4, generator=g, dtype=torch.float64)).mul(
                    torch.tensor([1.0, 1.0, 0.4, 0.4], dtype=torch.float64)).requires_grad_(True)}
    out = one()
    out["aux"] = [one() for _ in range(aux)]
    return out


def _random_targets(g: torch.Generator, B: int, M: int, C: int) -> torch.Tensor:
    t = torch.full((B, M, 5), -1.0, dtype=torch.float64)
    for b in range(B):
        n = int(torch.randint(0, M + 1, (1,), generator=g))
        t[b, :n, 0] = torch.randint(0, C, (n,), generator=g).double()
        t[b, :n, 1:3] = 0.2 + 0.6 * torch.rand(n, 2, generator=g, dtype=torch.float64)
        t[b, :n, 3:] = 0.05 + 0.3 * torch.rand(n, 2, generator=g, dtype=torch.float64)
    return t


def slow_set_loss(outputs: dict, targets: torch.Tensor, w: MatchWeights) -> torch.Tensor:
    """The paper's Hungarian loss written per image with a brute-force matching over all injective maps."""
    total = torch.zeros((), dtype=torch.float64)
    n_boxes = max(int((targets[..., 0] >= 0).sum()), 1)
    for out in [outputs, *outputs["aux"]]:
        logits, boxes = out["logits"], out["boxes"]
        B, Q, C1 = logits.shape
        ce_num, ce_den = torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
        l1 = torch.zeros((), dtype=torch.float64)
        gi = torch.zeros((), dtype=torch.float64)
        for b in range(B):
            keep = targets[b, :, 0] >= 0
            labels, tboxes = targets[b, keep, 0].long(), targets[b, keep, 1:]
            n = len(labels)
            assign: tuple[int, ...] = ()
            if n:
                cost = matching_cost(logits[b].detach(), boxes[b].detach(), labels, tboxes, w).numpy()
                _, cols = brute_force_assignment(cost.T)  # targets (rows) -> queries
                assign = cols
            cls = [C1 - 1] * Q
            for j, q in enumerate(assign):
                cls[q] = int(labels[j])
                pb, tb = box_cxcywh_to_xyxy(boxes[b, q]), box_cxcywh_to_xyxy(tboxes[j])
                l1 = l1 + (boxes[b, q] - tboxes[j]).abs().sum()
                gi = gi + 1 - elementwise_giou(pb, tb)
            for q in range(Q):
                weight = 1.0 if cls[q] < C1 - 1 else w.eos
                ce_num = ce_num - weight * F.log_softmax(logits[b, q], -1)[cls[q]]
                ce_den = ce_den + weight
        total = total + w.cls * ce_num / ce_den + w.l1 * l1 / n_boxes + w.giou * gi / n_boxes
    return total


def test_set_loss_equals_slow_reference_outputs_and_gradients() -> None:
    g = torch.Generator().manual_seed(3)
    C, w = 4, MatchWeights()
    outputs = _random_outputs(g, B=3, Q=6, C=C, aux=2)
    targets = _random_targets(g, B=3, M=4, C=C)
    targets[0, :, 0] = -1  # one image without objects: all its queries learn "no object"
    leaves = [outputs["logits"], outputs["boxes"]] + [t for a in outputs["aux"] for t in (a["logits"], a["boxes"])]
    ours = set_loss(outputs, targets, w)
    ref = slow_set_loss(outputs, targets, w)
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours, leaves)
    g_ref = torch.autograd.grad(ref, leaves)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    parts = set_loss(outputs, targets, w, return_parts=True)
    assert set(parts) == {"loss", "loss_ce", "loss_l1", "loss_giou"}
    torch.testing.assert_close(parts["loss"], ours)


def test_matcher_assigns_each_target_its_perfect_query() -> None:
    """Queries that predict the targets exactly (shuffled) are matched back to them."""
    targets = torch.tensor([[[2, 0.3, 0.3, 0.2, 0.2], [0, 0.7, 0.6, 0.1, 0.3], [-1, 0, 0, 0, 0]]], dtype=torch.float64)
    Q, C = 5, 3
    logits = torch.full((1, Q, C + 1), -5.0, dtype=torch.float64)
    boxes = torch.full((1, Q, 4), 0.5, dtype=torch.float64)
    boxes[0, :, 2:] = 0.05
    logits[0, 4, 2], boxes[0, 4] = 5.0, targets[0, 0, 1:]
    logits[0, 1, 0], boxes[0, 1] = 5.0, targets[0, 1, 1:]
    (qi, ti), = hungarian_match(logits, boxes, targets)
    assert dict(zip(ti.tolist(), qi.tolist())) == {0: 4, 1: 1}
    parts = set_loss({"logits": logits, "boxes": boxes}, targets, return_parts=True)
    assert float(parts["loss_l1"]) == 0.0 and float(parts["loss_giou"]) == pytest.approx(0.0, abs=1e-12)


def test_unpad_targets_and_errors() -> None:
    t = torch.tensor([[[1, 0.5, 0.5, 0.1, 0.1], [-1, 0, 0, 0, 0]]])
    (labels, boxes), = unpad_targets(t)
    assert labels.tolist() == [1] and boxes.shape == (1, 4)
    with pytest.raises(ValueError, match=r"\(B, M, 5\)"):
        unpad_targets(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="logits"):
        set_loss({"boxes": torch.zeros(1, 2, 4)}, t)
    with pytest.raises(ValueError, match="MatchWeights.eos"):
        MatchWeights(eos=-1.0)
