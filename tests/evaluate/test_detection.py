"""COCO-style mAP (tricklab.evaluate.detection) against pycocotools (test-only oracle) on random predictions,
plus closed-form cases worked out by hand."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from tricklab.evaluate.detection import DETECTION_METRICS, IOU_THRESHOLDS, box_iou_np, coco_map

pycocotools = pytest.importorskip("pycocotools", reason="pycocotools is the test-only oracle (test extra)")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402


def _random_case(rng: np.random.Generator, n_images: int, n_classes: int, jitter: float
                 ) -> tuple[list[dict], list[dict]]:
    """Ground truth boxes (xywh drawn, corners = x + w computed in float64 as pycocotools does) and predictions:
    noisy copies of some true boxes (some with a wrong class) plus pure false positives, random scores."""
    preds, targets = [], []
    for _ in range(n_images):
        m = int(rng.integers(0, 5))
        xy = rng.uniform(0, 80, size=(m, 2))
        wh = rng.uniform(5, 40, size=(m, 2))
        labels = rng.integers(0, n_classes, size=m)
        keep = rng.random(m) < 0.8
        pxy = xy[keep] + rng.normal(0, jitter, size=(int(keep.sum()), 2))
        pwh = np.clip(wh[keep] + rng.normal(0, jitter, size=(int(keep.sum()), 2)), 1, None)
        plab = np.where(rng.random(int(keep.sum())) < 0.85, labels[keep], rng.integers(0, n_classes, int(keep.sum())))
        k = int(rng.integers(0, 4))
        pxy = np.concatenate([pxy, rng.uniform(0, 80, size=(k, 2))])
        pwh = np.concatenate([pwh, rng.uniform(5, 40, size=(k, 2))])
        plab = np.concatenate([plab, rng.integers(0, n_classes, size=k)])
        scores = rng.random(len(plab))
        targets.append({"xywh": np.concatenate([xy, wh], 1), "labels": labels})
        preds.append({"xywh": np.concatenate([pxy, pwh], 1), "labels": plab, "scores": scores})
    return preds, targets


def _xyxy(xywh: np.ndarray) -> np.ndarray:
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) if len(xywh) else np.zeros((0, 4))


def _pycocotools_stats(preds: list[dict], targets: list[dict], n_classes: int) -> np.ndarray:
    images = [{"id": i + 1, "width": 128, "height": 128} for i in range(len(targets))]
    anns, aid = [], 1
    for i, t in enumerate(targets):
        for box, lab in zip(t["xywh"], t["labels"]):
            anns.append({"id": aid, "image_id": i + 1, "category_id": int(lab) + 1, "bbox": [float(v) for v in box],
                         "area": float(box[2] * box[3]), "iscrowd": 0})
            aid += 1
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dets = [{"image_id": i + 1, "category_id": int(lab) + 1, "bbox": [float(v) for v in box], "score": float(s)}
                for i, p in enumerate(preds) for box, lab, s in zip(p["xywh"], p["labels"], p["scores"])]
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_map_equals_pycocotools_on_random_predictions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_classes = 4
    preds, targets = _random_case(rng, n_images=25, n_classes=n_classes, jitter=[1.0, 3.0, 6.0, 2.0][seed])
    stats = _pycocotools_stats(preds, targets, n_classes)
    ours = coco_map([{"boxes": _xyxy(p["xywh"]), "scores": p["scores"], "labels": p["labels"]} for p in preds],
                    [{"boxes": _xyxy(t["xywh"]), "labels": t["labels"]} for t in targets])
    # pycocotools stats: [0] AP@[.5:.95], [1] AP@.5, [2] AP@.75 (all areas, 100 detections)
    assert ours["map"] == pytest.approx(stats[0], abs=1e-12)
    assert ours["map_50"] == pytest.approx(stats[1], abs=1e-12)
    assert ours["map_75"] == pytest.approx(stats[2], abs=1e-12)
    assert 0.0 < ours["map"] < 1.0


def test_max_detections_cut_equals_pycocotools() -> None:
    """More than 100 detections of one class in an image: both keep the 100 best-scored."""
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 80, size=(3, 2))
    wh = rng.uniform(10, 30, size=(3, 2))
    target = {"xywh": np.concatenate([xy, wh], 1), "labels": np.zeros(3, dtype=np.int64)}
    k = 130
    pxy = np.concatenate([xy + 0.5, rng.uniform(0, 80, size=(k - 3, 2))])
    pwh = np.concatenate([wh, rng.uniform(10, 30, size=(k - 3, 2))])
    scores = rng.random(k)
    scores[:3] = [0.05, 0.5, 0.995]  # one true box scored too low to survive the cut
    pred = {"xywh": np.concatenate([pxy, pwh], 1), "labels": np.zeros(k, dtype=np.int64), "scores": scores}
    stats = _pycocotools_stats([pred], [target], 1)
    ours = coco_map([{"boxes": _xyxy(pred["xywh"]), "scores": scores, "labels": pred["labels"]}],
                    [{"boxes": _xyxy(target["xywh"]), "labels": target["labels"]}])
    assert ours["map"] == pytest.approx(stats[0], abs=1e-12)
    assert ours["map_50"] == pytest.approx(stats[1], abs=1e-12)


def test_hand_worked_cases() -> None:
    """Closed forms: one perfect detection -> AP 1 at every threshold; a false positive ranked above the true one
    -> precision 1/2 at every recall point, AP@.5 = 0.5; nothing detected -> 0; no ground truth -> -1."""
    gt = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([2])}
    perfect = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.9]),
               "labels": torch.tensor([2])}
    assert coco_map([perfect], [gt])["map"] == pytest.approx(1.0)
    fp_first = {"boxes": torch.tensor([[50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]]),
                "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([2, 2])}
    r = coco_map([fp_first], [gt])
    assert r["map_50"] == pytest.approx(0.5)
    assert r["map"] == pytest.approx(0.5)
    # a box shifted by 1 of 10 px: IoU = 9*10 / (2*100 - 90) = 90/110 = 0.818 -> matched at 0.5..0.8 (7 of 10)
    shifted = {"boxes": torch.tensor([[1.0, 0.0, 11.0, 10.0]]), "scores": torch.tensor([0.9]),
               "labels": torch.tensor([2])}
    r = coco_map([shifted], [gt])
    assert r["map"] == pytest.approx(0.7)
    assert r["map_50"] == pytest.approx(1.0) and r["map_75"] == pytest.approx(1.0)
    # wrong class: the true class has no detection (AP 0), the predicted class has no ground truth (not counted)
    wrong = {"boxes": perfect["boxes"], "scores": perfect["scores"], "labels": torch.tensor([1])}
    assert coco_map([wrong], [gt])["map"] == 0.0
    assert coco_map([perfect], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])["map"] == -1.0


def test_box_iou_closed_form() -> None:
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 4.0, 2.0], [0.0, 0.0, 2.0, 2.0]])
    np.testing.assert_allclose(box_iou_np(a, b), [[1 / 7, 0.0, 1.0]])


def test_errors_and_declarations() -> None:
    with pytest.raises(ValueError, match="prediction sets"):
        coco_map([], [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}])
    with pytest.raises(ValueError, match="max_detections"):
        coco_map([], [], max_detections=0)
    with pytest.raises(ValueError, match="iou_thresholds"):
        coco_map([], [], iou_thresholds=[1.5])
    assert len(IOU_THRESHOLDS) == 10 and IOU_THRESHOLDS[0] == 0.5 and IOU_THRESHOLDS[-1] == 0.95
    assert [m.key for m in DETECTION_METRICS] == ["map_50", "map", "map_75"]
