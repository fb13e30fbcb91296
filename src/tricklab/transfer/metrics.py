"""Declared metrics of this package's run functions (one MetricSpec per reported number)."""

from __future__ import annotations

from tricklab.evaluate.declared import MetricSpec

__all__ = ["SELFSUP_METRICS", "SEMISUP_METRICS"]

SELFSUP_METRICS: list[MetricSpec] = [
    MetricSpec("probe_acc", "linear-probe test accuracy", True),
    MetricSpec("knn_acc", "k-NN test accuracy (k=20, cosine)", True),
    MetricSpec("pretrain_loss", "final pretraining loss", False, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]

SEMISUP_METRICS: list[MetricSpec] = [
    MetricSpec("test_acc", "test accuracy", True),
    MetricSpec("pseudo_label_acc", "accuracy of confident pseudo-labels", True, verdict=False),
    MetricSpec("mask_rate", "fraction of unlabelled examples above the threshold", True, verdict=False),
    MetricSpec("seconds", "training time (shared machine)", False, unit="s", verdict=False, fmt=".1f"),
]
