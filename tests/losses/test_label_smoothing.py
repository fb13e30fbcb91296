"""Label-smoothed cross-entropy: torch's F.cross_entropy(label_smoothing=eps) / nn.CrossEntropyLoss and the
NumPy closed form -sum_c q_c log softmax(z)_c, q = (1 - eps) y + eps / C, whose gradient is (softmax(z) - q) / N;
values and gradients, class indices and soft targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import autograd, np_log_softmax, np_reduce, np_softmax

from tricklab.losses import LabelSmoothingCrossEntropy, label_smoothing_cross_entropy


def np_ls_ce(z, y_probs, eps, reduction="mean"):
    n, c = z.shape
    q = (1 - eps) * y_probs + eps / c
    loss = -(q * np_log_softmax(z)).sum(1)
    return np_reduce(loss, reduction), (np_softmax(z) - q) / n


def _data(seed=0, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,), generator=g)
    p = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64), 1)
    return z, y, p


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("soft", [False, True])
def test_matches_numpy_and_torch(eps, soft) -> None:
    z, y, p = _data()
    target = p if soft else y
    y_probs = p.numpy() if soft else np.eye(4)[y.numpy()]
    for reduction in ("mean", "sum", "none"):
        got = label_smoothing_cross_entropy(z, target, eps, reduction)
        np.testing.assert_allclose(got.numpy(), np_ls_ce(z.numpy(), y_probs, eps, reduction)[0], rtol=1e-12)
        torch.testing.assert_close(got, F.cross_entropy(z, target, label_smoothing=eps, reduction=reduction))
    _, (g,) = autograd(lambda a: label_smoothing_cross_entropy(a, target, eps), (z,), (0,))
    np.testing.assert_allclose(g.numpy(), np_ls_ce(z.numpy(), y_probs, eps)[1], rtol=1e-10, atol=1e-14)


def test_module_is_torch_cross_entropy_loss() -> None:
    z, y, _ = _data(1)
    m = LabelSmoothingCrossEntropy(eps=0.2, reduction="sum")
    assert isinstance(m, torch.nn.CrossEntropyLoss) and m.label_smoothing == 0.2
    torch.testing.assert_close(m(z, y), torch.nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.2)(z, y))


@pytest.mark.parametrize("eps", [-0.1, 1.5, True])
def test_invalid_eps(eps) -> None:
    z, y, _ = _data()
    with pytest.raises(ValueError, match="eps"):
        label_smoothing_cross_entropy(z, y, eps)
    with pytest.raises(ValueError, match="eps"):
        LabelSmoothingCrossEntropy(eps)
