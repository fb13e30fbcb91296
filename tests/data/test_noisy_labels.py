"""Noisy labels. References: counting (the number of changed labels is the stated one), the definition of the
flip targets (uniform over the other classes: a chi-square goodness-of-fit test from scipy; the pair mapping; the
support of a transition matrix), and largest-remainder apportionment for the per-class counts."""

from __future__ import annotations

import math

import pytest
import torch

from tricklab.data.base import ArrayDataset
from tricklab.data.noisy_labels import class_dependent_noise, symmetric_noise, with_noisy_labels
from tricklab.errors import DataError


def _labels(n: int = 1000, c: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,fraction", [(1000, 0.4), (4000, 0.4), (999, 0.2), (37, 0.5), (10, 0.0), (10, 1.0),
                                        (7, 0.35)])
def test_symmetric_noise_flips_exactly_the_stated_fraction(n: int, fraction: float) -> None:
    y = _labels(n)
    out = symmetric_noise(y, fraction, 10, seed=3)
    changed = out.labels != y
    assert int(changed.sum()) == round(fraction * n)
    assert torch.equal(changed, out.flipped)
    assert out.num_flipped == round(fraction * n) and out.fraction == pytest.approx(round(fraction * n) / n)
    assert torch.equal(y, _labels(n))  # the input is not modified


def test_symmetric_targets_are_uniform_over_the_other_classes() -> None:
    stats = pytest.importorskip("scipy.stats")
    y = torch.zeros(60_000, dtype=torch.long)
    out = symmetric_noise(y, 0.5, 6, seed=0)
    counts = torch.bincount(out.labels[out.flipped], minlength=6)
    assert counts[0] == 0
    p = stats.chisquare(counts[1:].numpy()).pvalue
    assert p > 1e-3, counts


def test_noise_is_seeded_and_leaves_the_global_rng_alone() -> None:
    y = _labels()
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    a = symmetric_noise(y, 0.3, 10, seed=5)
    torch.testing.assert_close(torch.rand(3), expected)
    b = symmetric_noise(y, 0.3, 10, seed=5)
    c = symmetric_noise(y, 0.3, 10, seed=6)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)


@pytest.mark.parametrize("fraction", [0.4, 0.25, 0.33])
def test_pair_flipping_flips_the_stated_fraction_per_class_and_in_total(fraction: float) -> None:
    y = _labels(997, 7, seed=2)
    out = class_dependent_noise(y, fraction, 7, seed=1)
    changed = out.labels != y
    assert int(changed.sum()) == round(fraction * 997)
    for c in range(7):
        in_c = y == c
        k = int((changed & in_c).sum())
        target = fraction * int(in_c.sum())
        assert math.floor(target) <= k <= math.ceil(target)
        assert torch.all(out.labels[changed & in_c] == (c + 1) % 7)  # Han et al.'s pair flip c -> c + 1


def test_per_class_fractions_mapping_and_transition() -> None:
    y = torch.arange(4).repeat_interleave(50)
    out = class_dependent_noise(y, [0.0, 0.2, 0.5, 1.0], 4, seed=0, mapping=[1, 0, 0, 2])
    changed = out.labels != y
    assert [int((changed & (y == c)).sum()) for c in range(4)] == [0, 10, 25, 50]
    assert set(out.labels[changed & (y == 3)].tolist()) == {2}
    t = torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 3], [1, 1, 0, 0], [0, 0, 1, 0]])
    out = class_dependent_noise(y, 0.5, 4, seed=0, transition=t)
    changed = out.labels != y
    assert int(changed.sum()) == 100
    allowed = {0: {1}, 1: {3}, 2: {0, 1}, 3: {2}}
    for c, ok in allowed.items():
        assert set(out.labels[changed & (y == c)].tolist()) <= ok


def test_dataset_view_changes_only_training_labels() -> None:
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset("toy", torch.randn(100, 3, generator=g), _labels(100, 3), torch.randn(20, 3, generator=g),
                      _labels(20, 3, seed=1), 3, (3,))
    noisy, info = with_noisy_labels(ds, "symmetric", 0.4, seed=0)
    assert int((noisy.y_train != ds.y_train).sum()) == 40 == info.num_flipped
    assert torch.equal(noisy.y_test, ds.y_test) and torch.equal(noisy.x_train, ds.x_train)
    assert noisy.meta["label_noise"]["num_flipped"] == 40
    with pytest.raises(DataError, match="unknown label-noise kind"):
        with_noisy_labels(ds, "asymmetric", 0.4)


def test_bad_requests_are_refused() -> None:
    y = _labels(20, 3)
    with pytest.raises(DataError, match="fraction"):
        symmetric_noise(y, 1.5, 3)
    with pytest.raises(DataError, match=">= 2"):
        symmetric_noise(torch.zeros(4, dtype=torch.long), 0.5, 1)
    with pytest.raises(DataError, match="lie in"):
        symmetric_noise(y, 0.5, 2)
    with pytest.raises(DataError, match="themselves"):
        class_dependent_noise(y, 0.5, 3, mapping=[0, 2, 1])
    with pytest.raises(DataError, match="one fraction per class"):
        class_dependent_noise(y, [0.1, 0.2], 3)
    with pytest.raises(DataError, match="off-diagonal"):
        class_dependent_noise(y, 0.5, 3, transition=torch.eye(3))
    with pytest.raises(DataError, match="integer"):
        symmetric_noise(y.float(), 0.5, 3)
