"""Tests of tricklab.evaluate.calibration.

Reference: Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017),
ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)| with equal-width bins (lo, hi] on the max probability.
The reference here is a direct NumPy loop over bins written in this file, plus closed-form cases.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tricklab.evaluate import expected_calibration_error, reliability_diagram, softmax_probs


def _numpy_ece(probs: np.ndarray, targets: np.ndarray, n_bins: int) -> tuple[float, list[int]]:
    """Direct loop implementation: bin b holds lo < conf <= hi, and the first bin also holds conf == 0."""
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == targets).astype(np.float64)
    n = len(targets)
    ece = 0.0
    counts = []
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi)
        if b == 0:
            in_bin |= conf == 0.0
        counts.append(int(in_bin.sum()))
        if in_bin.any():
            ece += in_bin.sum() / n * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece), counts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n_bins", [15, 10, 7])
def test_ece_matches_numpy_loop(seed: int, n_bins: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(500, 6, generator=g, dtype=torch.float64) * 2.5
    targets = torch.randint(0, 6, (500,), generator=g)
    probs = softmax_probs(logits)
    ref_ece, ref_counts = _numpy_ece(probs.numpy(), targets.numpy(), n_bins)
    assert expected_calibration_error(probs, targets, n_bins) == pytest.approx(ref_ece, rel=1e-10, abs=1e-14)
    diagram = reliability_diagram(probs, targets, n_bins)
    assert diagram["count"] == ref_counts
    assert sum(diagram["count"]) == 500  # every sample lands in exactly one bin
    assert diagram["bin_edges"] == [k / n_bins for k in range(n_bins + 1)]
    assert len(diagram["confidence"]) == len(diagram["accuracy"]) == n_bins
    # ECE equals the count-weighted gap read off the diagram itself.
    gap = sum(
        c / 500 * abs(a - f)
        for c, a, f in zip(diagram["count"], diagram["accuracy"], diagram["confidence"])
        if c > 0
    )
    assert gap == pytest.approx(ref_ece, rel=1e-10, abs=1e-14)


def test_perfectly_calibrated_ece_near_zero() -> None:
    # Binary case with p ~ U(0, 1) and y ~ Bernoulli(p): calibrated by construction, so ECE is only
    # sampling noise, of order sum_b (n_b/N) * sqrt(p(1-p)/n_b) <= 0.01 for N = 20000 and 15 bins
    # (about 0.005 observed over seeds 0-4).
    g = torch.Generator().manual_seed(0)
    n = 20000
    p1 = torch.rand(n, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < p1).long()
    probs = torch.stack([1 - p1, p1], dim=1)
    ece = expected_calibration_error(probs, y)
    assert 0.0 <= ece < 0.025
    # The same confidences with the labels flipped are badly calibrated.
    assert expected_calibration_error(probs, 1 - y) > 0.3


def test_overconfident_closed_form() -> None:
    # Every sample has confidence 0.9 and 60% are correct: one non-empty bin, ECE = |0.6 - 0.9| = 0.3.
    n = 10
    probs = torch.tensor([[0.9, 0.1]] * n, dtype=torch.float64)
    targets = torch.tensor([0] * 6 + [1] * 4)
    assert expected_calibration_error(probs, targets) == pytest.approx(0.3, abs=1e-12)
    diagram = reliability_diagram(probs, targets, n_bins=10)
    # 0.9 lies on the edge 9/10, so it belongs to bin 8 = (0.8, 0.9] (its upper edge).
    assert diagram["count"] == [0] * 8 + [10, 0]
    assert diagram["confidence"][8] == pytest.approx(0.9)
    assert diagram["accuracy"][8] == pytest.approx(0.6)
    assert diagram["confidence"][9] is None and diagram["accuracy"][9] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_confidences_exactly_on_bin_edges(dtype: torch.dtype) -> None:
    # With 4 bins the edges are 0, .25, .5, .75, 1 (exact in float32 too). Bins are (lo, hi]:
    # conf .25 -> bin 0, .5 -> bin 1, .75 -> bin 2, 1.0 -> bin 3; just above .5 -> bin 2.
    probs = torch.tensor(
        [
            [0.25, 0.25, 0.25, 0.25],  # conf 0.25, predicts class 0
            [0.5, 0.5, 0.0, 0.0],  # conf 0.5, predicts class 0
            [0.75, 0.25, 0.0, 0.0],  # conf 0.75
            [1.0, 0.0, 0.0, 0.0],  # conf 1.0
            [0.5 + 2**-10, 0.5 - 2**-10, 0.0, 0.0],  # just above an edge
        ],
        dtype=dtype,
    )
    targets = torch.tensor([0, 1, 0, 0, 1])
    diagram = reliability_diagram(probs, targets, n_bins=4)
    assert diagram["count"] == [1, 1, 2, 1]
    assert diagram["accuracy"] == [1.0, 0.0, 0.5, 1.0]
    assert diagram["confidence"][:2] == [0.25, 0.5]
    assert diagram["confidence"][2] == pytest.approx((0.75 + 0.5 + 2**-10) / 2)
    ref, ref_counts = _numpy_ece(probs.double().numpy(), targets.numpy(), 4)
    assert ref_counts == diagram["count"]
    assert expected_calibration_error(probs, targets, 4) == pytest.approx(ref, abs=1e-12)
    # Closed form: (1*|1-.25| + 1*|0-.5| + 2*|.5-conf2| + 1*|1-1|) / 5.
    conf2 = (0.75 + 0.5 + 2**-10) / 2
    assert ref == pytest.approx((0.75 + 0.5 + 2 * abs(0.5 - conf2)) / 5)


def test_float64_tenth_is_on_edge() -> None:
    # 0.1 (float64) == 1/10 exactly, so with 10 bins it is the upper edge of bin 0, not in bin 1.
    probs = torch.tensor([[0.1] * 10], dtype=torch.float64)
    assert reliability_diagram(probs, torch.tensor([0]), n_bins=10)["count"] == [1] + [0] * 9


def test_diagram_is_json_valid() -> None:
    probs = softmax_probs(torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    diagram = reliability_diagram(probs, torch.tensor([0, 2]))
    text = json.dumps(diagram, allow_nan=False)
    back = json.loads(text)
    assert len(back["bin_edges"]) == 16 and back["bin_edges"][0] == 0.0 and back["bin_edges"][-1] == 1.0
    assert sum(back["count"]) == 2
    assert all((c == 0) == (f is None) for c, f in zip(back["count"], back["confidence"]))


def test_softmax_probs_rows_sum_to_one_and_upcast_half() -> None:
    logits = torch.randn(8, 5)
    probs = softmax_probs(logits)
    assert probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(8))
    assert softmax_probs(logits.half()).dtype == torch.float32
    assert not softmax_probs(logits.requires_grad_()).requires_grad


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: expected_calibration_error(torch.randn(4, 3), torch.tensor([0, 1, 2, 0])), r"softmax\(logits\)"),
        (lambda: expected_calibration_error(torch.full((2, 2), 0.5), torch.tensor([0, 1]), n_bins=0), r"n_bins"),
        (lambda: reliability_diagram(torch.full((2, 2), 0.5), torch.tensor([0, 1, 1])), r"length N=2"),
        (lambda: reliability_diagram(torch.full((2,), 0.5), torch.tensor([0, 1])), r"shape \(N, C\)"),
    ],
)
def test_bad_inputs(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_ece_bounded() -> None:
    # ECE is a weighted mean of |acc - conf| with both in [0, 1], so it lies in [0, 1].
    g = torch.Generator().manual_seed(5)
    probs = softmax_probs(torch.randn(100, 3, generator=g) * 10)
    ece = expected_calibration_error(probs, torch.randint(0, 3, (100,), generator=g))
    assert 0.0 <= ece <= 1.0 and not math.isnan(ece)
