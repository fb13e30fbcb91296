"""Deletion / insertion curves. References: the slow path (a Python loop that removes features one ranked group
at a time and calls the model on each copy); NumPy's trapezoid rule for the areas; on a linear model the exact
contributions w_i x_i rank features perfectly, so they must beat a random ranking on both curves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from explain_helpers import cnn2d
from tricklab.errors import UserError
from tricklab.explain import curve_area, deletion_curve, faithfulness_scores, insertion_curve
from tricklab.explain.methods import default_feature_mask


def _slow_curve(model: nn.Module, x: torch.Tensor, attr: torch.Tensor, t: int, steps: int, mask: torch.Tensor,
                insertion: bool, baseline: float) -> np.ndarray:
    m = int(mask.max()) + 1
    score = np.zeros(m)
    for j in range(m):
        score[j] = float(attr[mask == j].sum())
    order = np.argsort(-score, kind="stable")
    out = []
    for k in range(steps + 1):
        chosen = set(order[: math.ceil(k * m / steps)].tolist())
        sel = torch.tensor([int(v) in chosen for v in mask.flatten()]).reshape(mask.shape)
        if insertion:
            z = torch.where(sel, x, torch.full_like(x, baseline))
        else:
            z = torch.where(sel, torch.full_like(x, baseline), x)
        with torch.no_grad():
            out.append(float(model(z.unsqueeze(0)).softmax(1)[0, t]))
    return np.array(out)


@pytest.mark.parametrize("insertion", [False, True])
def test_curves_match_the_slow_loop_with_groups(insertion: bool) -> None:
    m = cnn2d(image=8)
    g = torch.Generator().manual_seed(0)
    x, attr = torch.rand(3, 1, 8, 8, generator=g), torch.randn(3, 1, 8, 8, generator=g)
    mask = default_feature_mask((1, 8, 8), max_features=16)  # 2x2 patches
    fn = insertion_curve if insertion else deletion_curve
    got = fn(m, x, attr, 2, steps=7, feature_mask=mask, baseline=0.25, batch_size=5)
    for i in range(3):
        ref = _slow_curve(m, x[i], attr[i], 2, 7, mask, insertion, 0.25)
        np.testing.assert_allclose(got[i].numpy(), ref, rtol=1e-5, atol=1e-6)


def test_area_is_the_trapezoid_rule() -> None:
    c = torch.rand(4, 11, dtype=torch.float64)
    np.testing.assert_allclose(curve_area(c).numpy(), np.trapezoid(c.numpy(), dx=0.1, axis=1), rtol=1e-12)
    with pytest.raises(UserError, match="K >= 2"):
        curve_area(torch.rand(3, 1))


def test_true_contributions_beat_a_random_ranking() -> None:
    torch.manual_seed(1)
    m = nn.Linear(30, 2)
    x = torch.randn(64, 30)
    t = m(x).argmax(1)
    w = (m.weight[t] - m.weight[1 - t]).detach()
    exact = w * x  # each feature's exact contribution to the logit margin (zero reference)
    good = faithfulness_scores(m, x, exact, t)
    rand = faithfulness_scores(m, x, torch.rand(x.shape, generator=torch.Generator().manual_seed(0)), t)
    assert float(good["deletion_auc"].mean()) < float(rand["deletion_auc"].mean()) - 0.1
    assert float(good["insertion_auc"].mean()) > float(rand["insertion_auc"].mean()) + 0.1
    torch.testing.assert_close(good["insertion_minus_deletion"], good["insertion_auc"] - good["deletion_auc"])
    # the curves start and end where they must: nothing / everything removed
    with torch.no_grad():
        p = m(x).softmax(1).gather(1, t[:, None])[:, 0]
        p0 = m(torch.zeros_like(x)).softmax(1).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(good["deletion_curve"][:, 0], p)
    torch.testing.assert_close(good["deletion_curve"][:, -1], p0)
    torch.testing.assert_close(good["insertion_curve"][:, -1], p)


def test_shape_errors() -> None:
    m = cnn2d(image=8)
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(UserError, match="upsample_to_input"):
        deletion_curve(m, x, torch.rand(2, 1, 4, 4), 0)
    with pytest.raises(UserError, match="order"):
        deletion_curve(m, x, torch.rand_like(x), 0, order="sideways")
