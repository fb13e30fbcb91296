"""Set prediction for detection: box conversions, IoU and generalized IoU, the Hungarian algorithm, DETR's
bipartite matcher and its set loss with the no-object weight and auxiliary decoding losses.

Box formats: ``xyxy`` = (x0, y0, x1, y1) corners; ``cxcywh`` = (centre x, centre y, width, height), the format a
DETR box head predicts (normalised to [0, 1] by the image size, through a sigmoid).

Targets of a batch are one padded tensor ``(B, M, 5)`` = (class, cx, cy, w, h) per slot, class -1 for an empty
slot, so they travel through the trainer's loaders like any tensor (:func:`unpad_targets` splits them).

References:
    Carion, Massa, Synnaeve, Usunier, Kirillov & Zagoruyko 2020, "End-to-End Object Detection with Transformers"
        (DETR), ECCV: the matching cost (sec. 3.1, eq. 1 and 2), the Hungarian loss and the no-object weight 0.1,
        auxiliary decoding losses (sec. 3.2).
    Rezatofighi, Tsoi, Gwak, Sadeghian, Reid & Savarese 2019, "Generalized Intersection over Union", CVPR:
        GIoU = IoU - |C \\ (A u B)| / |C|, C the smallest box enclosing A and B (Alg. 1).
    Kuhn 1955, "The Hungarian method for the assignment problem"; Jonker & Volgenant 1987 (shortest augmenting
        paths with dual potentials, the O(n^2 m) form written here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.losses._common import LossExample, check_reduction, reduce

__all__ = ["GIoULoss", "MatchWeights", "box_area", "box_cxcywh_to_xyxy", "box_iou", "box_xyxy_to_cxcywh",
           "elementwise_giou", "generalized_box_iou", "hungarian_match", "linear_sum_assignment", "set_loss",
           "unpad_targets"]


# ================================================================================================ boxes
def box_cxcywh_to_xyxy(b: Tensor) -> Tensor:
    """(..., 4) centre/size boxes -> corner boxes."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(b: Tensor) -> Tensor:
    """(..., 4) corner boxes -> centre/size boxes."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(b: Tensor) -> Tensor:
    """Area of (..., 4) xyxy boxes, (x1 - x0) (y1 - y0)."""
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def _check_boxes(name: str, b: Tensor) -> None:
    if not isinstance(b, Tensor) or b.shape[-1] != 4:
        raise ValueError(f"{name} must be a tensor of boxes (..., 4), got "
                         f"{tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__}")


def box_iou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU (N, M) of xyxy boxes a (N, 4) and b (M, 4), and the union areas (N, M)."""
    _check_boxes("a", a)
    _check_boxes("b", b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union, union


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalized IoU (N, M) of xyxy boxes (Rezatofighi et al. 2019, Alg. 1):
    GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest enclosing box; in [-1, 1], 1 only for equal boxes.

    Degenerate boxes (x1 < x0 or y1 < y0) are refused: the formula assumes real boxes.
    """
    _check_boxes("a", a)
    _check_boxes("b", b)
    if bool((a[:, 2:] < a[:, :2]).any()) or bool((b[:, 2:] < b[:, :2]).any()):
        raise ValueError("generalized_box_iou: boxes must be xyxy with x1 >= x0 and y1 >= y0 (convert cxcywh boxes "
                         "with box_cxcywh_to_xyxy)")
    iou, union = box_iou(a, b)
    lt = torch.minimum(a[:, None, :2], b[None, :, :2])
    rb = torch.maximum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing


def elementwise_giou(a: Tensor, b: Tensor) -> Tensor:
    """GIoU of aligned pairs of xyxy boxes a (..., 4), b (..., 4) -> (...). Same formula as
    :func:`generalized_box_iou`, without the (N, M) table."""
    _check_boxes("a", a)
    _check_boxes("b", b)
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    clt = torch.minimum(a[..., :2], b[..., :2])
    crb = torch.maximum(a[..., 2:], b[..., 2:])
    cwh = (crb - clt).clamp(min=0)
    enclosing = cwh[..., 0] * cwh[..., 1]
    return inter / union - (enclosing - union) / enclosing


class GIoULoss(nn.Module):
    """1 - GIoU of aligned predicted and target xyxy boxes (Rezatofighi et al. 2019), reduced over the boxes."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"GIoULoss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must match")
        return reduce(1.0 - elementwise_giou(pred, target), self.reduction)

    @classmethod
    def example(cls, generator: torch.Generator) -> LossExample:
        lo = torch.rand(6, 2, generator=generator) * 4
        pred = torch.cat([lo, lo + 1 + torch.rand(6, 2, generator=generator) * 3], dim=1)
        lo_t = torch.rand(6, 2, generator=generator) * 4
        target = torch.cat([lo_t, lo_t + 1 + torch.rand(6, 2, generator=generator) * 3], dim=1)
        return LossExample(args=(pred, target), trainable=(0,), none_shape=(6,))


# ================================================================================================ Hungarian
def linear_sum_assignment(cost: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment of a rectangular (n, m) cost matrix: rows r and columns c (each of length
    min(n, m), r increasing) minimising sum cost[r, c], each row and column used at most once; the contract of
    ``scipy.optimize.linear_sum_assignment``.

    Shortest augmenting paths with dual potentials u, v (Kuhn's Hungarian method in the Jonker-Volgenant form):
    rows are added one at a time; a Dijkstra-like scan over the reduced costs cost[i, j] - u[i] - v[j] >= 0
    finds the cheapest way to free a column for the new row, and the potentials keep every reduced cost
    non-negative, so the assignment stays optimal after every row. O(n^2 m) for n <= m (the matrix is
    transposed when n > m).
    """
    a = cost.detach().cpu().double().numpy() if isinstance(cost, Tensor) else np.asarray(cost, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"linear_sum_assignment: cost must be a 2-D matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("linear_sum_assignment: cost contains NaN or infinity")
    transposed = a.shape[0] > a.shape[1]
    if transposed:
        a = a.T
    n, m = a.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    inf = np.inf
    u = np.zeros(n + 1)          # row potentials (1-based rows; index 0 unused)
    v = np.zeros(m + 1)          # column potentials; column 0 is the virtual start column
    p = np.zeros(m + 1, dtype=np.int64)     # p[j]: row assigned to column j (0 = free)
    way = np.zeros(m + 1, dtype=np.int64)   # way[j]: previous column on the shortest path to j
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = np.full(m + 1, inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[j0] = True
            i0 = p[j0]
            free = ~used[1:]
            cur = a[i0 - 1] - u[i0] - v[1:]                  # reduced costs from row i0
            better = free & (cur < minv[1:])
            minv[1:][better] = cur[better]
            way[1:][better] = j0
            cand = np.where(free, minv[1:], inf)
            j1 = int(np.argmin(cand)) + 1
            delta = cand[j1 - 1]
            # shift potentials: used columns (and their rows) by +delta/-delta, the others' distances by -delta
            u[p[used]] += delta
            v[used] -= delta
            minv[~used] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:                                          # augment along the path back to the start column
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    cols = np.nonzero(p[1:])[0]
    rows = p[1:][cols] - 1
    if transposed:
        rows, cols = cols, rows
    order = np.argsort(rows, kind="stable")
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


@dataclass(frozen=True)
class MatchWeights:
    """Weights of the matching cost and of the loss terms (DETR's defaults: class 1, L1 5, GIoU 2;
    no-object class weight 0.1)."""

    cls: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    eos: float = 0.1

    def __post_init__(self) -> None:
        for name in ("cls", "l1", "giou", "eos"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"MatchWeights.{name} must be a number >= 0, got {v!r}")


def matching_cost(logits: Tensor, boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor,
                  weights: MatchWeights = MatchWeights()) -> Tensor:
    """DETR's pairwise matching cost (Q, n) between Q predictions and n targets of one image (sec. 3.1):
    -w_cls p_hat(c_i) + w_l1 ||b_i - b_hat||_1 + w_giou (-GIoU(b_i, b_hat)), boxes cxcywh.

    The class term uses the probability, not its log (the paper: "commensurable" with the box terms)."""
    prob = logits.softmax(-1)[:, tgt_labels]                                    # (Q, n)
    l1 = torch.cdist(boxes, tgt_boxes, p=1)                                     # (Q, n)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(tgt_boxes))
    return -weights.cls * prob + weights.l1 * l1 - weights.giou * giou


def unpad_targets(targets: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Split padded targets (B, M, 5) = (class, cx, cy, w, h), class -1 = empty slot, into per-image
    (labels (n,) int64, boxes (n, 4))."""
    if targets.dim() != 3 or targets.shape[-1] != 5:
        raise ValueError(f"detection targets must be (B, M, 5) = (class, cx, cy, w, h) with class -1 for empty "
                         f"slots, got {tuple(targets.shape)}")
    out = []
    for t in targets:
        keep = t[:, 0] >= 0
        out.append((t[keep, 0].long(), t[keep, 1:]))
    return out


@torch.no_grad()
def hungarian_match(logits: Tensor, boxes: Tensor, targets: Tensor | Sequence[tuple[Tensor, Tensor]],
                    weights: MatchWeights = MatchWeights()) -> list[tuple[Tensor, Tensor]]:
    """Optimal one-to-one match per image between predictions (B, Q, C+1 logits; B, Q, 4 cxcywh boxes) and its
    targets (padded (B, M, 5) or a list of (labels, boxes)): a list of (query indices, target indices).

    The costs of all images are computed in one batch against all targets of the batch (as DETR's matcher does),
    then each image's block (Q, n_i) is solved by :func:`linear_sum_assignment`."""
    per_image = unpad_targets(targets) if isinstance(targets, Tensor) else list(targets)
    B, Q = logits.shape[:2]
    if len(per_image) != B:
        raise ValueError(f"{B} predictions but {len(per_image)} target sets")
    sizes = [int(lab.numel()) for lab, _ in per_image]
    empty = torch.zeros(0, dtype=torch.int64, device=logits.device)
    if sum(sizes) == 0:
        return [(empty, empty.clone()) for _ in range(B)]
    labels = torch.cat([lab for lab, _ in per_image])
    tboxes = torch.cat([b for _, b in per_image]).float()
    cost = matching_cost(logits.flatten(0, 1).float(), boxes.flatten(0, 1).float(), labels, tboxes, weights)
    cost = cost.view(B, Q, -1).cpu().double().numpy()                        # (B, Q, sum n_i)
    out, start = [], 0
    for i, n in enumerate(sizes):
        if n == 0:
            out.append((empty, empty.clone()))
            continue
        rows, cols = linear_sum_assignment(cost[i, :, start:start + n])
        start += n
        out.append((torch.as_tensor(rows, device=logits.device), torch.as_tensor(cols, device=logits.device)))
    return out


def _set_loss_one(logits: Tensor, boxes: Tensor, per_image: list[tuple[Tensor, Tensor]], num_boxes: float,
                  weights: MatchWeights) -> dict[str, Tensor]:
    B, Q, C1 = logits.shape
    matches = hungarian_match(logits, boxes, per_image, weights)
    # classification over all queries: matched queries learn their target's class, all others "no object"
    target_classes = torch.full((B, Q), C1 - 1, dtype=torch.int64, device=logits.device)
    for b, (qi, ti) in enumerate(matches):
        target_classes[b, qi] = per_image[b][0][ti]
    class_weight = torch.ones(C1, dtype=logits.dtype, device=logits.device)
    class_weight[-1] = weights.eos  # down-weight the many no-object queries (the paper's 0.1)
    loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, weight=class_weight)
    src = torch.cat([boxes[b, qi] for b, (qi, _) in enumerate(matches)])
    tgt = torch.cat([per_image[b][1][ti] for b, (_, ti) in enumerate(matches)]).to(boxes.dtype)
    loss_l1 = (src - tgt).abs().sum() / num_boxes
    loss_giou = (1.0 - elementwise_giou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))).sum() / num_boxes
    total = weights.cls * loss_ce + weights.l1 * loss_l1 + weights.giou * loss_giou
    return {"loss": total, "loss_ce": loss_ce, "loss_l1": loss_l1, "loss_giou": loss_giou}


