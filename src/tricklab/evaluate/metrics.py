"""Classification metrics computed from tensors and returned as plain Python values.

Every function here takes a whole evaluation set at once (not a running average over batches),
detaches its inputs and computes in float64, so that results match scikit-learn to round-off and do
not depend on the input dtype. Results are Python ``float``/``int``/``list`` so they can go straight
into a JSON log.

Conventions (the same as ``sklearn.metrics``):

* ``N`` samples, ``C`` classes; targets are a 1-D integer tensor of class indices in ``[0, C)``.
* Predictions may be given either as scores of shape ``(N, C)`` (logits or probabilities; the
  predicted class is the arg-max, first index on ties, as in ``numpy.argmax``) or as a 1-D integer
  tensor of predicted labels.
* The confusion matrix has rows = true class and columns = predicted class.
* A ratio whose denominator is zero (precision of a class that is never predicted, recall of a class
  that never occurs) is reported as ``0.0``, like ``zero_division=0`` in scikit-learn.

Bad input raises :class:`tricklab.errors.UserError`, a subclass of ``ValueError``, with a message that
names the argument, the expected shape and what was received.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.evaluate._checks import _check_num_classes, _check_probs, _check_scores, _check_targets, _to_labels
from tricklab.evaluate.calibration import _reliability_and_ece, softmax_probs

__all__ = [
    "accuracy",
    "confusion_matrix",
    "precision_recall_f1",
    "nll",
    "brier_score",
    "classification_metrics",
]

# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------


def accuracy(logits_or_preds: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy: the fraction of samples whose predicted class equals the target.

    ``acc = (1/N) * sum_i [argmax_c s_ic == y_i]``; same as ``sklearn.metrics.accuracy_score``.

    Args:
        logits_or_preds: scores ``(N, C)`` (logits or probabilities) or predicted labels ``(N,)`` (integer).
        targets: true labels ``(N,)`` (integer).

    Returns:
        Accuracy in ``[0, 1]``.
    """
    preds = _to_labels(logits_or_preds, "logits_or_preds", None)
    targets = _check_targets(targets, preds.shape[0], None)
    return float((preds == targets.to(preds.device)).to(torch.float64).mean())


def confusion_matrix(preds: Tensor, targets: Tensor, num_classes: int) -> Tensor:
    """Confusion matrix ``M`` of shape ``(C, C)``, int64, with ``M[i, j]`` = #samples of true class i predicted as j.

    Rows are true classes and columns predicted classes, as in ``sklearn.metrics.confusion_matrix``
    with ``labels=range(C)``; every class in ``[0, C)`` gets a row and a column even if absent.

    Args:
        preds: scores ``(N, C)`` (arg-max is taken) or predicted labels ``(N,)``.
        targets: true labels ``(N,)`` in ``[0, C)``.
        num_classes: ``C``.

    Returns:
        A CPU int64 tensor of shape ``(C, C)``.
    """
    num_classes = _check_num_classes(num_classes)
    labels = _to_labels(preds, "preds", num_classes).cpu()
    targets = _check_targets(targets, labels.shape[0], num_classes).cpu().long()
    # Encode each (true, pred) pair as one index true*C + pred and count them in a single bincount.
    flat = torch.bincount(targets * num_classes + labels, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).to(torch.int64)


def _prf_from_confusion(cm: Tensor) -> dict[str, Any]:
    # Per class c: TP = M[c, c], TP + FP = column sum (times c was predicted), TP + FN = row sum (support).
    cm = cm.to(torch.float64)
    tp = cm.diagonal()
    predicted = cm.sum(dim=0)
    support = cm.sum(dim=1)

    def safe_div(num: Tensor, den: Tensor) -> Tensor:
        # zero_division=0: a ratio with an empty denominator counts as 0 (sklearn's zero_division=0).
        return torch.where(den > 0, num / den.clamp_min(1), torch.zeros_like(num))

    precision = safe_div(tp, predicted)
    recall = safe_div(tp, support)
    # F1 = 2PR/(P+R) = 2TP / (2TP + FP + FN); the count form avoids 0/0 when P = R = 0.
    f1 = safe_div(2 * tp, predicted + support)
    return {
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "f1": [float(v) for v in f1],
        # Macro averages are unweighted means over all C classes, absent ones included (sklearn
        # average="macro" with labels=range(C)); macro F1 is the mean of per-class F1, not F1 of the means.
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "support": [int(v) for v in support],
    }


