"""OOD metrics. References: ``sklearn.metrics.roc_auc_score`` (OOD as positives) and ``roc_curve`` with
``drop_intermediate=False`` (in-distribution as positives, score negated) for the FPR at 95% TPR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.errors import UserError
from tricklab.uncertainty.ood import auroc, fpr_at_tpr, ood_metrics

metrics = pytest.importorskip("sklearn.metrics")


def _sk_fpr(s_in: np.ndarray, s_out: np.ndarray, tpr: float) -> float:
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]  # in-distribution = positive
    fpr, tprs, _ = metrics.roc_curve(y, -np.r_[s_in, s_out], drop_intermediate=False)
    return float(fpr[np.searchsorted(tprs, tpr, side="left")])


@pytest.mark.parametrize("seed", range(6))
def test_auroc_and_fpr_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(5, 300, size=2)
    if seed % 2:  # many ties: integer scores
        s_in, s_out = rng.integers(0, 6, n_in).astype(float), rng.integers(2, 8, n_out).astype(float)
    else:
        s_in, s_out = rng.normal(0, 1, n_in), rng.normal(0.8, 1.3, n_out)
    y = np.r_[np.zeros(n_in), np.ones(n_out)]
    ref = metrics.roc_auc_score(y, np.r_[s_in, s_out])
    assert auroc(torch.tensor(s_in), torch.tensor(s_out)) == pytest.approx(ref, abs=1e-12)
    for tpr in (0.95, 0.5, 1.0):
        assert fpr_at_tpr(torch.tensor(s_in), torch.tensor(s_out), tpr) == pytest.approx(
            _sk_fpr(s_in, s_out, tpr), abs=1e-12)


def test_exact_tpr_boundary() -> None:
    """100 in-distribution scores: 95 must be accepted (0.95 * 100 is not rounded up to 96)."""
    s_in = torch.arange(100, dtype=torch.float64)
    s_out = torch.tensor([94.0, 94.5, 95.0, 200.0])
    # threshold = 94, the 95th smallest in-distribution score: of the shifted set only 94.0 is accepted
    assert fpr_at_tpr(s_in, s_out) == 0.25
    assert fpr_at_tpr(s_in, s_out) == pytest.approx(_sk_fpr(s_in.numpy(), s_out.numpy(), 0.95))


def test_separated_sets_and_report() -> None:
    out = ood_metrics({"s": (torch.zeros(10), torch.ones(10))})
    assert out == {"s": {"auroc": 1.0, "fpr95": 0.0}}
    assert auroc(torch.ones(4), torch.zeros(4)) == 0.0
    assert auroc(torch.ones(4), torch.ones(3)) == 0.5


def test_bad_scores_are_refused() -> None:
    with pytest.raises(UserError, match="empty"):
        auroc(torch.zeros(0), torch.ones(3))
    with pytest.raises(UserError, match="NaN"):
        auroc(torch.tensor([float("nan")]), torch.ones(3))
    with pytest.raises(UserError, match="tpr"):
        fpr_at_tpr(torch.zeros(3), torch.ones(3), tpr=0.0)
