"""Calibration: reliability diagrams and expected calibration error (ECE).

A classifier is calibrated when, among the samples it predicts with confidence ``p``, a fraction
``p`` is correct. Following Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017), the
confidence of a sample is its largest predicted probability ``conf_i = max_c p_ic`` and its prediction
is the arg-max class. The interval [0, 1] is split into ``n_bins`` equal-width bins (15 by default,
as in that paper).

Binning rule: the bin edges are ``e_k = k / n_bins`` (k = 0..n_bins, float64) and bin ``b`` (0-based)
is the half-open interval ``(e_b, e_{b+1}]``, except that the first bin also holds confidence 0,
i.e. it is ``[0, e_1]``. A confidence lying exactly on an inner edge therefore goes to the bin whose
*upper* edge it is (0.5 with 10 bins is in bin 4, ``(0.4, 0.5]``); this is the rule of Guo et al.'s
reference code (``bin_lower < conf <= bin_upper``). Confidences are compared to the edges in float64
after an exact up-cast, so a float32 confidence equals an edge only if the edge is representable in
float32 (e.g. 0.25, 0.5, 0.75, 1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from tricklab.errors import UserError
from tricklab.evaluate._checks import _check_probs, _check_targets

__all__ = ["softmax_probs", "reliability_diagram", "expected_calibration_error"]


def softmax_probs(logits: Tensor) -> Tensor:
    """Class probabilities ``softmax(logits)`` over the last dimension, detached.

    Half-precision inputs are up-cast to float32 first (a float16 softmax loses the small
    probabilities that NLL and calibration depend on); float32/float64 keep their dtype.
    """
    if not isinstance(logits, Tensor) or not logits.dtype.is_floating_point:
        raise UserError(
            f"logits must be a floating torch.Tensor, got "
            f"{type(logits).__name__ if not isinstance(logits, Tensor) else logits.dtype}"
        )
    logits = logits.detach()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return torch.softmax(logits, dim=-1)


def _check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise UserError(f"n_bins must be a positive int, got {n_bins!r}")
    return n_bins


def _reliability_and_ece(probs: Tensor, targets: Tensor, n_bins: int) -> tuple[dict[str, Any], float]:
    """Shared core of :func:`reliability_diagram` and :func:`expected_calibration_error` (one pass)."""
    n_bins = _check_n_bins(n_bins)
    probs = _check_probs(probs)  # float64 (N, C), rows sum to 1
    targets = _check_targets(targets, probs.shape[0], probs.shape[1]).to(probs.device)
    n = probs.shape[0]

    conf, pred = probs.max(dim=1)
    correct = (pred == targets).to(torch.float64)

    # k / n_bins in Python float64 is correctly rounded, unlike linspace (which may be 1 ulp off),
    # so e.g. 0.1 with 10 bins compares equal to the edge 1/10.
    edges = [k / n_bins for k in range(n_bins + 1)]
    edge_t = torch.tensor(edges, dtype=torch.float64, device=probs.device)
    # bucketize(right=False) returns i with edges[i-1] < conf <= edges[i], so bin = i - 1 is (lo, hi];
    # conf == 0 gives i = 0, which the clamp sends to the first bin.
    bins = (torch.bucketize(conf, edge_t, right=False) - 1).clamp(0, n_bins - 1)

    count = torch.bincount(bins, minlength=n_bins).to(torch.float64)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64, device=probs.device).index_add_(0, bins, conf)
    correct_sum = torch.zeros(n_bins, dtype=torch.float64, device=probs.device).index_add_(0, bins, correct)

    nonempty = count > 0
    mean_conf = torch.where(nonempty, conf_sum / count.clamp_min(1), torch.zeros_like(conf_sum))
    mean_acc = torch.where(nonempty, correct_sum / count.clamp_min(1), torch.zeros_like(conf_sum))
    # ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|; empty bins have weight 0.
    ece = float(((count / n) * (mean_acc - mean_conf).abs()).sum())

    counts = [int(c) for c in count.tolist()]
    diagram = {
        "bin_edges": edges,
        # None (JSON null) rather than NaN for empty bins, so the dict is valid JSON.
        "confidence": [float(v) if c > 0 else None for v, c in zip(mean_conf.tolist(), counts)],
        "accuracy": [float(v) if c > 0 else None for v, c in zip(mean_acc.tolist(), counts)],
        "count": counts,
    }
    return diagram, ece


def reliability_diagram(probs: Tensor, targets: Tensor, n_bins: int = 15) -> dict:
    """Per-bin mean confidence, accuracy and count of the max-probability confidence (Guo et al. 2017).

    Bins are equal-width over [0, 1], ``(lo, hi]`` with the first bin closed at 0 (see the module
    docstring for the exact rule on edges).

    Args:
        probs: probabilities ``(N, C)``; each row must sum to 1.
        targets: true labels ``(N,)``.
        n_bins: number of bins.

    Returns:
        ``{"bin_edges": n_bins + 1 floats, "confidence": per-bin mean of max_c p_ic (None if empty),
        "accuracy": per-bin fraction of arg-max predictions that are correct (None if empty),
        "count": per-bin number of samples (ints summing to N)}``.
    """
    return _reliability_and_ece(probs, targets, n_bins)[0]


def expected_calibration_error(probs: Tensor, targets: Tensor, n_bins: int = 15) -> float:
    """Expected calibration error ``ECE = sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` (Guo et al. 2017).

    ``B_b`` are the samples whose confidence ``max_c p_ic`` falls in bin ``b`` of ``n_bins`` equal-width
    bins over [0, 1] (15 by default, as in the paper); ``acc`` and ``conf`` are the bin's accuracy and
    mean confidence. 0 for a perfectly calibrated model (up to sampling noise); at most 1.

    Args:
        probs: probabilities ``(N, C)``; each row must sum to 1. Use :func:`softmax_probs` on logits.
        targets: true labels ``(N,)``.
        n_bins: number of bins.
    """
    return _reliability_and_ece(probs, targets, n_bins)[1]

