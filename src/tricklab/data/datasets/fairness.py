"""Tabular data sets with a sensitive (group) attribute, for fairness audits and fairness constraints.

Both are binary tasks (label 1 is the favourable outcome, the one a "selection" grants) whose **last input
column is the group id** (0 or 1, not standardised): a model sees it like any feature, and the
``fairness_penalty`` technique and the audit read it from there (``meta["group_column"] == -1``).

``fair-synthetic`` (made by code, seeded, ``numpy.random.default_rng(seed)``), per example:

1. group ``a ~ Bernoulli(group_fraction)`` (group 1 is the disadvantaged one);
2. features ``x ~ N(0, I_d)``, and the last feature is a *proxy* of the group: ``x_{d-1} += proxy * (2a - 1)``
   (proxy = 0: the features say nothing about the group);
3. the unbiased label ``y* = 1[w . x_{0..d-2} + eps > 0]`` with ``w ~ N(0, I)`` normalised to unit length and
   ``eps ~ N(0, noise^2)``: the true qualification, the same rule for both groups;
4. the observed label (historical *label bias*): for group 1, a positive ``y*`` is recorded as 0 with
   probability ``bias``: ``y = y* * (1 - 1[a = 1] * Bernoulli(bias))``. ``bias = 0`` gives unbiased labels.

Train and test labels are both the observed ones (an audit sees what was recorded); the unbiased test labels
are kept in ``meta["y_test_unbiased"]``. Inputs: ``[x_0..x_{d-1}, a]``, shape ``(d + 1,)``.

``breast-cancer-groups``: scikit-learn's Wisconsin breast cancer data (569 samples) with the group defined as
``mean texture > 18.84`` (the median over all 569; 284 samples in group 1); the ``mean texture`` column is
removed from the features and the group column appended, so the group is the only direct carrier of that
measurement (the ``worst texture`` and ``texture error`` columns stay and correlate with it). Label 1 =
benign (the sklearn target). The base rates differ by group (benign: 42% in group 1 vs 84% in group 0), so a
classifier that is accurate for both groups has a large demographic-parity difference. Split and
standardisation as ``breast-cancer`` (seeded 80/20, train statistics); 29 standardised features + group.
"""

from __future__ import annotations

import numpy as np
import torch

from tricklab.data.base import DATASETS, ArrayDataset
from tricklab.data.datasets.sklearn_sets import _sklearn_loader, split_indices
from tricklab.errors import UserError

__all__ = ["make_fair_synthetic", "load_fair_synthetic", "load_breast_cancer_groups", "TEXTURE_THRESHOLD"]

#: median ``mean texture`` over the 569 samples of sklearn's breast cancer data (the group threshold)
TEXTURE_THRESHOLD = 18.84


def _check_fraction(name: str, value: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"fair-synthetic: {name} must be a number, got {value!r}")
    ok = (0.0 < value < 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        raise UserError(f"fair-synthetic: {name} must lie in {'(0, 1)' if low_open else '[0, 1]'}, got {value}")
    return float(value)


def make_fair_synthetic(n: int, *, features: int = 8, bias: float = 0.5, proxy: float = 1.0,
                        group_fraction: float = 0.4, noise: float = 0.5,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (n, features + 1) float32, y (n,) observed labels, y_unbiased (n,))`` (see the module docstring)."""
    bias = _check_fraction("bias", bias)
    group_fraction = _check_fraction("group_fraction", group_fraction, low_open=True)
    if isinstance(features, bool) or not isinstance(features, int) or features < 2:
        raise UserError(f"fair-synthetic: features must be an int >= 2, got {features!r}")
    if not isinstance(proxy, (int, float)) or isinstance(proxy, bool) or not noise >= 0:
        raise UserError("fair-synthetic: proxy must be a number and noise a number >= 0")
    w = rng.standard_normal(features - 1)
    w /= np.linalg.norm(w)
    a = (rng.random(n) < group_fraction).astype(np.int64)
    x = rng.standard_normal((n, features))
    x[:, -1] += proxy * (2 * a - 1)
    y_true = (x[:, :-1] @ w + noise * rng.standard_normal(n) > 0).astype(np.int64)
    flip = (a == 1) & (rng.random(n) < bias)
    y = np.where(flip, 0, y_true)
    return np.concatenate([x, a[:, None]], 1).astype(np.float32), y, y_true


@DATASETS.register("fair-synthetic", summary="code-made binary task with a group attribute (last column) and a "
                                             "controllable label bias, 4000/2000")
def load_fair_synthetic(data_dir: str | None = None, *, num_train: int = 4000, num_test: int = 2000,
                        features: int = 8, bias: float = 0.5, proxy: float = 1.0, group_fraction: float = 0.4,
                        noise: float = 0.5, seed: int = 0) -> ArrayDataset:
    """The code-made fairness task (module docstring); ``data_dir`` is ignored."""
    for name, v in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"fair-synthetic: {name} must be an int >= 1, got {v!r}")
    rng = np.random.default_rng(seed)
    x, y, y_true = make_fair_synthetic(num_train + num_test, features=features, bias=bias, proxy=proxy,
                                       group_fraction=group_fraction, noise=noise, rng=rng)
    tr, te = slice(0, num_train), slice(num_train, None)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return ArrayDataset(
        name="fair-synthetic", x_train=t(x[tr]), y_train=t(y[tr]), x_test=t(x[te]), y_test=t(y[te]),
        num_classes=2, input_shape=(features + 1,), class_names=["unfavourable", "favourable"],
        meta={"source": "tricklab.data.datasets.fairness.make_fair_synthetic", "seed": seed, "bias": bias,
              "proxy": proxy, "group_fraction": group_fraction, "noise": noise, "group_column": -1,
              "y_test_unbiased": t(y_true[te])},
    )


@DATASETS.register("breast-cancer-groups", summary="sklearn breast cancer with a group attribute (mean texture "
                                                  "above the median, last column), 455/114")
def load_breast_cancer_groups(data_dir: str | None = None, *, seed: int = 0,
                              test_fraction: float = 0.2) -> ArrayDataset:
    """Breast cancer with the group ``mean texture > 18.84`` as the last column (module docstring)."""
    bunch = _sklearn_loader("load_breast_cancer")()
    x = bunch.data.astype(np.float64)
    col = list(bunch.feature_names).index("mean texture")
    group = (x[:, col] > TEXTURE_THRESHOLD).astype(np.float64)
    x = np.delete(x, col, axis=1)
    train, test = split_indices(len(bunch.target), test_fraction, seed)
    mean, std = x[train].mean(0), x[train].std(0)
    std[std == 0] = 1.0
    x = (x - mean) / std
    full = np.concatenate([x, group[:, None]], 1).astype(np.float32)
    y = bunch.target.astype(np.int64)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return ArrayDataset(
        name="breast-cancer-groups", x_train=t(full[train]), y_train=t(y[train]), x_test=t(full[test]),
        y_test=t(y[test]), num_classes=2, input_shape=(full.shape[1],),
        class_names=[str(c) for c in bunch.target_names],
        meta={"source": "sklearn.datasets.load_breast_cancer", "split_seed": seed, "test_fraction": test_fraction,
              "group_column": -1, "group": f"mean texture > {TEXTURE_THRESHOLD}",
              "feature_names": [n for n in bunch.feature_names if n != "mean texture"] + ["group"]},
    )
