"""Vanilla gradients, gradient x input, SmoothGrad. References: captum 0.9.0's Saliency(abs=False) and
InputXGradient on the same model and inputs; for SmoothGrad, the slow path (a Python loop over the same noise
draws, one torch.autograd.grad per noisy copy)."""

from __future__ import annotations

import pytest
import torch

from explain_helpers import cnn2d, paper_cnn
from tricklab.errors import UserError
from tricklab.explain import gradient_x_input, smoothgrad, vanilla_gradient

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")


def test_vanilla_gradient_and_gradient_x_input_match_captum() -> None:
    m = cnn2d()
    x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 4, 2])
    torch.testing.assert_close(vanilla_gradient(m, x, t),
                               captum_attr.Saliency(m).attribute(x, target=t, abs=False), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(vanilla_gradient(m, x, t, absolute=True),
                               captum_attr.Saliency(m).attribute(x, target=t, abs=True), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(gradient_x_input(m, x, t),
                               captum_attr.InputXGradient(m).attribute(x, target=t), rtol=1e-5, atol=1e-7)


def test_target_none_explains_the_prediction_and_batches_agree() -> None:
    m = paper_cnn()
    x = torch.randn(6, 40, generator=torch.Generator().manual_seed(2))
    pred = m(x).argmax(1)
    full = vanilla_gradient(m, x)
    torch.testing.assert_close(full, vanilla_gradient(m, x, pred))
    torch.testing.assert_close(full, vanilla_gradient(m, x, pred, batch_size=2))  # chunking changes nothing
    torch.testing.assert_close(full[3:4], vanilla_gradient(m, x[3:4], int(pred[3])))


def test_smoothgrad_equals_the_slow_loop_over_the_same_noise() -> None:
    m = paper_cnn()
    x = torch.randn(3, 40, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([1, 5, 7])
    n, level = 6, 0.2
    got = smoothgrad(m, x, t, samples=n, noise_level=level, generator=torch.Generator().manual_seed(9))
    noise = torch.randn((3, n, 40), generator=torch.Generator().manual_seed(9))
    ref = torch.zeros_like(x)
    for i in range(3):
        sigma = level * float(x[i].max() - x[i].min())
        for k in range(n):
            xi = (x[i] + sigma * noise[i, k]).unsqueeze(0).requires_grad_(True)
            (g,) = torch.autograd.grad(m(xi)[0, t[i]], xi)
            ref[i] += g[0] / n
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    # no noise: the vanilla gradient
    torch.testing.assert_close(smoothgrad(m, x, t, samples=3, noise_level=0.0), vanilla_gradient(m, x, t))


def test_parameters_grads_untouched_and_modes_restored() -> None:
    m = cnn2d()
    m.train()
    m.features[1].eval()  # a submodule in its own mode must come back in that mode
    x = torch.randn(2, 1, 12, 12)
    vanilla_gradient(m, x, 0)
    smoothgrad(m, x, 0, samples=2)
    assert all(p.grad is None for p in m.parameters())
    assert m.training and not m.features[1].training and m.features[0].training


def test_bad_arguments_are_user_errors() -> None:
    m = paper_cnn()
    with pytest.raises(UserError, match="batch dimension"):
        vanilla_gradient(m, torch.randn(()), 0)
    with pytest.raises(UserError, match="floating point"):
        vanilla_gradient(m, torch.ones(2, 40, dtype=torch.long), 0)
    with pytest.raises(UserError, match="0..9"):
        vanilla_gradient(m, torch.randn(2, 40), 12)
    with pytest.raises(UserError, match="one per example"):
        vanilla_gradient(m, torch.randn(2, 40), [1, 2, 3])
    with pytest.raises(UserError, match="noise_level"):
        smoothgrad(m, torch.randn(2, 40), 0, noise_level=-1.0)
