"""Image figures in the lab report (issue 15 items 3-4, issue 20's sample grids).

Attention rollout: a ViT run records the rollout of its first test images and the report draws it. Reference:
tricklab.models.vision.vit.image_rollout called directly on the trained model and the same test images (its own
test checks it against the rollout recursion written with loops). Detections: a detection loop task's example
boxes (as the DETR task writes them) are drawn in the report. Generated images: a generative loop task's
originals / reconstructions / samples (as run_vae writes them) are drawn, one row per kind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tricklab.data import load_dataset
from tricklab.lab.analysis import StoredRun, first_attention, first_detections, first_images
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.summary import AttentionMaps, RunSummary, SeededAttention, SeededDetections, SeededImages
from tricklab.models.vision.common import to_images
from tricklab.models.vision.vit import image_rollout

VIT = ["task=digits", "model.name=vit", "model.args={patch_size: 2, dim: 16, depth: 2, heads: 2}",
       "budget.steps=20", "techniques=[]"]


def test_a_vit_run_records_the_rollout_of_its_first_test_images(tmp_path: Path) -> None:
    result = run(load_recipe(None, VIT), tmp_path / "run")
    att = result.summary.attention
    assert att is not None and len(att.images) == 6
    model = result.trainer.state.raw_model
    x = to_images(load_dataset("digits").x_test[:6], model.image_shape)  # the lab's digits test split
    logits, maps = image_rollout(model, x)
    assert torch.allclose(torch.tensor(att.maps), maps.float(), atol=1e-4)  # stored rounded to 4 decimals
    assert torch.allclose(torch.tensor(att.images), x[:, 0], atol=1e-4)
    assert att.predictions == logits.argmax(-1).tolist()
    assert att.labels == load_dataset("digits").y_test[:6].tolist()
    assert RunSummary.from_dict(result.summary.to_dict()).attention == att  # survives summary.json


def test_models_without_full_sequence_attention_record_none(tmp_path: Path) -> None:
    result = run(load_recipe(None, ["task=digits", "model.name=mlp", "budget.steps=5", "techniques=[]"]),
                 tmp_path / "run")
    assert result.summary.attention is None
    assert "attention" not in result.summary.to_dict()


def test_the_report_draws_each_variants_rollout() -> None:
    pytest.importorskip("matplotlib")
    from tests.lab.test_report import SETTING, make_curves, make_summary

    from tricklab.lab.report import render_report

    att = AttentionMaps("rollout", [[[0.0, 1.0], [1.0, 0.0]]] * 2, [[[0.25, 0.75]]] * 2, [1, 2], [1, 0])
    summary = make_summary()
    summary = type(summary)(**{**summary.__dict__, "attention": {"ema": SeededAttention(3, att)}})
    page = render_report(summary, make_curves(summary.variants), SETTING)
    figures = dict(re.findall(r'<figure class="plot" data-plot="([^"]+)">(.*?)</figure>', page, flags=re.S))
    assert "<svg" in figures["attention-ema"]
    assert "Attention rollout" in page and "ema (seed 3)" in page
    assert "attention-baseline" not in figures  # only variants that have maps


def test_first_attention_takes_the_first_seed() -> None:
    a = AttentionMaps("rollout", [], [], [], [])
    b = AttentionMaps("rollout", [[[1.0]]], [[[1.0]]], [0], [0])
    runs = {4: StoredRun(1, "v", 4, RunSummary(attention=a), []), 2: StoredRun(2, "v", 2, RunSummary(attention=b), [])}
    assert first_attention(runs) == SeededAttention(2, b)
    assert first_attention({2: StoredRun(2, "v", 2, RunSummary(), [])}) is None


EXAMPLE = {"image": [[0.0] * 8 for _ in range(8)], "true_boxes": [[1.0, 1.0, 4.0, 5.0]], "true_labels": [3],
           "pred_boxes": [[1.2, 0.8, 4.1, 5.2]], "pred_labels": [3], "pred_scores": [0.9]}


def test_first_detections_reads_a_detection_tasks_examples() -> None:
    """Reference: the examples as the DETR loop task writes them (models/vision/detr_task.py ``_examples``)."""
    runs = {1: StoredRun(1, "v", 1, RunSummary(extras={"examples": [EXAMPLE]}), [])}
    assert first_detections(runs) == SeededDetections(1, [EXAMPLE])
    # other loop tasks' extras (no boxes) give no figure
    assert first_detections({1: StoredRun(1, "v", 1, RunSummary(extras={"examples": [{"image": []}]}), [])}) is None
    assert first_detections({1: StoredRun(1, "v", 1, RunSummary(extras={"samples": [1]}), [])}) is None


def test_the_report_draws_the_boxes_of_each_detection_variant() -> None:
    pytest.importorskip("matplotlib")
    from tests.lab.test_report import SETTING, make_curves, make_summary

    from tricklab.lab.report import render_report

    summary = make_summary()
    summary = type(summary)(**{**summary.__dict__, "detections": {"baseline": SeededDetections(0, [EXAMPLE] * 2)}})
    page = render_report(summary, make_curves(summary.variants), SETTING)
    figures = dict(re.findall(r'<figure class="plot" data-plot="([^"]+)">(.*?)</figure>', page, flags=re.S))
    svg = figures["detections-baseline"]
    assert "<svg" in svg and svg.count("3 0.90") == 2  # one labelled prediction per example


GRID = [[0.0, 0.5], [1.0, 0.25]]


def test_first_images_reads_the_generative_grids_in_order() -> None:
    """Reference: the extras as run_vae / run_gan write them (paradigms/generative/paradigm.py)."""
    extras = {"config": {}, "samples": [GRID] * 3, "reconstructions": [GRID] * 2, "originals": [GRID] * 2}
    got = first_images({0: StoredRun(1, "v", 0, RunSummary(extras=extras), [])})
    assert got == SeededImages(0, {"originals": [GRID] * 2, "reconstructions": [GRID] * 2, "samples": [GRID] * 3})
    assert list(got.rows) == ["originals", "reconstructions", "samples"]
    # numbers that are not image grids (e.g. a bandit's per-step rewards) give no figure
    assert first_images({0: StoredRun(1, "v", 0, RunSummary(extras={"samples": [1.0, 2.0]}), [])}) is None
    assert first_images({0: StoredRun(1, "v", 0, RunSummary(), [])}) is None


def test_the_report_draws_each_generative_variants_images() -> None:
    pytest.importorskip("matplotlib")
    from tests.lab.test_report import SETTING, make_curves, make_summary

    from tricklab.lab.report import render_report

    summary = make_summary()
    images = {"label_smoothing": SeededImages(1, {"samples": [GRID] * 4, "originals": [GRID] * 2})}
    summary = type(summary)(**{**summary.__dict__, "images": images})
    page = render_report(summary, make_curves(summary.variants), SETTING)
    figures = dict(re.findall(r'<figure class="plot" data-plot="([^"]+)">(.*?)</figure>', page, flags=re.S))
    svg = figures["images-label_smoothing"]
    assert svg.count("<image") == 6 and ">samples<" in svg and ">originals<" in svg  # 4 + 2 images, labelled rows
