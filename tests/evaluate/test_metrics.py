"""Tests of tricklab.evaluate.metrics.

References: scikit-learn's ``sklearn.metrics`` (accuracy_score, confusion_matrix,
precision_recall_fscore_support, log_loss), ``torch.nn.functional.cross_entropy`` and, for the Brier
score, the NumPy closed form ``mean_i sum_c (p_ic - onehot_ic)^2`` (Brier 1950).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.evaluate import (
    accuracy,
    brier_score,
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    nll,
    precision_recall_f1,
    reliability_diagram,
)

sk = pytest.importorskip("sklearn.metrics")

SEEDS = [0, 1, 2, 3]


def _random_case(seed: int, n: int = 200, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g) * 2.0
    targets = torch.randint(0, c, (n,), generator=g)
    return logits, targets


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn_accuracy_score(seed: int) -> None:
    # Reference: sklearn.metrics.accuracy_score on arg-max labels.
    logits, targets = _random_case(seed)
    preds = logits.argmax(1)
    ref = sk.accuracy_score(targets.numpy(), preds.numpy())
    assert accuracy(logits, targets) == pytest.approx(ref, abs=1e-12)
    assert accuracy(preds, targets) == pytest.approx(ref, abs=1e-12)
    assert accuracy(torch.softmax(logits, 1), targets) == pytest.approx(ref, abs=1e-12)
    assert 0.0 < ref < 1.0  # the random case is not degenerate


def test_accuracy_closed_form() -> None:
    # 3 of 4 correct -> 0.75 exactly.
    assert accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 0])) == 0.75


@pytest.mark.parametrize("seed", SEEDS)
def test_confusion_matrix_matches_sklearn(seed: int) -> None:
    # Reference: sklearn.metrics.confusion_matrix(labels=range(C)); rows = true, cols = predicted.
    c = 5
    logits, targets = _random_case(seed, c=c)
    ref = sk.confusion_matrix(targets.numpy(), logits.argmax(1).numpy(), labels=list(range(c)))
    cm = confusion_matrix(logits, targets, c)
    assert cm.dtype == torch.int64 and cm.shape == (c, c)
    np.testing.assert_array_equal(cm.numpy(), ref)
    np.testing.assert_array_equal(confusion_matrix(logits.argmax(1), targets, c).numpy(), ref)
    assert int(cm.sum()) == targets.numel()


def test_confusion_matrix_orientation() -> None:
    # One sample of true class 0 predicted as 2 must land in row 0, column 2 (sklearn convention).
    cm = confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 2] = 1
    assert torch.equal(cm, expected)


def _sk_prf(targets: torch.Tensor, preds: torch.Tensor, c: int) -> dict:
    labels = list(range(c))
    p, r, f, s = sk.precision_recall_fscore_support(
        targets.numpy(), preds.numpy(), labels=labels, average=None, zero_division=0
    )
    mp, mr, mf, _ = sk.precision_recall_fscore_support(
        targets.numpy(), preds.numpy(), labels=labels, average="macro", zero_division=0
    )
    return {"precision": p, "recall": r, "f1": f, "support": s, "macro": (mp, mr, mf)}


def _assert_prf_equal(out: dict, ref: dict) -> None:
    np.testing.assert_allclose(out["precision"], ref["precision"], atol=1e-12)
    np.testing.assert_allclose(out["recall"], ref["recall"], atol=1e-12)
    np.testing.assert_allclose(out["f1"], ref["f1"], atol=1e-12)
    assert out["support"] == [int(v) for v in ref["support"]]
    assert out["macro_precision"] == pytest.approx(ref["macro"][0], abs=1e-12)
    assert out["macro_recall"] == pytest.approx(ref["macro"][1], abs=1e-12)
    assert out["macro_f1"] == pytest.approx(ref["macro"][2], abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_recall_f1_matches_sklearn_random(seed: int) -> None:
    # Reference: sklearn.metrics.precision_recall_fscore_support, per class and macro, zero_division=0.
    c = 5
    logits, targets = _random_case(seed, c=c)
    out = precision_recall_f1(logits, targets, c)
    _assert_prf_equal(out, _sk_prf(targets, logits.argmax(1), c))
    assert set(out) == {"precision", "recall", "f1", "macro_precision", "macro_recall", "macro_f1", "support"}


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_recall_f1_never_predicted_and_absent_classes(seed: int) -> None:
    # Class 0 never occurs in targets (recall 0/0 -> 0) and class C-1 is never predicted (precision 0/0 -> 0);
    # both still count in the macro averages, exactly as sklearn with labels=range(C), zero_division=0.
    c = 6
    g = torch.Generator().manual_seed(100 + seed)
    targets = torch.randint(1, c, (150,), generator=g)
    preds = torch.randint(0, c - 1, (150,), generator=g)
    out = precision_recall_f1(preds, targets, c)
    ref = _sk_prf(targets, preds, c)
    _assert_prf_equal(out, ref)
    assert out["support"][0] == 0
    assert out["recall"][0] == 0.0 and out["precision"][c - 1] == 0.0
    assert out["f1"][0] == 0.0 and out["f1"][c - 1] == 0.0


def test_precision_recall_f1_closed_form() -> None:
    # targets [0,0,1,1], preds [0,1,1,1]: class 0 P=1 R=1/2 F1=2/3; class 1 P=2/3 R=1 F1=4/5.
    out = precision_recall_f1(torch.tensor([0, 1, 1, 1]), torch.tensor([0, 0, 1, 1]), 2)
    assert out["precision"] == pytest.approx([1.0, 2 / 3])
    assert out["recall"] == pytest.approx([0.5, 1.0])
    assert out["f1"] == pytest.approx([2 / 3, 0.8])
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert out["support"] == [2, 2]


@pytest.mark.parametrize("seed", SEEDS)
def test_nll_matches_sklearn_log_loss_and_cross_entropy(seed: int) -> None:
    # References: sklearn.metrics.log_loss on softmax probabilities, and F.cross_entropy on the logits.
    c = 5
    logits, targets = _random_case(seed, c=c)
    value = nll(logits, targets)
    probs = torch.softmax(logits.double(), 1).numpy()
    ref = sk.log_loss(targets.numpy(), probs, labels=list(range(c)))
    assert value == pytest.approx(ref, rel=1e-9)
    assert value == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert value == pytest.approx(F.cross_entropy(logits.double(), targets).item(), rel=1e-12)


def test_nll_uniform_closed_form() -> None:
    # Equal logits -> uniform softmax -> NLL = log C.
    assert nll(torch.zeros(7, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2])) == pytest.approx(np.log(4))


@pytest.mark.parametrize("seed", SEEDS)
def test_brier_matches_numpy_closed_form(seed: int) -> None:
    # Reference: multiclass Brier (Brier 1950) = mean_i sum_c (p_ic - onehot_ic)^2, written in NumPy.
    c = 5
    logits, targets = _random_case(seed, c=c)
    probs = torch.softmax(logits, 1)
    p = probs.double().numpy()
    onehot = np.eye(c)[targets.numpy()]
    ref = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    assert brier_score(probs, targets) == pytest.approx(ref, rel=1e-9)


def test_brier_extremes() -> None:
    # Perfect one-hot predictions give 0; confidently wrong ones give the maximum 2.
    targets = torch.tensor([0, 1, 2])
    assert brier_score(F.one_hot(targets, 3).float(), targets) == 0.0
    assert brier_score(F.one_hot((targets + 1) % 3, 3).float(), targets) == pytest.approx(2.0)
    # Binary: multiclass Brier = 2 * sklearn's brier_score_loss on the positive class.
    p1 = torch.tensor([0.9, 0.2, 0.6, 0.4], dtype=torch.float64)
    y = torch.tensor([1, 0, 0, 1])
    probs = torch.stack([1 - p1, p1], 1)
    assert brier_score(probs, y) == pytest.approx(2 * sk.brier_score_loss(y.numpy(), p1.numpy()))


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_metrics_consistent_and_json(seed: int) -> None:
    c = 4
    logits, targets = _random_case(seed, n=300, c=c)
    out = classification_metrics(logits, targets, c, n_bins=10)
    text = json.dumps(out)  # must not raise: only Python floats/ints/lists/None
    assert json.loads(text)["confusion_matrix"] == out["confusion_matrix"]
    expected_keys = {
        "accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class_f1",
        "nll", "brier", "ece", "confusion_matrix", "reliability",
    }
    assert set(out) == expected_keys
    probs = torch.softmax(logits, 1)
    assert out["accuracy"] == pytest.approx(sk.accuracy_score(targets.numpy(), logits.argmax(1).numpy()))
    assert out["macro_f1"] == pytest.approx(sk.f1_score(targets.numpy(), logits.argmax(1).numpy(), average="macro"))
    assert out["nll"] == pytest.approx(nll(logits, targets))
    assert out["brier"] == pytest.approx(brier_score(probs, targets), rel=1e-6)
    assert out["ece"] == pytest.approx(expected_calibration_error(probs, targets, 10), rel=1e-6)
    assert out["reliability"]["count"] == reliability_diagram(probs, targets, 10)["count"]
    assert out["confusion_matrix"] == confusion_matrix(logits, targets, c).tolist()
    assert len(out["per_class_f1"]) == c


def test_classification_metrics_json_with_empty_bins() -> None:
    # All-confident predictions leave most bins empty: they must be null, not NaN, in JSON.
    logits = torch.tensor([[10.0, 0.0], [0.0, 10.0]])
    out = classification_metrics(logits, torch.tensor([0, 1]), 2)
    text = json.dumps(out, allow_nan=False)
    assert "NaN" not in text
    assert out["reliability"]["confidence"][0] is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: accuracy(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)), r"length N=4"),
        (lambda: accuracy(torch.randn(4, 3), torch.zeros(4)), r"1-D integer tensor"),
        (lambda: accuracy(torch.randn(4), torch.zeros(4, dtype=torch.long)), r"shape \(N, C\)"),
        (lambda: confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3),
         r"preds must hold class indices in \[0, 3\)"),
        (lambda: confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 5]), 3), r"targets must hold class indices"),
        (lambda: confusion_matrix(torch.randn(2, 4), torch.tensor([0, 1]), 3), r"C=num_classes=3"),
        (lambda: confusion_matrix(torch.tensor([0]), torch.tensor([0]), 0), r"num_classes must be a positive int"),
        (lambda: nll(torch.randn(3, 2), torch.tensor([0, 1, 2])), r"\[0, 2\)"),
        (lambda: brier_score(torch.randn(3, 2) * 5, torch.tensor([0, 1, 1])), r"softmax\(logits\)"),
        (lambda: accuracy(torch.empty(0, 3), torch.empty(0, dtype=torch.long)), r"at least one sample"),
    ],
)
def test_bad_inputs_raise_clear_value_errors(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
