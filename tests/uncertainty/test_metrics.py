"""Metrics of prediction stacks. References: tricklab.evaluate's NLL, Brier and ECE of the averaged softmax;
sklearn's roc_auc_score for the OOD AUROC of hand-computed scores."""

from __future__ import annotations

import pytest
import torch

from tricklab.evaluate.calibration import expected_calibration_error
from tricklab.evaluate.metrics import brier_score, nll
from tricklab.uncertainty.metrics import (
    LABEL_NOISE_METRICS,
    UNCERTAINTY_METRICS,
    ood_metrics_of,
    ood_scores,
    predictive_metrics,
)

metrics = pytest.importorskip("sklearn.metrics")


def _stack(s: int, n: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(s, n, 4, generator=g) * 2, torch.randint(0, 4, (n,), generator=g)


@pytest.mark.parametrize("s", [1, 5])
def test_predictive_metrics_are_those_of_the_mean_softmax(s: int) -> None:
    z, y = _stack(s)
    p = torch.softmax(z.double(), -1).mean(0)
    out = predictive_metrics(z, y)
    assert out["accuracy"] == pytest.approx(float((p.argmax(-1) == y).double().mean()))
    assert out["nll"] == pytest.approx(nll(p.log(), y), rel=1e-12)
    assert out["brier"] == pytest.approx(brier_score(p, y), rel=1e-12)
    assert out["ece"] == pytest.approx(expected_calibration_error(p, y), rel=1e-12)
    assert sum(out["reliability"]["count"]) == 50


def test_ood_metrics_match_sklearn_on_the_scores() -> None:
    z_in, _ = _stack(3, seed=1)
    z_out, _ = _stack(3, seed=2)
    z_out = z_out * 0.3  # flatter predictions: more uncertain
    out = ood_metrics_of(z_in, z_out)
    s_in, s_out = ood_scores(z_in), ood_scores(z_out)
    assert set(s_in) == {"entropy", "msp", "energy", "mi"}
    for name, key in (("entropy", "ood_auroc"), ("msp", "ood_auroc_msp"), ("energy", "ood_auroc_energy"),
                      ("mi", "ood_auroc_mi")):
        labels = [0] * 50 + [1] * 50
        ref = metrics.roc_auc_score(labels, torch.cat([s_in[name], s_out[name]]).numpy())
        assert out[key] == pytest.approx(ref, abs=1e-12)
    assert out["entropy_out"] > out["entropy_in"]
    assert "mi" not in ood_scores(z_in[:1])


def test_declared_metrics_are_unique_and_labelled() -> None:
    for specs in (UNCERTAINTY_METRICS, LABEL_NOISE_METRICS):
        keys = [m.key for m in specs]
        assert len(keys) == len(set(keys)) and all(m.label for m in specs)
    assert not {m.key: m for m in UNCERTAINTY_METRICS}["train_seconds"].verdict
