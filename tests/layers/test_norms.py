"""Normalisation: identities between torch's norms (GroupNorm(1) = LayerNorm over (C, H, W); GroupNorm(C) =
InstanceNorm2d), weight standardisation against a NumPy computation, spectral norm against
torch.linalg.svdvals, and make_norm's kinds.

References: torch's LayerNorm / InstanceNorm2d (for GroupNorm); NumPy float64 (W - mean) / sqrt(var + eps)
per output row and its analytic gradient (for weight standardisation); F.conv2d / F.linear with the
NumPy-standardised weight; torch.linalg.svdvals (for spectral norm); finite differences (gradcheck).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.layers.norms import (
    LAYER_SPECS,
    NORM_KINDS,
    WSConv1d,
    WSConv2d,
    WSLinear,
    make_norm,
    spectral_normed,
    standardize_weight,
)


def _x(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 0.5).requires_grad_(True)


def _upstream(shape: torch.Size, seed: int = 1) -> torch.Tensor:
    # a random upstream gradient: sum() alone would give zero input gradients through a normalisation
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_groupnorm_one_group_equals_layernorm_over_chw() -> None:
    """Reference: torch.nn.LayerNorm([C, H, W]) with identity affine (weight 1, bias 0), values and grads."""
    x = _x(3, 4, 5, 6)
    gn, ln = nn.GroupNorm(1, 4).double(), nn.LayerNorm([4, 5, 6]).double()
    a, b = gn(x), ln(x)
    torch.testing.assert_close(a, b)
    up = _upstream(a.shape)
    (ga,) = torch.autograd.grad(a, x, up)
    (gb,) = torch.autograd.grad(b, x, up)
    torch.testing.assert_close(ga, gb)
    # the bias gradients agree too (the weights differ in shape: per channel vs per element)
    (gbias_gn,) = torch.autograd.grad(gn(x), gn.bias, up)
    (gbias_ln,) = torch.autograd.grad(ln(x), ln.bias, up)
    torch.testing.assert_close(gbias_gn, gbias_ln.sum(dim=(1, 2)))


def test_groupnorm_c_groups_equals_instancenorm2d() -> None:
    """Reference: torch.nn.InstanceNorm2d(C) (affine off, no running stats), values and input grads."""
    x = _x(3, 4, 5, 6, seed=2)
    gn, inn = nn.GroupNorm(4, 4, affine=False), nn.InstanceNorm2d(4, affine=False)
    a, b = gn(x), inn(x)
    torch.testing.assert_close(a, b)
    up = _upstream(a.shape)
    torch.testing.assert_close(torch.autograd.grad(a, x, up)[0], torch.autograd.grad(b, x, up)[0])


def _ws_numpy(w: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised weight, its mean-free part and 1/sqrt(var + eps), per output row over the fan-in."""
    flat = w.reshape(w.shape[0], -1)
    c = flat - flat.mean(axis=1, keepdims=True)
    inv = 1.0 / np.sqrt((c * c).mean(axis=1, keepdims=True) + eps)
    return (c * inv).reshape(w.shape), c, inv


@pytest.mark.parametrize("shape", [(5, 7), (6, 3, 4), (4, 3, 3, 3)])
def test_standardize_weight_matches_numpy_values_and_grads(shape: tuple[int, ...]) -> None:
    """Reference: NumPy W_hat = (W - mu) / sqrt(sigma^2 + eps) per output row, and its gradient
    dL/dW = inv (G - mean(G) - W_hat mean(G * W_hat)) per row (the normalisation backward, n = fan-in)."""
    eps = 1e-5
    w = _x(*shape, seed=3)
    out = standardize_weight(w, eps)
    ref, _, inv = _ws_numpy(w.detach().numpy(), eps)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    # per-row statistics of the result: mean 0, population std ~ 1
    flat = out.detach().reshape(shape[0], -1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(shape[0], dtype=torch.float64), atol=1e-12, rtol=0)
    up = _upstream(out.shape, seed=4)
    (gw,) = torch.autograd.grad(out, w, up)
    G = up.numpy().reshape(shape[0], -1)
    wh = ref.reshape(shape[0], -1)
    ref_g = inv * (G - G.mean(1, keepdims=True) - wh * (G * wh).mean(1, keepdims=True))
    np.testing.assert_allclose(gw.numpy().reshape(shape[0], -1), ref_g, rtol=1e-9, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: standardize_weight(t, eps), (w,))


