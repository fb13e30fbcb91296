"""Evaluation: classification, binary, multi-label and regression metrics, calibration and model cost.

Every metric takes whole-set tensors and returns plain Python values (JSON-serialisable), and each is
tested against scikit-learn or a closed form. See docs/evaluate.md for the formulas and references.
"""

from __future__ import annotations

from tricklab.evaluate.binary import binary_metrics, roc_auc
from tricklab.evaluate.calibration import expected_calibration_error, reliability_diagram, softmax_probs
from tricklab.evaluate.cost import (
    Stopwatch,
    convergence_speed,
    count_parameters,
    inference_latency,
    model_size_bytes,
)
from tricklab.evaluate.metrics import (
    accuracy,
    brier_score,
    classification_metrics,
    confusion_matrix,
    nll,
    precision_recall_f1,
)
from tricklab.evaluate.multilabel import multilabel_metrics
from tricklab.evaluate.regression import r2_score, regression_metrics

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "nll",
    "brier_score",
    "classification_metrics",
    "binary_metrics",
    "roc_auc",
    "multilabel_metrics",
    "regression_metrics",
    "r2_score",
    "reliability_diagram",
    "expected_calibration_error",
    "softmax_probs",
    "count_parameters",
    "model_size_bytes",
    "inference_latency",
    "Stopwatch",
    "convergence_speed",
]
