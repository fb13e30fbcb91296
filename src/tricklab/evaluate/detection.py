"""COCO-style mean average precision for box detection: mAP@0.5, mAP@0.75 and mAP@[0.5:0.95].

The definition is the one of the COCO evaluation (Lin et al. 2014, "Microsoft COCO: Common Objects in Context",
ECCV; cocodataset.org/#detection-eval), for the "all areas" range and at most ``max_detections`` detections per
image and class (100, COCO's default), and is checked against pycocotools in tests/evaluate/test_detection.py:

1. per image and class, detections are sorted by score (stable) and the first ``max_detections`` kept;
2. for each IoU threshold t, detections are matched greedily in score order: a detection takes, among the
   ground-truth boxes of its class not yet taken, the one of largest IoU provided IoU >= t (ties: the later box,
   as pycocotools does); a matched detection is a true positive, an unmatched one a false positive;
3. per class, the detections of all images are ranked by score (stable), giving precision
   p_k = TP_k / (TP_k + FP_k) and recall r_k = TP_k / G (G ground-truth boxes of the class); precision is made
   non-increasing from the right (the interpolated precision max_{k' >= k} p_k'), and read at the 101 recall
   points 0, 0.01, ..., 1 (the first rank whose recall reaches the point; 0 where none does);
4. AP(class, t) is the mean of those 101 values; mAP@t averages AP over classes with at least one ground-truth
   box; mAP@[0.5:0.95] averages over the ten thresholds 0.5, 0.55, ..., 0.95 too.

Boxes are xyxy (x0, y0, x1, y1), in any unit (IoU is scale-free). No crowd regions, no area ranges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tricklab.evaluate.declared import MetricSpec

__all__ = ["DETECTION_METRICS", "IOU_THRESHOLDS", "RECALL_POINTS", "box_iou_np", "coco_map",
           "decode_set_predictions", "set_prediction_metrics"]

#: 0.5, 0.55, ..., 0.95, built as pycocotools builds them (the same floats, so the same matches at the edges)
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: the 101 recall points 0, 0.01, ..., 1
RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


#: The numbers a detection task reports.
DETECTION_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("map_50", "mAP@0.5", True),
    MetricSpec("map", "mAP@[0.5:0.95]", True),
    MetricSpec("map_75", "mAP@0.75", True),
)


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (N, M) of xyxy boxes, in float64."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match(ious: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching (step 2 of the module docstring): (T, D) bool, detection d (in score order) matched at t."""
    T, (D, G) = len(thresholds), ious.shape
    matched = np.zeros((T, D), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(G, dtype=bool)
        thr = min(t, 1 - 1e-10)
        for d in range(D):
            ok = ~taken & (ious[d] >= thr)
            if not ok.any():
                continue
            best = np.where(ok, ious[d], -1.0)
            g = G - 1 - int(np.argmax(best[::-1]))  # the last of equal maxima, as pycocotools' scan keeps it
            taken[g] = True
            matched[ti, d] = True
    return matched


def _average_precision(scores: np.ndarray, matched: np.ndarray, num_gt: int) -> np.ndarray:
    """(T,) AP per threshold from the pooled detections of one class (step 3-4)."""
    order = np.argsort(-scores, kind="mergesort")
    tp = np.cumsum(matched[:, order], axis=1, dtype=np.float64)
    fp = np.cumsum(~matched[:, order], axis=1, dtype=np.float64)
    out = np.zeros(matched.shape[0])
    for ti in range(matched.shape[0]):
        recall = tp[ti] / num_gt
        precision = tp[ti] / (tp[ti] + fp[ti] + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.zeros(len(RECALL_POINTS))
        valid = idx < len(precision)
        q[valid] = precision[idx[valid]]
        out[ti] = q.mean()
    return out


def coco_map(predictions: Sequence[dict[str, Any]], targets: Sequence[dict[str, Any]], *,
             iou_thresholds: Sequence[float] | np.ndarray = IOU_THRESHOLDS,
             max_detections: int = 100) -> dict[str, Any]:
    """COCO-style mAP of ``predictions`` against ``targets``, one dict per image in the same order.

    predictions[i]: ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,)}``; targets[i]:
    ``{"boxes": (m, 4) xyxy, "labels": (m,)}`` (tensors or arrays). Returns ``map`` (mean over the thresholds),
    ``map_50`` and ``map_75`` (when those thresholds are given), ``ap_per_threshold`` (list), ``ap_per_class``
    ({class: AP averaged over thresholds}) and ``num_classes_evaluated``. Classes without ground truth do not
    count; with no ground truth at all every value is -1 (pycocotools' convention).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"coco_map: {len(predictions)} prediction sets for {len(targets)} images")
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) or max_detections < 1:
        raise ValueError(f"coco_map: max_detections must be a positive int, got {max_detections!r}")
    thresholds = np.asarray(iou_thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or thresholds.size == 0 or (thresholds < 0).any() or (thresholds > 1).any():
        raise ValueError(f"coco_map: iou_thresholds must be a non-empty list of numbers in [0, 1], got "
                         f"{iou_thresholds!r}")
    per_class: dict[int, dict[str, list[Any]]] = {}
    num_gt: dict[int, int] = {}
    for i, (pred, tgt) in enumerate(zip(predictions, targets)):
        pb, ps, pl = _np(pred["boxes"]).reshape(-1, 4), _np(pred["scores"]).reshape(-1), \
            _np(pred["labels"], np.int64).reshape(-1)
        tb, tl = _np(tgt["boxes"]).reshape(-1, 4), _np(tgt["labels"], np.int64).reshape(-1)
        if not (len(pb) == len(ps) == len(pl)) or len(tb) != len(tl):
            raise ValueError(f"coco_map: image {i}: boxes, scores and labels differ in length")
        for c in np.union1d(pl, tl):
            c = int(c)
            g = tb[tl == c]
            num_gt[c] = num_gt.get(c, 0) + len(g)
            sel = np.nonzero(pl == c)[0]
            sel = sel[np.argsort(-ps[sel], kind="mergesort")][:max_detections]
            if len(sel) == 0:
                continue
            ious = box_iou_np(pb[sel], g) if len(g) else np.zeros((len(sel), 0))
            rec = per_class.setdefault(c, {"scores": [], "matched": []})
            rec["scores"].append(ps[sel])
            rec["matched"].append(_match(ious, thresholds))
    ap: dict[int, np.ndarray] = {}
    for c, g in sorted(num_gt.items()):
        if g == 0:
            continue  # detections of a class with no ground truth do not enter the mean (pycocotools)
        rec = per_class.get(c)
        if rec is None:
            ap[c] = np.zeros(len(thresholds))  # ground truth but no detection: precision 0 at every recall point
            continue
        ap[c] = _average_precision(np.concatenate(rec["scores"]), np.concatenate(rec["matched"], axis=1), g)
    result: dict[str, Any] = {"num_classes_evaluated": len(ap)}
    if not ap:
        per_t = np.full(len(thresholds), -1.0)
        result.update(map=-1.0, ap_per_threshold=per_t.tolist(), ap_per_class={})
    else:
        table = np.stack(list(ap.values()))  # (K, T)
        per_t = table.mean(axis=0)
        result.update(map=float(table.mean()), ap_per_threshold=per_t.tolist(),
                      ap_per_class={c: float(v.mean()) for c, v in ap.items()})
    for key, t in (("map_50", 0.5), ("map_75", 0.75)):
        hit = np.nonzero(np.isclose(thresholds, t))[0]
        if hit.size:
            result[key] = float(per_t[hit[0]])
    return result


def decode_set_predictions(logits: torch.Tensor, boxes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Detections of a set predictor (DETR): per image, every query is one detection of its most likely real class,
    scored by that class's softmax probability over C + 1 classes (the last, "no object", dropped; Carion et al.
    2020, sec. 3). logits (B, Q, C+1), boxes (B, Q, 4) cxcywh -> dicts of xyxy "boxes", "scores", "labels"."""
    prob = torch.softmax(logits.float(), dim=-1)[..., :-1]
    scores, labels = prob.max(dim=-1)
    cx, cy, w, h = boxes.float().unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    return [{"boxes": xyxy[i], "scores": scores[i], "labels": labels[i]} for i in range(logits.shape[0])]


def set_prediction_metrics(packed: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
    """The trainer's ``metric_fn`` for a set predictor: ``packed`` (N, Q, C+1+4) = logits then cxcywh boxes (as
    ``tricklab.models.vision.detr.pack_predictions`` makes them), ``targets`` (N, M, 5) = (class, cx, cy, w, h) with
    class -1 in empty slots. Returns ``map``, ``map_50``, ``map_75`` (COCO-style, :func:`coco_map`)."""
    if packed.dim() != 3 or targets.dim() != 3 or targets.shape[-1] != 5 or packed.shape[0] != targets.shape[0]:
        raise ValueError(f"set_prediction_metrics: need packed (N, Q, C+1+4) and targets (N, M, 5), got "
                         f"{tuple(packed.shape)} and {tuple(targets.shape)}")
    preds = decode_set_predictions(packed[..., :-4], packed[..., -4:])
    gts = []
    for t in targets:
        keep = t[:, 0] >= 0
        cx, cy, w, h = t[keep, 1:].float().unbind(-1)
        gts.append({"boxes": torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1),
                    "labels": t[keep, 0].long()})
    r = coco_map(preds, gts)
    return {"map": r["map"], "map_50": r.get("map_50", -1.0), "map_75": r.get("map_75", -1.0)}
