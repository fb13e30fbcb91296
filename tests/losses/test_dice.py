"""Soft Dice: a NumPy loop over samples and classes (V-Net squared form and the plain-sum form) for values,
NumPy central finite differences for gradients, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_helpers import check_grads_fd, np_reduce, np_softmax

from tricklab.losses import SoftDiceLoss, soft_dice_loss


def np_dice(z: np.ndarray, y: np.ndarray, squared: bool = True, eps: float = 1.0, reduction: str = "mean"):
    """1 - mean_c (2 sum p g + eps) / (sum p^2 + sum g^2 + eps), or with plain sums; per sample."""
    p = np_softmax(z, 1)
    n, c = z.shape[:2]
    g = y if y.dtype.kind == "f" else np.stack([(y == k) for k in range(c)], 1).astype(np.float64)
    out = np.zeros(n)
    for i in range(n):
        d = []
        for k in range(c):
            pk, gk = p[i, k].ravel(), g[i, k].ravel()
            den = (pk**2).sum() + (gk**2).sum() if squared else pk.sum() + gk.sum()
            d.append((2 * (pk * gk).sum() + eps) / (den + eps))
        out[i] = 1 - np.mean(d)
    return np_reduce(out, reduction)


def _data(shape=(2, 3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    return z, y


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("eps", [1.0, 1e-6])
def test_values_match_numpy(squared, eps, reduction) -> None:
    z, y = _data()
    got = soft_dice_loss(z, y, squared, eps, reduction)
    np.testing.assert_allclose(got.numpy(), np_dice(z.numpy(), y.numpy(), squared, eps, reduction), rtol=1e-12)


@pytest.mark.parametrize("squared", [True, False])
def test_grads_match_numpy_finite_differences(squared) -> None:
    z, y = _data((2, 3, 3, 2), seed=1)
    check_grads_fd(lambda zz, yy: np_dice(zz, yy, squared), lambda zz, yy: soft_dice_loss(zz, yy, squared),
                   (z, y), (0,))


def test_no_spatial_dims_and_soft_targets() -> None:
    """(N, C) input is one position per sample; one-hot float targets equal class indices."""
    z, y = _data((4, 3), seed=2)
    np.testing.assert_allclose(soft_dice_loss(z, y, reduction="none").numpy(),
                               np_dice(z.numpy()[..., None], y.numpy()[..., None], reduction="none"), rtol=1e-12)
    z, y = _data(seed=3)
    onehot = F.one_hot(y, 3).movedim(-1, 1).double()
    torch.testing.assert_close(soft_dice_loss(z, onehot), soft_dice_loss(z, y))


def test_perfect_prediction_gives_zero_and_absent_class_counts_as_found() -> None:
    """Closed form: with p == g, D_c = (2|g| + eps) / (2|g| + eps) = 1 for every class, so the loss is 0,
    including a class absent from the target (0 + eps) / (0 + eps)."""
    y = torch.tensor([[[0, 0], [1, 1]]])  # class 2 absent
    z = F.one_hot(y, 3).movedim(-1, 1).double() * 200.0  # softmax saturates to exactly one-hot in float64
    assert float(soft_dice_loss(z, y)) == pytest.approx(0.0, abs=1e-12)


def test_module_and_gradcheck() -> None:
    z, y = _data((2, 3, 2, 2), seed=4)
    torch.testing.assert_close(SoftDiceLoss(squared=False, eps=0.5)(z, y), soft_dice_loss(z, y, False, 0.5))
    assert torch.autograd.gradcheck(lambda zz: soft_dice_loss(zz, y), (z.clone().requires_grad_(),))


def test_bad_inputs_raise_clear_errors() -> None:
    z, y = _data()
    with pytest.raises(ValueError, match="C >= 2"):
        soft_dice_loss(z[:, :1], torch.zeros_like(y))
    with pytest.raises(ValueError, match="eps"):
        soft_dice_loss(z, y, eps=0.0)
    with pytest.raises(ValueError, match="shape"):
        soft_dice_loss(z, y[:, :2])
    with pytest.raises(ValueError, match="shape"):
        soft_dice_loss(z, torch.rand(2, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="reduction"):
        SoftDiceLoss(reduction="batch")
