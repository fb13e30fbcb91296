"""Declared metrics of the uncertainty paradigms, and the numbers computed from a stack of predictions.

``MetricSpec`` is a local stand-in for the lab's (issue 13): one entry per reported number; ``verdict=False``
for numbers shown without a helps/hurts verdict (timings on a shared machine, descriptive values).
:func:`predictive_metrics` turns per-sample logits (S, N, C) - S = 1 for a deterministic model, S passes for MC
dropout or Bayes by backprop, S members for an ensemble - into accuracy, NLL, ECE and Brier of the predictive
distribution ``mean_s softmax(z_s)``; :func:`ood_scores` gives the OOD scores of such a stack.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tricklab.evaluate.calibration import expected_calibration_error, reliability_diagram
from tricklab.evaluate.metrics import brier_score
from tricklab.uncertainty.ood import auroc, fpr_at_tpr
from tricklab.uncertainty.scores import energy_score, entropy, mutual_information
from tricklab.evaluate.declared import MetricSpec

__all__ = [
    "LABEL_NOISE_METRICS",
    "MetricSpec",
    "UNCERTAINTY_METRICS",
    "ood_metrics_of",
    "ood_scores",
    "predictive_metrics",
]




UNCERTAINTY_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "Test accuracy", True),
    MetricSpec("nll", "Test NLL", False),
    MetricSpec("ece", "Test ECE (15 bins)", False),
    MetricSpec("brier", "Test Brier score", False),
    MetricSpec("ood_auroc", "OOD AUROC (predictive entropy)", True),
    MetricSpec("ood_fpr95", "OOD FPR at 95% TPR (predictive entropy)", False),
    MetricSpec("ood_auroc_msp", "OOD AUROC (max softmax)", True),
    MetricSpec("ood_auroc_energy", "OOD AUROC (energy)", True),
    MetricSpec("ood_auroc_mi", "OOD AUROC (mutual information)", True),
    MetricSpec("entropy_in", "Mean predictive entropy, test set (nats)", False, verdict=False),
    MetricSpec("entropy_out", "Mean predictive entropy, shifted set (nats)", True, verdict=False),
    MetricSpec("ts_temperature", "Fitted temperature", False, verdict=False),
    MetricSpec("ts_nll", "Test NLL after temperature scaling", False),
    MetricSpec("ts_ece", "Test ECE after temperature scaling", False),
    MetricSpec("vs_ece", "Test ECE after vector scaling", False),
    MetricSpec("ms_ece", "Test ECE after matrix scaling", False),
    MetricSpec("train_seconds", "Training time (s), shared machine", False, "s", verdict=False, fmt=".1f"),
)

LABEL_NOISE_METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("accuracy", "Clean test accuracy, final", True),
    MetricSpec("best_accuracy", "Clean test accuracy, best evaluation", True, verdict=False),
    MetricSpec("nll", "Test NLL", False),
    MetricSpec("ece", "Test ECE (15 bins)", False),
    MetricSpec("memorized", "Flipped training examples fitted to their wrong label", False),
    MetricSpec("clean_fit", "Unflipped training examples fitted", True, verdict=False),
    MetricSpec("train_seconds", "Training time (s), shared machine", False, "s", verdict=False, fmt=".1f"),
)


def _probs(sample_logits: Tensor) -> Tensor:
    if sample_logits.ndim != 3:
        raise ValueError(f"sample logits must be (S, N, C), got {tuple(sample_logits.shape)}")
    return torch.softmax(sample_logits.to(torch.float64), -1).mean(0)


def predictive_metrics(sample_logits: Tensor, targets: Tensor, n_bins: int = 15) -> dict[str, Any]:
    """Accuracy, NLL, ECE, Brier (and the reliability diagram) of ``mean_s softmax(z_s)`` (N, C)."""
    p = _probs(sample_logits)
    y = targets.long().cpu()
    p_y = p.gather(1, y[:, None]).squeeze(1)
    return {
        "accuracy": float((p.argmax(-1) == y).double().mean()),
        "nll": float(-torch.log(p_y.clamp_min(torch.finfo(torch.float64).tiny)).mean()),
        "ece": expected_calibration_error(p, y, n_bins),
        "brier": brier_score(p, y),
        "reliability": reliability_diagram(p, y, n_bins),
    }


def ood_scores(sample_logits: Tensor) -> dict[str, Tensor]:
    """OOD scores (N,) of a prediction stack, higher = more likely out of distribution: predictive entropy,
    negated max probability of the predictive distribution, the samples' mean energy, and (S > 1) the mutual
    information between the prediction and the sample."""
    z = sample_logits.to(torch.float64)
    p = _probs(z)
    out = {"entropy": entropy(p), "msp": -p.amax(-1),
           "energy": torch.stack([energy_score(z[s]) for s in range(z.shape[0])]).mean(0)}
    if z.shape[0] > 1:
        out["mi"] = mutual_information(torch.softmax(z, -1))
    return out


def ood_metrics_of(logits_in: Tensor, logits_out: Tensor) -> dict[str, float]:
    """``ood_auroc`` / ``ood_fpr95`` (predictive entropy), ``ood_auroc_<score>`` for every score, and the mean
    predictive entropy on each side."""
    s_in, s_out = ood_scores(logits_in), ood_scores(logits_out)
    out: dict[str, float] = {
        "ood_auroc": auroc(s_in["entropy"], s_out["entropy"]),
        "ood_fpr95": fpr_at_tpr(s_in["entropy"], s_out["entropy"]),
        "entropy_in": float(s_in["entropy"].mean()),
        "entropy_out": float(s_out["entropy"].mean()),
    }
    for name in ("msp", "energy", "mi"):
        if name in s_in:
            out[f"ood_auroc_{name}"] = auroc(s_in[name], s_out[name])
    return out
