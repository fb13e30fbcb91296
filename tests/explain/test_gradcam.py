"""Grad-CAM and Grad-CAM++. References: captum 0.9.0's LayerGradCam (relu_attributions=True) on the same layer,
1-D and 2-D; for Grad-CAM++, a NumPy transcription of Chattopadhay et al. 2018, eq. 19 (with Y = exp(S))
applied to the layer activations and gradients that torch.autograd gives; for the upsampling, captum's
LayerAttribution.interpolate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explain_helpers import cnn2d, hooks_left, paper_cnn
from tricklab.errors import UserError
from tricklab.explain import grad_cam, grad_cam_plus_plus, upsample_to_input
from tricklab.explain._common import last_conv_layer
from tricklab.explain.gradcam import layer_activation_and_gradient
from tricklab.models import build_model

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")


@pytest.mark.parametrize("layer", ["features.0", "features.2", "features.4", "features.6"])
def test_grad_cam_matches_captum_2d(layer: str) -> None:
    m = cnn2d()
    x = torch.randn(4, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 3, 4])
    mod = dict(m.named_modules())[layer]
    ref = captum_attr.LayerGradCam(m, mod).attribute(x, target=t, relu_attributions=True)
    torch.testing.assert_close(grad_cam(m, x, t, layer=layer), ref, rtol=1e-5, atol=1e-7)
    ref_signed = captum_attr.LayerGradCam(m, mod).attribute(x, target=t)
    torch.testing.assert_close(grad_cam(m, x, t, layer=mod, relu=False), ref_signed, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3"])
def test_grad_cam_matches_captum_1d_paper_cnn(layer: str) -> None:
    m = paper_cnn()
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(1))
    ref = captum_attr.LayerGradCam(m, getattr(m, layer)).attribute(x, target=2, relu_attributions=True)
    ours = grad_cam(m, x, 2, layer=layer, batch_size=2)
    assert ours.shape == ref.shape and ours.shape[1] == 1
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)


def test_default_layer_is_the_rectified_output_of_the_last_conv_block() -> None:
    m = cnn2d()
    x = torch.randn(2, 1, 12, 12)
    torch.testing.assert_close(grad_cam(m, x, 1), grad_cam(m, x, 1, layer="features.6"))  # conv - BN - ReLU
    assert last_conv_layer(paper_cnn()) == "conv3"  # its ReLU is a function call: the conv itself
    assert last_conv_layer(build_model("resnet1d", (40,), 10)) == "stages.2.1"  # the last residual block
    assert last_conv_layer(build_model("cnn2d", (1, 28, 28), 10, drop_block=0.1)) == "features.6"


def _gradcam_pp_numpy(act: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Eq. 19 of Chattopadhay et al. with Y = exp(S): per channel k and position ij,
    a = g^2 / (2 g^2 + sum_ab A_ab g^3) (0 where g = 0); w_k = sum_ij a relu(g); L = relu(sum_k w_k A^k)."""
    b, k = act.shape[:2]
    out = np.zeros((b, 1, *act.shape[2:]))
    for i in range(b):
        cam = np.zeros(act.shape[2:])
        for c in range(k):
            a_map, g = act[i, c], grad[i, c]
            total = a_map.sum()
            w = 0.0
            for idx in np.ndindex(*g.shape):
                gi = g[idx]
                if gi == 0:
                    continue
                alpha = gi**2 / (2 * gi**2 + total * gi**3)
                w += alpha * max(gi, 0.0)
            cam += w * a_map
        out[i, 0] = np.maximum(cam, 0)
    return out


@pytest.mark.parametrize("which", ["1d", "2d"])
def test_grad_cam_plus_plus_matches_numpy_equation(which: str) -> None:
    if which == "2d":
        m, x, layer = cnn2d(), torch.randn(3, 1, 12, 12, generator=torch.Generator().manual_seed(2)), "features.2"
    else:
        m, x, layer = paper_cnn(), torch.randn(3, 40, generator=torch.Generator().manual_seed(2)), "conv2"
    t = torch.tensor([1, 0, 2])
    act, grad = layer_activation_and_gradient(m, x, t, dict(m.named_modules())[layer], "test")
    ref = _gradcam_pp_numpy(act.double().numpy(), grad.double().numpy())
    np.testing.assert_allclose(grad_cam_plus_plus(m, x, t, layer=layer).double().numpy(), ref, rtol=1e-4,
                               atol=1e-7 * np.abs(ref).max())
    # the captured activation and gradient are the layer's: recompute both through the network split at the layer
    if which == "2d":
        head = m.features[:3]

        def tail(a: torch.Tensor) -> torch.Tensor:
            return m.fc(m.pool(m.features[3:](a)).flatten(1))
    else:
        def head(v: torch.Tensor) -> torch.Tensor:
            return m.conv2(torch.relu(m.conv1(v.reshape(-1, 1, 40))))

        def tail(a: torch.Tensor) -> torch.Tensor:
            return m.linear(torch.relu(m.conv3(torch.relu(a))).flatten(1))
    a_ref = head(x).detach().requires_grad_(True)
    (g_ref,) = torch.autograd.grad(tail(a_ref).gather(1, t[:, None]).sum(), a_ref)
    torch.testing.assert_close(act, a_ref.detach())
    torch.testing.assert_close(grad, g_ref)


def test_upsample_matches_captum_interpolate() -> None:
    cam = torch.rand(2, 1, 7, 7)
    ref = captum_attr.LayerAttribution.interpolate(cam, (28, 28), interpolate_mode="bilinear")
    torch.testing.assert_close(upsample_to_input(cam, (1, 28, 28)), ref)
    cam1 = torch.rand(2, 1, 5)
    ref1 = captum_attr.LayerAttribution.interpolate(cam1, (40,), interpolate_mode="linear")
    torch.testing.assert_close(upsample_to_input(cam1, (40,)), ref1.reshape(2, 40))
    assert upsample_to_input(cam1, (1, 40)).shape == (2, 1, 40)


class _Boom(nn.Module):
    """Raises in forward after the hooked layer has run."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.fc = nn.Linear(2 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.reshape(x.shape[0], 1, 8))
        if getattr(self, "explode", False):
            raise RuntimeError("boom")
        return self.fc(h.flatten(1))


@pytest.mark.parametrize("fn", [grad_cam, grad_cam_plus_plus])
def test_no_hook_left_behind_even_when_the_model_raises(fn) -> None:
    m = _Boom()
    m.train()
    x = torch.randn(2, 8)
    fn(m, x, 0, layer="conv")
    assert hooks_left(m) == 0 and m.training
    m.explode = True
    with pytest.raises(RuntimeError, match="boom"):
        fn(m, x, 0, layer="conv")
    assert hooks_left(m) == 0 and m.training


def test_layer_errors() -> None:
    m = cnn2d()
    x = torch.randn(1, 1, 12, 12)
    with pytest.raises(UserError, match="no layer named 'features.9'.*features.0"):
        grad_cam(m, x, 0, layer="features.9")
    with pytest.raises(UserError, match=r"\(B, K, L\) or \(B, K, H, W\)"):
        grad_cam(m, x, 0, layer="fc")
    assert hooks_left(m) == 0
    with pytest.raises(UserError, match="no Conv1d/Conv2d"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.randn(1, 4), 0)
