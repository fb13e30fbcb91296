"""Fairness data sets. References: NumPy recomputation of the generator's steps from the same seed (the
documented recipe), scikit-learn's breast cancer data for the group definition and the standardisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.data import load_dataset
from tricklab.data.datasets.fairness import TEXTURE_THRESHOLD, make_fair_synthetic
from tricklab.errors import UserError


def test_fair_synthetic_follows_its_documented_recipe() -> None:
    d = load_dataset("fair-synthetic", num_train=300, num_test=200, features=5, bias=0.6, proxy=1.5, seed=3)
    rng = np.random.default_rng(3)
    w = rng.standard_normal(4)
    w /= np.linalg.norm(w)
    a = (rng.random(500) < 0.4).astype(np.int64)
    x = rng.standard_normal((500, 5))
    x[:, -1] += 1.5 * (2 * a - 1)
    y_true = (x[:, :-1] @ w + 0.5 * rng.standard_normal(500) > 0).astype(np.int64)
    y = np.where((a == 1) & (rng.random(500) < 0.6), 0, y_true)
    np.testing.assert_allclose(torch.cat([d.x_train, d.x_test]).numpy(),
                               np.concatenate([x, a[:, None]], 1).astype(np.float32))
    np.testing.assert_array_equal(torch.cat([d.y_train, d.y_test]).numpy(), y)
    np.testing.assert_array_equal(d.meta["y_test_unbiased"].numpy(), y_true[300:])
    assert d.input_shape == (6,) and d.meta["group_column"] == -1 and d.num_classes == 2


def test_bias_controls_the_base_rate_gap() -> None:
    rates = []
    for bias in (0.0, 0.5, 1.0):
        x, y, _ = make_fair_synthetic(20000, bias=bias, rng=np.random.default_rng(0))
        g = x[:, -1]
        rates.append(y[g == 0].mean() - y[g == 1].mean())
    assert abs(rates[0]) < 0.03 and 0.15 < rates[1] < 0.35 and rates[2] > 0.4


def test_breast_cancer_groups() -> None:
    skd = pytest.importorskip("sklearn.datasets")
    bunch = skd.load_breast_cancer()
    assert float(np.median(bunch.data[:, 1])) == TEXTURE_THRESHOLD
    d = load_dataset("breast-cancer-groups")
    base = load_dataset("breast-cancer")
    assert d.input_shape == (30,) and d.num_train == base.num_train and d.num_test == base.num_test
    torch.testing.assert_close(d.y_test, base.y_test)
    # same split as breast-cancer: its standardised columns, minus "mean texture", then the group
    keep = [i for i in range(30) if i != 1]
    torch.testing.assert_close(d.x_train[:, :-1], base.x_train[:, keep], rtol=1e-5, atol=1e-5)
    group = torch.cat([d.x_train[:, -1], d.x_test[:, -1]])
    assert set(group.tolist()) == {0.0, 1.0} and int(group.sum()) == int((bunch.data[:, 1] > TEXTURE_THRESHOLD).sum())
    assert d.meta["feature_names"][-1] == "group" and "mean texture" not in d.meta["feature_names"]


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match="bias"):
        load_dataset("fair-synthetic", bias=1.5)
    with pytest.raises(UserError, match="group_fraction"):
        load_dataset("fair-synthetic", group_fraction=0.0)
    with pytest.raises(UserError, match="num_train"):
        load_dataset("fair-synthetic", num_train=0)