def test_ws_layers_equal_plain_ops_with_numpy_standardised_weight() -> None:
    """Reference: F.linear / F.conv1d / F.conv2d with the NumPy-standardised weight (values and input grads)."""
    torch.manual_seed(0)
    cases = [
        (WSLinear(6, 4).double(), _x(3, 6), lambda x, w, m: F.linear(x, w, m.bias)),
        (WSConv1d(3, 5, 3, padding=1).double(), _x(2, 3, 8), lambda x, w, m: F.conv1d(x, w, m.bias, padding=1)),
        (WSConv2d(3, 4, 3, stride=2, padding=1, groups=1).double(), _x(2, 3, 7, 7),
         lambda x, w, m: F.conv2d(x, w, m.bias, stride=2, padding=1)),
        (WSConv2d(4, 4, 3, padding=1, groups=2, bias=False).double(), _x(2, 4, 5, 5),
         lambda x, w, m: F.conv2d(x, w, None, padding=1, groups=2)),
    ]
    for m, x, op in cases:
        w_ref = torch.tensor(_ws_numpy(m.weight.detach().numpy(), m.eps)[0])
        a, b = m(x), op(x, w_ref, m)
        torch.testing.assert_close(a, b)
        up = _upstream(a.shape)
        torch.testing.assert_close(torch.autograd.grad(a, x, up)[0], torch.autograd.grad(b, x, up)[0])
        # the raw parameter receives the gradient through the standardisation
        (gw,) = torch.autograd.grad(m(x), m.weight, up)
        assert torch.isfinite(gw).all() and gw.abs().sum() > 0


def test_ws_conv_keeps_padding_mode() -> None:
    """Reference: F.pad(reflect) + F.conv2d with the standardised weight."""
    m = WSConv2d(2, 3, 3, padding=1, padding_mode="reflect").double()
    x = _x(1, 2, 5, 5)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), standardize_weight(m.weight, m.eps), m.bias)
    torch.testing.assert_close(m(x), ref)


def test_standardize_weight_bad_input() -> None:
    with pytest.raises(ValueError, match="C_out, fan_in"):
        standardize_weight(torch.ones(5))
    with pytest.raises(ValueError, match="eps"):
        standardize_weight(torch.ones(2, 3), eps=0.0)
    with pytest.raises(TypeError):
        standardize_weight(np.ones((2, 3)))  # type: ignore[arg-type]
    # a constant row stays finite (eps keeps the denominator positive)
    assert torch.isfinite(standardize_weight(torch.ones(2, 3))).all()


def test_spectral_norm_largest_singular_value_is_one() -> None:
    """Reference: torch.linalg.svdvals of the effective weight after many power iterations (train-mode
    forwards), and the relation W_eff = W / sigma_max(W) (Miyato et al. 2018, eq. 8)."""
    torch.manual_seed(0)
    lin = nn.Linear(12, 8).double()
    raw_sigma = torch.linalg.svdvals(lin.weight.detach())[0]
    m = spectral_normed(lin, n_power_iterations=1)
    x = _x(4, 12)
    for _ in range(100):  # one power iteration per train-mode forward
        m(x)
    m.eval()
    w_eff = m.weight.detach()
    assert torch.linalg.svdvals(w_eff)[0].item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(w_eff, m.parametrizations.weight.original.detach() / raw_sigma, rtol=1e-6, atol=1e-8)
    # gradients reach the raw weight through sigma
    (g,) = torch.autograd.grad(m(x).sum(), m.parametrizations.weight.original)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_spectral_normed_bad_input() -> None:
    with pytest.raises(ValueError, match="no tensor attribute 'kernel'"):
        spectral_normed(nn.Linear(2, 2), name="kernel")
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_normed(nn.Linear(2, 2), n_power_iterations=0)
    with pytest.raises(TypeError):
        spectral_normed(torch.ones(2, 2))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_make_norm_kinds_unchanged(kind: str) -> None:
    expected = {"batch": nn.BatchNorm2d, "layer": nn.GroupNorm, "instance": nn.GroupNorm, "group": nn.GroupNorm,
                "none": nn.Identity}[kind]
    m = make_norm(kind, 8)
    assert type(m) is expected
    if kind == "layer":
        assert m.num_groups == 1
    if kind == "instance":
        assert m.num_groups == 8
    assert isinstance(make_norm("batch", 8, dim=1), nn.BatchNorm1d)
    with pytest.raises(ValueError, match="unknown norm"):
        make_norm("ws", 8)


def test_layer_specs_cover_torch_norms_and_ours() -> None:
    names = {s.name for s in LAYER_SPECS}
    assert {"batch_norm1d", "batch_norm2d", "layer_norm", "instance_norm2d", "group_norm", "ws_linear", "ws_conv1d",
            "ws_conv2d", "spectral_norm_linear"} <= names
    assert len(names) == len(LAYER_SPECS)
