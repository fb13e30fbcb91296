"""Fairness audit metrics. Reference: fairlearn 0.15's MetricFrame (accuracy_score, selection_rate,
true_positive_rate, false_positive_rate by group), demographic_parity_difference / ratio and
equalized_odds_difference / ratio on the same predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tricklab.errors import UserError
from tricklab.explain import fairness_report, group_rates
from tricklab.explain.fairness import demographic_parity_difference, equalized_odds_difference

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")
sk_metrics = pytest.importorskip("sklearn.metrics")


def _data(seed: int, groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 400
    g = rng.integers(0, groups, n)
    y = (rng.random(n) < 0.3 + 0.1 * g).astype(int)
    p = np.where(rng.random(n) < 0.8, y, 1 - y)
    p = np.where((g == 0) & (rng.random(n) < 0.2), 1, p)  # extra selections in group 0
    return y, p, g


@pytest.mark.parametrize("seed, groups", [(0, 2), (1, 3), (2, 4)])
def test_matches_fairlearn(seed: int, groups: int) -> None:
    y, p, g = _data(seed, groups)
    frame = fairlearn_metrics.MetricFrame(
        metrics={"accuracy": sk_metrics.accuracy_score, "selection_rate": fairlearn_metrics.selection_rate,
                 "tpr": fairlearn_metrics.true_positive_rate, "fpr": fairlearn_metrics.false_positive_rate},
        y_true=y, y_pred=p, sensitive_features=g)
    ours = group_rates(torch.from_numpy(y), torch.from_numpy(p), torch.from_numpy(g))
    for gid, row in frame.by_group.iterrows():
        for key in ("accuracy", "selection_rate", "tpr", "fpr"):
            assert ours[int(gid)][key] == pytest.approx(float(row[key]), abs=1e-12), (gid, key)
    rep = fairness_report(y, p, g)
    assert rep["demographic_parity_difference"] == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y, p, sensitive_features=g), abs=1e-12)
    assert rep["demographic_parity_ratio"] == pytest.approx(
        fairlearn_metrics.demographic_parity_ratio(y, p, sensitive_features=g), abs=1e-12)
    assert rep["equalized_odds_difference"] == pytest.approx(
        fairlearn_metrics.equalized_odds_difference(y, p, sensitive_features=g), abs=1e-12)
    assert rep["equalized_odds_ratio"] == pytest.approx(
        fairlearn_metrics.equalized_odds_ratio(y, p, sensitive_features=g), abs=1e-12)
    assert rep["accuracy"] == pytest.approx(sk_metrics.accuracy_score(y, p))
    assert rep["worst_group_accuracy"] == pytest.approx(float(frame.group_min()["accuracy"]))
    assert demographic_parity_difference(p, g) == rep["demographic_parity_difference"]
    assert equalized_odds_difference(y, p, g) == rep["equalized_odds_difference"]


def test_empty_denominator_is_nan_not_a_number_made_up() -> None:
    y = [0, 0, 1, 1]
    p = [0, 1, 1, 0]
    g = [0, 0, 1, 1]  # group 0 has no positives: its TPR is undefined
    rep = fairness_report(y, p, g)
    assert math.isnan(rep["by_group"]["0"]["tpr"]) and math.isnan(rep["equalized_odds_difference"])
    assert rep["demographic_parity_difference"] == 0.0


def test_errors() -> None:
    with pytest.raises(UserError, match="one entry per example"):
        fairness_report([0, 1], [0, 1, 1], [0, 0])
    with pytest.raises(UserError, match="integer labels"):
        fairness_report([0.5, 1.0], [0, 1], [0, 1])
    with pytest.raises(UserError, match="1-D"):
        fairness_report([[0, 1]], [[0, 1]], [[0, 1]])
