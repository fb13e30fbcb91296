"""Generalized cross-entropy (Zhang & Sabuncu 2018). References: the NumPy closed form (1 - p_y^q) / q and its
truncated form; NumPy central finite differences for the gradient; the paper's identities: q -> 0 gives
cross-entropy (torch's F.cross_entropy), q = 1 gives 1 - p_y, and dL_q/dz = p_y^q dCE/dz (eq. 7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import autograd, check_grads_fd, np_reduce, np_softmax

from tricklab.losses import LOSSES, GeneralizedCrossEntropy, generalized_cross_entropy


def np_gce(z, y_probs, q, k=None, reduction="mean"):
    p = np_softmax(z)
    lq = (1 - p**q) / q
    if k is not None:
        lq = np.where(p > k, lq, (1 - k**q) / q)
    return np_reduce((y_probs * lq).sum(1), reduction)


def _data(seed=0, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,), generator=g)
    return z, y, np.eye(c)[y.numpy()]


@pytest.mark.parametrize("q", [0.1, 0.7, 1.0])
@pytest.mark.parametrize("k", [None, 0.3])
def test_values_and_gradients_match_numpy(q, k) -> None:
    z, y, y_probs = _data()
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(generalized_cross_entropy(z, y, q, k, reduction).numpy(),
                                   np_gce(z.numpy(), y_probs, q, k, reduction), rtol=1e-12)
    check_grads_fd(lambda zz, yy: np_gce(zz, np.eye(4)[yy], q, k), lambda zz, yy: generalized_cross_entropy(
        zz, yy, q, k), [z, y], [0])


def test_limits_and_gradient_weighting() -> None:
    z, y, _ = _data(1)
    torch.testing.assert_close(generalized_cross_entropy(z, y, q=1e-7), F.cross_entropy(z, y), rtol=1e-6, atol=1e-6)
    p_y = torch.softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(generalized_cross_entropy(z, y, q=1.0, reduction="none"), 1 - p_y)
    # eq. 7: the per-example gradient of L_q is p_y^q times that of cross-entropy
    q = 0.7
    _, (g_q,) = autograd(lambda zz: generalized_cross_entropy(zz, y, q, reduction="sum"), [z], [0])
    _, (g_ce,) = autograd(lambda zz: F.cross_entropy(zz, y, reduction="sum"), [z], [0])
    torch.testing.assert_close(g_q, p_y[:, None] ** q * g_ce)


def test_soft_targets_and_module() -> None:
    z, _, _ = _data(2)
    t = torch.softmax(torch.randn(6, 4, dtype=torch.float64), 1)
    np.testing.assert_allclose(float(GeneralizedCrossEntropy(q=0.5)(z, t)), np_gce(z.numpy(), t.numpy(), 0.5),
                               rtol=1e-12)
    assert "gce" in LOSSES.names()
    with pytest.raises(ValueError, match="q must be"):
        GeneralizedCrossEntropy(q=0.0)
    with pytest.raises(ValueError, match="truncation"):
        GeneralizedCrossEntropy(k=1.0)


def test_truncated_examples_get_no_gradient() -> None:
    z = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0])  # the second example gives its label p ~ 0.018 < k
    loss = generalized_cross_entropy(z, y, 0.7, k=0.5, reduction="sum")
    (g,) = torch.autograd.grad(loss, z)
    assert float(g[1].abs().max()) == 0.0 and float(g[0].abs().max()) > 0
