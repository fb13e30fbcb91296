"""DETR on the Fashion-MNIST collages as a run function: ``run_detr(config, *, seed, run_dir, progress, resume)``.

It follows the lab's loop-task signature (``tricklab.lab.tasks.LoopTask``: a config dataclass validated in
``__post_init__``, a result with ``metrics`` / ``history`` / ``extras``), so the lab can register it as the
detection task kind; ``benchmarks/detr_collage.py`` is the evidence command around it (curve, boxes, JSON).

The run is the supervised Trainer with a custom ``loss_fn`` (:func:`tricklab.losses.detection.set_loss`:
Hungarian matching, no-object weight, auxiliary decoding losses), padded box targets ``(N, M, 5)`` in an
InMemoryLoader, :func:`tricklab.models.vision.detr.detr_predict` as ``predict_fn`` and
:func:`tricklab.evaluate.detection.set_prediction_metrics` as ``metric_fn``; checkpoints go to
``run_dir/checkpoints`` and ``resume=True`` continues from the latest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tricklab.data import InMemoryLoader
from tricklab.data.datasets.collage import DetectionDataset, load_fashion_collage
from tricklab.errors import ConfigError
from tricklab.evaluate.detection import DETECTION_METRICS, decode_set_predictions, set_prediction_metrics
from tricklab.losses.detection import MatchWeights, hungarian_match, set_loss
from tricklab.models.vision.detr import detr, detr_predict
from tricklab.techniques import Checkpointing, GradClip, LRSchedule
from tricklab.train import Technique, Trainer
from tricklab.train.state import TrainState

__all__ = ["DETECTION_METRICS", "DetectionResult", "DetrConfig", "run_detr"]


@dataclass
class DetrConfig:
    """Everything a DETR-on-collages run depends on (with the seed)."""

    num_train: int = 10_000
    num_test: int = 1_000
    eval_images: int = 500          # test images scored at each evaluation during training (all at the end)
    canvas: int = 64
    max_objects: int = 4
    steps: int = 20_000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    grad_clip: float = 1.0
    eval_every: int = 1000
    checkpoint_every: int = 1000
    threads: int = 1
    model: dict[str, Any] = field(default_factory=dict)  # arguments of tricklab.models.vision.detr.detr
    data_dir: str | None = None

    def __post_init__(self) -> None:
        for name in ("num_train", "num_test", "eval_images", "canvas", "max_objects", "steps", "batch_size",
                     "warmup_steps", "eval_every", "checkpoint_every", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"DetrConfig.{name} must be a positive int, got {v!r}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"DetrConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"DetrConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.batch_size > self.num_train:
            raise ConfigError(f"DetrConfig.batch_size ({self.batch_size}) exceeds num_train ({self.num_train})")


@dataclass
class DetectionResult:
    """What a run returns: final test metrics (``DETECTION_METRICS`` keys), the Trainer's history rows, and
    extras (example predictions, timings, parameter count, the data summary)."""

    metrics: dict[str, float]
    history: list[dict[str, Any]]
    extras: dict[str, Any]


def run_detr(config: DetrConfig, *, seed: int, run_dir: Path | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None, resume: bool = False,
             data: DetectionDataset | None = None) -> DetectionResult:
    """Train DETR on the collages for ``config.steps`` steps and evaluate COCO-style mAP on the test collages."""
    torch.set_num_threads(config.threads)
    t0 = time.perf_counter()
    if data is None:
        data = load_fashion_collage(config.data_dir, num_train=config.num_train, num_test=config.num_test,
                                    canvas=config.canvas, max_objects=config.max_objects, seed=seed)
    data_seconds = time.perf_counter() - t0
    torch.manual_seed(seed)
    model = detr(in_channels=data.x_train.shape[1], num_classes=data.num_classes, **config.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loader = InMemoryLoader(data.x_train, data.targets("train"), config.batch_size, seed=seed)
    eval_set = (data.x_test[:config.eval_images], data.targets("test")[:config.eval_images])
    techniques: list[Any] = [GradClip(max_norm=config.grad_clip),
                             LRSchedule("warmup_cosine", warmup_steps=config.warmup_steps)]
    if progress is not None:
        techniques.append(ReportRows(progress))
    if run_dir is not None:
        techniques.append(Checkpointing(every_steps=config.checkpoint_every, folder=str(run_dir / "checkpoints")))
    trainer = Trainer(model, optimizer, loader, loss_fn=set_loss, techniques=techniques, eval_data=eval_set,
                      eval_every=config.eval_every, metric_fn=set_prediction_metrics, predict_fn=detr_predict,
                      max_steps=config.steps, log_every=50)
    resume_from = run_dir / "checkpoints" if (resume and run_dir is not None) else None
    state = trainer.fit(resume_from=resume_from)
    test = trainer.evaluate((data.x_test, data.targets("test")))
    metrics = {m.key: float(test[m.key]) for m in DETECTION_METRICS}
    extras = {"examples": _examples(model, data, 8), "train_seconds": state.train_seconds,
              "data_seconds": data_seconds, "parameters": sum(p.numel() for p in model.parameters()),
              "data": data.summary()}
    return DetectionResult(metrics, list(state.history), extras)


class ReportRows(Technique):
    """Hands every new metrics row to a callback (the run function's ``progress``); touches no state slot."""

    name = "report_rows"
    reads = frozenset({"log_row"})

    def __init__(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self.callback = callback

    def on_log(self, state: TrainState) -> None:
        self.callback(dict(state.history[-1]))


@torch.no_grad()
def _examples(model: torch.nn.Module, data: DetectionDataset, n: int) -> list[dict[str, Any]]:
    """n test collages with true boxes, predictions scoring >= 0.5 and which prediction the matcher pairs with
    which true box (JSON-able, boxes in pixels xyxy)."""
    model.eval()
    n = min(n, data.x_test.shape[0])  # a test set smaller than n shows all of it
    x, targets = data.x_test[:n], data.targets("test")[:n]
    out = model(x)
    preds = decode_set_predictions(out["logits"], out["boxes"])
    matches = hungarian_match(out["logits"], out["boxes"], targets, MatchWeights())
    S = data.x_test.shape[-1]
    examples = []
    for i in range(n):
        keep = targets[i, :, 0] >= 0
        t = targets[i, keep]
        cx, cy, w, h = (t[:, 1:] * S).unbind(-1)
        true = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        p = preds[i]
        confident = (p["scores"] >= 0.5).nonzero().flatten().tolist()
        qi, ti = matches[i]
        examples.append({
            "image": [[round(v, 2) for v in row] for row in x[i, 0].tolist()],
            "true_boxes": _rounded(true), "true_labels": t[:, 0].long().tolist(),
            "pred_boxes": _rounded(p["boxes"][confident] * S),
            "pred_scores": [round(v, 4) for v in p["scores"][confident].tolist()],
            "pred_labels": p["labels"][confident].tolist(), "pred_queries": confident,
            "matched": {int(q): int(tt) for q, tt in zip(qi.tolist(), ti.tolist())},
        })
    return examples


def _rounded(boxes: torch.Tensor) -> list[list[float]]:
    return [[round(v, 2) for v in b] for b in boxes.tolist()]
