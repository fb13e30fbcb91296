"""Regression, multi-label and binary metrics (tricklab.evaluate.regression / multilabel / binary).

References: scikit-learn's ``sklearn.metrics`` (mean_squared_error, mean_absolute_error, r2_score, f1_score,
precision_score, recall_score, accuracy_score, hamming_loss, roc_auc_score) and, for the BCE,
``torch.nn.functional.binary_cross_entropy_with_logits``. The metrics return Python floats (no gradient flows
through them), so only values are compared.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import UserError
from tricklab.evaluate import binary_metrics, multilabel_metrics, r2_score, regression_metrics, roc_auc

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_match_sklearn(outputs: int) -> None:
    g = torch.Generator().manual_seed(outputs)
    y = torch.randn(200, outputs, generator=g) * 3 + 1
    p = y + torch.randn(200, outputs, generator=g)
    if outputs == 1:
        y, p = y[:, 0], p  # (N,) targets against an (N, 1) model output
    m = regression_metrics(p, y)
    yn, pn = y.double().numpy(), p.double().numpy().reshape(y.shape)
    assert m["mse"] == pytest.approx(sk.mean_squared_error(yn, pn), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(yn, pn)), rel=1e-12)
    assert m["mae"] == pytest.approx(sk.mean_absolute_error(yn, pn), rel=1e-12)
    assert m["r2"] == pytest.approx(sk.r2_score(yn, pn), rel=1e-12)
    assert r2_score(p, y) == pytest.approx(m["r2"], rel=1e-15)
    if outputs > 1:
        ref = sk.mean_squared_error(yn, pn, multioutput="raw_values")
        np.testing.assert_allclose(m["per_output_mse"], ref, rtol=1e-12)


def test_regression_metrics_in_original_units_and_constant_targets() -> None:
    # standardised targets z = (y - 5) / 2 -> metrics of y: MSE x 4, MAE x 2, R^2 unchanged
    g = torch.Generator().manual_seed(0)
    z, zp = torch.randn(50, generator=g), torch.randn(50, generator=g)
    raw = regression_metrics(zp, z)
    back = regression_metrics(zp, z, scale=[2.0], shift=[5.0])
    assert back["mse"] == pytest.approx(4 * raw["mse"]) and back["mae"] == pytest.approx(2 * raw["mae"])
    assert back["r2"] == pytest.approx(raw["r2"])
    const = torch.full((10,), 3.0)
    assert r2_score(const, const) == sk.r2_score(const.numpy(), const.numpy()) == 1.0
    assert r2_score(const + 1, const) == sk.r2_score(const.numpy(), const.numpy() + 1) == 0.0
    with pytest.raises(UserError, match="one output per target"):
        regression_metrics(torch.zeros(4, 2), torch.zeros(4))


def test_multilabel_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(1)
    t = (torch.rand(300, 6, generator=g) < 0.3).float()
    t[:, 5] = 0  # a label that never occurs: macro F1 counts it as 0 (zero_division=0)
    z = torch.randn(300, 6, generator=g) + 2 * (t - 0.5)
    m = multilabel_metrics(z, t)
    pred = (torch.sigmoid(z) >= 0.5).int().numpy()
    tn = t.int().numpy()
    assert m["micro_f1"] == pytest.approx(sk.f1_score(tn, pred, average="micro", zero_division=0), rel=1e-12)
    assert m["macro_f1"] == pytest.approx(sk.f1_score(tn, pred, average="macro", zero_division=0), rel=1e-12)
    np.testing.assert_allclose(m["per_class_f1"], sk.f1_score(tn, pred, average=None, zero_division=0), rtol=1e-12)
    assert m["micro_precision"] == pytest.approx(sk.precision_score(tn, pred, average="micro", zero_division=0))
    assert m["micro_recall"] == pytest.approx(sk.recall_score(tn, pred, average="micro", zero_division=0))
    assert m["subset_accuracy"] == pytest.approx(sk.accuracy_score(tn, pred), rel=1e-12)
    assert m["hamming_loss"] == pytest.approx(sk.hamming_loss(tn, pred), rel=1e-12)
    assert m["bce"] == pytest.approx(float(F.binary_cross_entropy_with_logits(z.double(), t.double())), rel=1e-12)
    with pytest.raises(UserError, match="0/1"):
        multilabel_metrics(z, t * 2)


def test_binary_metrics_match_sklearn_including_ties() -> None:
    g = torch.Generator().manual_seed(2)
    y = (torch.rand(400, generator=g) < 0.2).long()  # imbalanced: 20% positives
    logits = torch.stack([torch.zeros(400), (y.float() - 0.3) * 2 + torch.randn(400, generator=g)], dim=1)
    logits[:50, 1] = 0.5  # a block of tied scores: ranks are averaged
    m = binary_metrics(logits, y)
    pred = logits.argmax(1).numpy()
    assert m["precision"] == pytest.approx(sk.precision_score(y.numpy(), pred, zero_division=0), rel=1e-12)
    assert m["recall"] == pytest.approx(sk.recall_score(y.numpy(), pred, zero_division=0), rel=1e-12)
    assert m["f1"] == pytest.approx(sk.f1_score(y.numpy(), pred, zero_division=0), rel=1e-12)
    score = (logits[:, 1] - logits[:, 0]).double().numpy()
    assert m["auroc"] == pytest.approx(sk.roc_auc_score(y.numpy(), score), rel=1e-12)
    assert m["accuracy"] == pytest.approx(sk.accuracy_score(y.numpy(), pred), rel=1e-12)
    assert roc_auc(torch.ones(5), torch.ones(5, dtype=torch.long)) is None  # one class: undefined
    with pytest.raises(UserError, match=r"\(N, 2\)"):
        binary_metrics(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