def precision_recall_f1(preds: Tensor, targets: Tensor, num_classes: int) -> dict:
    """Per-class and macro-averaged precision, recall and F1.

    For class c with ``TP_c``, ``FP_c``, ``FN_c``:
    ``P_c = TP_c / (TP_c + FP_c)``, ``R_c = TP_c / (TP_c + FN_c)``, ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``;
    a zero denominator gives 0.0. Macro values are the unweighted means over all ``C`` classes. Matches
    ``sklearn.metrics.precision_recall_fscore_support(labels=range(C), zero_division=0)``.

    Args:
        preds: scores ``(N, C)`` or predicted labels ``(N,)``.
        targets: true labels ``(N,)``.
        num_classes: ``C``.

    Returns:
        ``{"precision", "recall", "f1"}`` (lists of C floats), ``"macro_precision"``, ``"macro_recall"``,
        ``"macro_f1"`` (floats) and ``"support"`` (list of C ints: number of true samples per class).
    """
    return _prf_from_confusion(confusion_matrix(preds, targets, num_classes))


def nll(logits: Tensor, targets: Tensor) -> float:
    """Mean negative log-likelihood of the targets under ``softmax(logits)``.

    ``NLL = -(1/N) * sum_i log_softmax(z_i)[y_i]`` — the value of ``torch.nn.functional.cross_entropy``
    and of ``sklearn.metrics.log_loss`` on ``softmax(logits)``. Computed in float64 via log-softmax, so
    it stays finite for confident wrong predictions where ``log(softmax)`` would underflow.

    Args:
        logits: unnormalised scores ``(N, C)``.
        targets: true labels ``(N,)`` in ``[0, C)``.
    """
    logits = _check_scores(logits, "logits", None)
    targets = _check_targets(targets, logits.shape[0], logits.shape[1])
    return float(F.cross_entropy(logits.to(torch.float64), targets.to(logits.device).long()))


def brier_score(probs: Tensor, targets: Tensor) -> float:
    """Multiclass Brier score: ``(1/N) * sum_i sum_c (p_ic - [y_i == c])^2``, in ``[0, 2]`` (Brier 1950).

    This is Brier's original multi-category form (sum over classes), not the binary
    ``sklearn.metrics.brier_score_loss`` of the positive class only, which is half of it for C = 2.

    Args:
        probs: probabilities ``(N, C)``; each row must sum to 1.
        targets: true labels ``(N,)`` in ``[0, C)``.
    """
    probs = _check_probs(probs)
    targets = _check_targets(targets, probs.shape[0], probs.shape[1])
    onehot = F.one_hot(targets.to(probs.device).long(), probs.shape[1]).to(torch.float64)
    return float(((probs - onehot) ** 2).sum(dim=1).mean())


def classification_metrics(logits: Tensor, targets: Tensor, num_classes: int, n_bins: int = 15) -> dict[str, Any]:
    """All classification metrics in one JSON-serialisable dict.

    Keys: ``accuracy``, ``macro_f1``, ``macro_precision``, ``macro_recall``, ``per_class_f1`` (list),
    ``nll``, ``brier``, ``ece`` (``n_bins`` equal-width bins), ``confusion_matrix`` (list of lists,
    rows = true class) and ``reliability`` (see :func:`tricklab.evaluate.reliability_diagram`).
    Every value is a Python float/int/list/None, so ``json.dumps`` works on the result.

    Args:
        logits: unnormalised scores ``(N, C)``; probabilities are ``softmax(logits)``.
        targets: true labels ``(N,)``.
        num_classes: ``C``; must equal ``logits.shape[1]``.
        n_bins: number of equal-width confidence bins for ECE and the reliability diagram.
    """
    num_classes = _check_num_classes(num_classes)
    logits = _check_scores(logits, "logits", num_classes)
    targets = _check_targets(targets, logits.shape[0], num_classes)
    cm = confusion_matrix(logits, targets, num_classes)
    prf = _prf_from_confusion(cm)
    probs = softmax_probs(logits.to(torch.float64))
    reliability, ece = _reliability_and_ece(probs, targets, n_bins)
    return {
        # accuracy = trace(M) / N, read off the confusion matrix to avoid a second pass.
        "accuracy": float(cm.diagonal().sum()) / float(cm.sum()),
        "macro_f1": prf["macro_f1"],
        "macro_precision": prf["macro_precision"],
        "macro_recall": prf["macro_recall"],
        "per_class_f1": prf["f1"],
        "nll": nll(logits, targets),
        "brier": brier_score(probs, targets),
        "ece": ece,
        "confusion_matrix": [[int(v) for v in row] for row in cm.tolist()],
        "reliability": reliability,
    }
