"""Bootstrapping (Reed et al. 2015). References: the NumPy closed forms -sum_c [beta y_c + (1 - beta) p_c] log p_c
(soft) and -sum_c [beta y_c + (1 - beta) onehot(argmax p)_c] log p_c (hard); NumPy central finite differences
(soft, gradient through p as in the paper); the analytic gradient (softmax(z) - q) / N when the target is held
fixed (hard, and soft with detach_prediction); the paper's CE + entropy reading of the soft objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import autograd, check_grads_fd, np_log_softmax, np_reduce, np_softmax

from tricklab.losses import DEFAULT_BETA, HardBootstrapLoss, SoftBootstrapLoss
from tricklab.losses import bootstrap_loss, hard_bootstrap_loss, soft_bootstrap_loss


def np_bootstrap(z, y_probs, beta, mode, reduction="mean"):
    logp = np_log_softmax(z)
    pred = np.exp(logp) if mode == "soft" else np.eye(z.shape[1])[z.argmax(1)]
    q = beta * y_probs + (1 - beta) * pred
    return np_reduce(-(q * logp).sum(1), reduction)


def _data(seed=0, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, c, (n,), generator=g)
    return z, y, np.eye(c)[y.numpy()]


@pytest.mark.parametrize("mode", ["soft", "hard"])
@pytest.mark.parametrize("beta", [0.0, 0.8, 0.95, 1.0])
def test_values_match_numpy(mode, beta) -> None:
    z, y, y_probs = _data()
    fn = soft_bootstrap_loss if mode == "soft" else hard_bootstrap_loss
    for reduction in ("mean", "sum", "none"):
        np.testing.assert_allclose(fn(z, y, beta, reduction).numpy(),
                                   np_bootstrap(z.numpy(), y_probs, beta, mode, reduction), rtol=1e-12)


def test_soft_gradient_flows_through_the_prediction_as_in_the_paper() -> None:
    """Reference: finite differences of the full NumPy objective (p inside the target varies too), and the
    paper's equivalence soft = beta CE + (1 - beta) H(p) (minimum-entropy regularisation)."""
    z, y, y_probs = _data(1)
    check_grads_fd(lambda zz, yy: np_bootstrap(zz, np.eye(4)[yy], 0.7, "soft"),
                   lambda zz, yy: soft_bootstrap_loss(zz, yy, 0.7), (z, y), (0,))
    logp = np_log_softmax(z.numpy())
    ce, entropy = -(y_probs * logp).sum(1), -(np.exp(logp) * logp).sum(1)
    assert float(soft_bootstrap_loss(z, y, 0.7)) == pytest.approx((0.7 * ce + 0.3 * entropy).mean(), rel=1e-12)


@pytest.mark.parametrize("mode", ["hard", "detached_soft"])
def test_fixed_target_gradient_is_softmax_minus_target(mode) -> None:
    """Closed form: with q held fixed, d/dz of -sum q log softmax(z) is softmax(z) - q (per sample, / N)."""
    z, y, y_probs = _data(2)
    zn = z.numpy()
    if mode == "hard":
        fn = lambda a: hard_bootstrap_loss(a, y, 0.8)  # noqa: E731
        q = 0.8 * y_probs + 0.2 * np.eye(4)[zn.argmax(1)]
    else:
        fn = lambda a: soft_bootstrap_loss(a, y, 0.9, detach_prediction=True)  # noqa: E731
        q = 0.9 * y_probs + 0.1 * np_softmax(zn)
    _, (g,) = autograd(fn, (z,), (0,))
    np.testing.assert_allclose(g.numpy(), (np_softmax(zn) - q) / len(zn), rtol=1e-10, atol=1e-14)


def test_beta_one_is_cross_entropy_and_defaults_follow_the_paper() -> None:
    """Reference: F.cross_entropy; defaults 0.95 (soft) and 0.8 (hard) as in Reed et al.'s experiments."""
    z, y, _ = _data(3)
    for fn in (soft_bootstrap_loss, hard_bootstrap_loss):
        torch.testing.assert_close(fn(z, y, 1.0), F.cross_entropy(z, y))
    assert DEFAULT_BETA == {"soft": 0.95, "hard": 0.8}
    torch.testing.assert_close(bootstrap_loss(z, y), soft_bootstrap_loss(z, y, 0.95))
    torch.testing.assert_close(bootstrap_loss(z, y, mode="hard"), hard_bootstrap_loss(z, y, 0.8))
    assert SoftBootstrapLoss().beta == 0.95 and HardBootstrapLoss().beta == 0.8


def test_soft_labels_and_spatial_inputs() -> None:
    z, y, _ = _data(4)
    p = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(9), dtype=torch.float64), 1)
    np.testing.assert_allclose(float(soft_bootstrap_loss(z, p, 0.9)), np_bootstrap(z.numpy(), p.numpy(), 0.9, "soft"),
                               rtol=1e-12)
    zs = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ys = torch.randint(0, 3, (2, 4), generator=torch.Generator().manual_seed(6))
    flat = hard_bootstrap_loss(zs.movedim(1, -1).reshape(-1, 3), ys.reshape(-1), 0.8, "none").reshape(2, 4)
    torch.testing.assert_close(hard_bootstrap_loss(zs, ys, 0.8, "none"), flat)


def test_bad_inputs() -> None:
    z, y, _ = _data()
    with pytest.raises(ValueError, match="beta"):
        soft_bootstrap_loss(z, y, 1.2)
    with pytest.raises(ValueError, match="mode"):
        bootstrap_loss(z, y, mode="medium")
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        hard_bootstrap_loss(z, y + 10)
    with pytest.raises(TypeError, match="integer"):
        soft_bootstrap_loss(z, y.bool())
