"""Improved precision/recall (Kynkaenniemi et al., 2019) against a brute-force NumPy loop over eq. 1.

The metric is a count of ball memberships (piecewise constant in the features), so it has no gradient to check."""

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.paradigms.generative.precision_recall import knn_radii, manifold_coverage, precision_recall


def numpy_coverage(queries: np.ndarray, support: np.ndarray, k: int) -> float:
    """Slow reference: for every support point sort its distances to the others, take the k-th; a query counts
    when it is within at least one support point's radius."""
    radii = []
    for j, s in enumerate(support):
        d = sorted(float(np.linalg.norm(s - o)) for i, o in enumerate(support) if i != j)
        radii.append(d[k - 1])
    hits = 0
    for q in queries:
        hits += any(np.linalg.norm(q - s) <= r for s, r in zip(support, radii))
    return hits / len(queries)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_coverage_equals_brute_force(k: int) -> None:
    g = torch.Generator().manual_seed(k)
    real = torch.randn(60, 4, generator=g)
    fake = torch.randn(45, 4, generator=g) * 1.5 + 0.7  # partly overlapping: both numbers strictly in (0, 1)
    p, r = precision_recall(real, fake, k=k)
    assert p == pytest.approx(numpy_coverage(fake.numpy(), real.numpy(), k), abs=0)
    assert r == pytest.approx(numpy_coverage(real.numpy(), fake.numpy(), k), abs=0)
    assert 0 < p < 1 or 0 < r < 1


def test_chunking_does_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 3, generator=g), torch.randn(70, 3, generator=g)
    assert manifold_coverage(a, b, 3, chunk=7) == manifold_coverage(a, b, 3, chunk=1000)
    assert torch.equal(knn_radii(b, 3, chunk=7), knn_radii(b, 3, chunk=1000))


def test_limits_identical_and_far_apart_sets() -> None:
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    assert precision_recall(x, x.clone()) == (1.0, 1.0)
    assert precision_recall(x, x + 1000.0) == (0.0, 0.0)


def test_mode_collapse_keeps_precision_and_loses_recall() -> None:
    """Samples that all sit on one real point look real (precision 1) but cover little (recall small)."""
    real = torch.randn(200, 2, generator=torch.Generator().manual_seed(2))
    collapsed = real[:1].repeat(50, 1) + 1e-6 * torch.randn(50, 2, generator=torch.Generator().manual_seed(3))
    p, r = precision_recall(real, collapsed)
    assert p == 1.0
    assert r < 0.1


def test_bad_input_is_explained() -> None:
    with pytest.raises(ConfigError, match="k must be in"):
        knn_radii(torch.randn(3, 2), k=3)
    with pytest.raises(ConfigError, match="same feature extractor"):
        manifold_coverage(torch.randn(4, 2), torch.randn(5, 3))
    with pytest.raises(ConfigError, match=r"\(N, F\)"):
        precision_recall(torch.randn(5), torch.randn(5, 2))