def set_loss(outputs: dict[str, Any], targets: Tensor | Sequence[tuple[Tensor, Tensor]],
             weights: MatchWeights = MatchWeights(), *, return_parts: bool = False) -> Any:
    """DETR's Hungarian set loss (Carion et al. 2020, eq. 2), summed over the final and auxiliary decoder outputs.

    outputs: ``{"logits": (B, Q, C+1), "boxes": (B, Q, 4) cxcywh, "aux": [{"logits", "boxes"}, ...]}``, the last
    class being "no object". Per output: match (:func:`hungarian_match`), then
    w_cls CE(all queries; no-object class weighted ``eos``) + w_l1 L1(matched) + w_giou (1 - GIoU)(matched), the
    box terms summed over matched pairs and divided by the number of target boxes in the batch. Each auxiliary
    output (intermediate decoder layers, sec. 3.2) is matched and scored on its own and added.
    Returns the scalar loss, or with ``return_parts`` a dict of the final output's terms plus ``"loss"``.
    """
    if not isinstance(outputs, dict) or "logits" not in outputs or "boxes" not in outputs:
        raise ValueError("set_loss: outputs must be a dict with 'logits' (B, Q, C+1) and 'boxes' (B, Q, 4)")
    per_image = unpad_targets(targets) if isinstance(targets, Tensor) else list(targets)
    num_boxes = float(max(sum(int(lab.numel()) for lab, _ in per_image), 1))
    parts = _set_loss_one(outputs["logits"], outputs["boxes"], per_image, num_boxes, weights)
    total = parts["loss"]
    for aux in outputs.get("aux", ()):
        total = total + _set_loss_one(aux["logits"], aux["boxes"], per_image, num_boxes, weights)["loss"]
    if return_parts:
        return {**parts, "loss": total}
    return total
