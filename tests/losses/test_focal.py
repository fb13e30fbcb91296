"""Focal loss: NumPy closed form of Lin et al. (2017) eq. 5 for values, NumPy central finite differences for
gradients (float64), and torch's F.cross_entropy / F.binary_cross_entropy_with_logits for gamma = 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import check_grads_fd, np_log_softmax, np_reduce

from tricklab.losses import BinaryFocalLoss, FocalLoss, focal_loss, sigmoid_focal_loss


def np_focal(z: np.ndarray, y: np.ndarray, gamma: float, alpha=None, reduction: str = "mean"):
    """-alpha_t (1 - p_t)^gamma log p_t, classes on axis 1, hard targets (a slow simple loop)."""
    logp = np_log_softmax(z, 1)
    out = np.zeros(y.shape)
    for idx in np.ndindex(y.shape):
        c = y[idx]
        lp = logp[(idx[0], c, *idx[1:])]
        a = 1.0 if alpha is None else (float(alpha) if np.ndim(alpha) == 0 else alpha[c])
        out[idx] = -a * (1 - np.exp(lp)) ** gamma * lp
    return np_reduce(out, reduction)


def np_soft_focal(z: np.ndarray, t: np.ndarray, gamma: float, alpha=None, reduction: str = "mean"):
    """-sum_c t_c alpha_c (1 - p_c)^gamma log p_c for (N, C) soft targets."""
    logp = np_log_softmax(z, 1)
    a = np.ones(z.shape[1]) if alpha is None else np.broadcast_to(alpha, (z.shape[1],))
    return np_reduce(-(t * a * (1 - np.exp(logp)) ** gamma * logp).sum(1), reduction)


def np_sigmoid_focal(x: np.ndarray, t: np.ndarray, gamma: float, alpha=None, reduction: str = "mean"):
    p = 1 / (1 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    pt = p * t + (1 - p) * (1 - t)
    a = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return np_reduce(a * (1 - pt) ** gamma * ce, reduction)


def _data(shape=(5, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return z, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (0.5, 0.25), (1.0, [0.5, 1.0, 2.0, 0.1])])
def test_values_match_numpy(gamma, alpha, reduction) -> None:
    z, y = _data()
    got = focal_loss(z, y, gamma, alpha, reduction)
    ref = np_focal(z.numpy(), y.numpy(), gamma, None if alpha is None else np.asarray(alpha), reduction)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("gamma,alpha", [(2.0, None), (0.5, [0.5, 1.0, 2.0, 0.1]), (3.0, 0.7)])
def test_grads_match_numpy_finite_differences(gamma, alpha) -> None:
    z, y = _data((4, 4, 3))  # spatial case: classes on dim 1
    a_np = None if alpha is None else np.asarray(alpha)
    check_grads_fd(lambda zz, yy: np_focal(zz, yy, gamma, a_np), lambda zz, yy: focal_loss(zz, yy, gamma, alpha),
                   (z, y), (0,))


@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 2, 3)])
def test_gamma_zero_is_torch_cross_entropy(shape) -> None:
    """Reference: F.cross_entropy (values and gradients)."""
    z, y = _data(shape, seed=1)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    got, ref = focal_loss(z1, y, gamma=0.0), F.cross_entropy(z2, y)
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(torch.autograd.grad(got, z1)[0], torch.autograd.grad(ref, z2)[0])


def test_soft_targets_match_numpy_and_one_hot_matches_hard() -> None:
    z, y = _data((5, 3), seed=2)
    t = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64), 1)
    alpha = [0.2, 1.0, 3.0]
    ref = np_soft_focal(z.numpy(), t.numpy(), 2.0, np.asarray(alpha))
    assert float(focal_loss(z, t, 2.0, alpha)) == pytest.approx(ref, rel=1e-12)
    check_grads_fd(lambda zz, tt: np_soft_focal(zz, tt, 2.0, np.asarray(alpha)),
                   lambda zz, tt: focal_loss(zz, tt, 2.0, alpha), (z, t), (0,))
    onehot = F.one_hot(y, 3).double()
    torch.testing.assert_close(focal_loss(z, onehot, 2.0, alpha, "none"), focal_loss(z, y, 2.0, alpha, "none"))


def test_easy_examples_are_down_weighted_relative_to_cross_entropy() -> None:
    """Per example FL / CE = (1 - p_t)^gamma (eq. 5 with alpha = 1): close to 0 for a confident correct
    prediction, close to 1 for a badly wrong one."""
    z = torch.tensor([[6.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    ratio = focal_loss(z, y, 2.0, reduction="none") / F.cross_entropy(z, y, reduction="none")
    pt = torch.softmax(z, 1)[:, 0]
    torch.testing.assert_close(ratio, (1 - pt) ** 2)
    assert ratio[0] < 1e-4 and ratio[1] > 0.9


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.0, None), (1.5, None)])
def test_sigmoid_form_matches_numpy(gamma, alpha, reduction) -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=g, dtype=torch.float64) * 2
    t = (torch.rand(4, 3, generator=g) > 0.5).double()
    got = sigmoid_focal_loss(x, t, gamma, alpha, reduction)
    np.testing.assert_allclose(got.numpy(), np_sigmoid_focal(x.numpy(), t.numpy(), gamma, alpha, reduction),
                               rtol=1e-11)
    check_grads_fd(lambda xx, tt: np_sigmoid_focal(xx, tt, gamma, alpha),
                   lambda xx, tt: sigmoid_focal_loss(xx, tt, gamma, alpha), (x, t), (0,))


def test_sigmoid_gamma_zero_is_bce_with_logits() -> None:
    """Reference: F.binary_cross_entropy_with_logits (values and gradients)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.rand(7, generator=g, dtype=torch.float64)
    got, ref = sigmoid_focal_loss(x, t, gamma=0.0), F.binary_cross_entropy_with_logits(x, t)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, x)[0], torch.autograd.grad(ref, x)[0])


def test_gradcheck_float64_and_finite_at_saturation() -> None:
    z, y = _data((3, 4), seed=6)
    assert torch.autograd.gradcheck(lambda zz: focal_loss(zz, y, 0.5, [1.0, 2.0, 0.5, 1.0]),
                                    (z.requires_grad_(),))
    # p_t == 1 exactly in float32 with gamma < 1: the gradient stays finite
    zs = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(focal_loss(zs, torch.tensor([0]), gamma=0.5), zs)
    assert torch.isfinite(grad).all()


def test_modules_equal_functions_and_alpha_is_a_buffer() -> None:
    z, y = _data()
    m = FocalLoss(gamma=1.5, alpha=[1.0, 2.0, 3.0, 4.0], reduction="sum").double()
    assert "alpha_weights" in dict(m.named_buffers())
    torch.testing.assert_close(m(z, y), focal_loss(z, y, 1.5, [1.0, 2.0, 3.0, 4.0], "sum"))
    x, t = z, (z > 0).double()
    torch.testing.assert_close(BinaryFocalLoss(2.0, 0.25)(x, t), sigmoid_focal_loss(x, t, 2.0, 0.25))


def test_bad_inputs_raise_clear_errors() -> None:
    z, y = _data()
    with pytest.raises(ValueError, match="gamma"):
        focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="shape"):
        focal_loss(z, y, alpha=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        focal_loss(z, y + 4)
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(z, y, reduction="avg")
    with pytest.raises(TypeError, match="floating-point"):
        focal_loss(y, y)
    with pytest.raises(ValueError, match="shape"):
        focal_loss(z, torch.rand(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(z, (z > 0).double(), alpha=1.5)
    with pytest.raises(TypeError):
        sigmoid_focal_loss(z, y)
