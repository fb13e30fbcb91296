"""Tests for tricklab.layers.deform (deformable convolution v1 / v2).

References: ``F.conv2d`` (zero offsets, unit mask; integer offsets against a shifted, zero-filled input) and a
naive Python loop over output pixels, taps and the four bilinear neighbours (random fractional offsets, some far
outside the image), compared on values and on the gradients w.r.t. input, offsets, mask, weight and bias;
``torch.autograd.gradcheck`` (finite differences) for the vectorised function.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tricklab.layers.deform import LAYER_SPECS, DeformConv2d, deform_conv2d

DT = torch.float64


def _bilinear(img: Tensor, y: Tensor, x: Tensor) -> Tensor:
    """img (C, H, W) read at the real point (y, x): sum over the 4 integer neighbours inside the image of
    (1 - |y - y_i|)(1 - |x - x_i|) * img[:, y_i, x_i]; neighbours outside contribute 0."""
    h, w = img.shape[1:]
    y0, x0 = math.floor(float(y.detach())), math.floor(float(x.detach()))
    ly, lx = y - y0, x - x0
    val = torch.zeros(img.shape[0], dtype=img.dtype)
    for cy, cx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx), (y0 + 1, x0, ly * (1 - lx)),
                        (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= cy < h and 0 <= cx < w:
            val = val + wgt * img[:, cy, cx]
    return val


def _naive_deform(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                  padding: tuple[int, int], dilation: tuple[int, int], mask: Tensor | None) -> Tensor:
    """Dai et al. 2017 eq. 2 / Zhu et al. 2019 eq. 1 written as loops: for every example, output pixel, channel
    group and tap, sample the input at p0*s - pad + p_k*d + dp_k, scale by the mask, then dot with the weight."""
    n, c_in, _, _ = x.shape
    c_out, cpg, kh, kw = weight.shape
    groups, taps = c_in // cpg, kh * kw
    g_off = offset.shape[1] // (2 * taps)
    cg = c_in // g_off
    h_out, w_out = offset.shape[2:]
    rows = []
    for b in range(n):
        per_pixel = []
        for oy in range(h_out):
            for ox in range(w_out):
                col_list = []
                for g in range(g_off):
                    taps_g = []
                    for i in range(kh):
                        for j in range(kw):
                            k = i * kw + j
                            py = oy * stride[0] - padding[0] + i * dilation[0] + offset[b, g * 2 * taps + 2 * k, oy, ox]
                            px = ox * stride[1] - padding[1] + j * dilation[1] + offset[b, g * 2 * taps + 2 * k + 1,
                                                                                        oy, ox]
                            v = _bilinear(x[b, g * cg:(g + 1) * cg], py, px)
                            if mask is not None:
                                v = v * mask[b, g * taps + k, oy, ox]
                            taps_g.append(v)
                    col_list.append(torch.stack(taps_g, dim=1))  # (Cg, K)
                cols = torch.cat(col_list, dim=0)  # (C_in, K)
                outs = []
                for gw in range(groups):
                    wg = weight[gw * (c_out // groups):(gw + 1) * (c_out // groups)].reshape(c_out // groups, -1)
                    outs.append(wg @ cols[gw * cpg:(gw + 1) * cpg].reshape(-1))
                per_pixel.append(torch.cat(outs))
        rows.append(torch.stack(per_pixel, dim=1).reshape(c_out, h_out, w_out))
    out = torch.stack(rows)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1, 1)
    return out


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


CASES = [  # (c_in, c_out, k, stride, padding, dilation, groups, offset_groups)
    (3, 4, 3, 1, 1, 1, 1, 1),
    (4, 6, 3, 2, 2, 2, 2, 2),
    (2, 2, (2, 3), (1, 2), (0, 1), 1, 1, 1),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_offsets_equal_conv2d(case: tuple, dtype: torch.dtype) -> None:
    """Reference: F.conv2d with the same weight, bias, stride, padding, dilation, groups (offsets 0, mask 1)."""
    c_in, c_out, k, s, p, d, groups, g_off = case
    kh, kw = (k, k) if isinstance(k, int) else k
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, 7, 8, generator=g, dtype=dtype)
    # weights at the usual 1/sqrt(fan_in) scale keep outputs O(1), so float32 rounding of the (differently
    # ordered) sums stays below 1e-6
    w = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=dtype) / math.sqrt(c_in // groups * kh * kw)
    b = torch.randn(c_out, generator=g, dtype=dtype)
    ref = F.conv2d(x, w, b, stride=s, padding=p, dilation=d, groups=groups)
    offset = torch.zeros(2, 2 * g_off * kh * kw, *ref.shape[2:], dtype=dtype)
    mask = torch.ones(2, g_off * kh * kw, *ref.shape[2:], dtype=dtype)
    atol = 1e-6 if dtype == torch.float32 else 1e-13
    for m in (None, mask):
        out = deform_conv2d(x, offset, w, b, stride=s, padding=p, dilation=d, mask=m)
        torch.testing.assert_close(out, ref, atol=atol, rtol=0.0)


def test_integer_offsets_shift_the_input() -> None:
    """Reference: F.conv2d on the input zero-padded by M = 3, cropped with the shift: with (dy, dx) = (1, -2) on
    every tap and padding 1, out[oy, ox] = sum_ij w_ij x[oy + i, ox + j - 3] (x read as 0 outside), which is
    conv(Z, w)[M + oy, M + ox - 3] for Z = x padded by M (bilinear sampling at integer points reads the pixel)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 6, 7, generator=g, dtype=DT)
    w = torch.randn(3, 2, 3, 3, generator=g, dtype=DT)
    offset = torch.zeros(1, 18, 6, 7, dtype=DT)
    offset[:, 0::2] = 1.0
    offset[:, 1::2] = -2.0
    m = 3
    full = F.conv2d(F.pad(x, (m, m, m, m)), w)
    ref = full[:, :, m:m + 6, m - 3:m - 3 + 7]
    out = deform_conv2d(x, offset, w, padding=1)
    torch.testing.assert_close(out, ref, atol=1e-13, rtol=0.0)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("modulated", [False, True])
def test_random_offsets_match_naive_loop_values_and_grads(case: tuple, modulated: bool) -> None:
    """Reference: the naive per-pixel, per-tap bilinear loop (_naive_deform) on random fractional offsets with some
    taps far outside the image; gradients w.r.t. x, offset, mask, weight, bias compared by autograd on both."""
    c_in, c_out, k, s, p, d, groups, g_off = case
    kh, kw = (k, k) if isinstance(k, int) else k
    s2, p2, d2 = ((v, v) if isinstance(v, int) else v for v in (s, p, d))
    h, w_ = 5, 6
    ho, wo = _out_size(h, kh, s2[0], p2[0], d2[0]), _out_size(w_, kw, s2[1], p2[1], d2[1])
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, c_in, h, w_, generator=g, dtype=DT, requires_grad=True)
    offset = 1.7 * torch.randn(2, 2 * g_off * kh * kw, ho, wo, generator=g, dtype=DT)
    offset[:, ::5] += 6.0  # push a fifth of the taps past the border: zeros or partial neighbours
    offset[:, 3::7] -= 4.5
    offset.requires_grad_(True)
    mask = torch.rand(2, g_off * kh * kw, ho, wo, generator=g, dtype=DT, requires_grad=True) if modulated else None
    weight = torch.randn(c_out, c_in // groups, kh, kw, generator=g, dtype=DT, requires_grad=True)
    bias = torch.randn(c_out, generator=g, dtype=DT, requires_grad=True)
    out = deform_conv2d(x, offset, weight, bias, stride=s, padding=p, dilation=d, mask=mask)
    ref = _naive_deform(x, offset, weight, bias, s2, p2, d2, mask)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-10)
    wrt = [x, offset, weight, bias] + ([mask] if mask is not None else [])
    v = torch.randn(out.shape, generator=g, dtype=DT)
    got = torch.autograd.grad((out * v).sum(), wrt)
    exp = torch.autograd.grad((ref * v).sum(), wrt)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    assert got[1].abs().sum() > 0  # offsets do receive gradient


def test_deform_conv2d_gradcheck() -> None:
    """Reference: torch.autograd.gradcheck (central finite differences, float64); random offsets are almost surely
    not within eps of an integer, where bilinear interpolation has a kink."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 4, generator=g, dtype=DT, requires_grad=True)
    offset = (1.3 * torch.randn(1, 2 * 4, 3, 3, generator=g, dtype=DT)).requires_grad_(True)
    mask = torch.rand(1, 4, 3, 3, generator=g, dtype=DT, requires_grad=True)
    weight = torch.randn(3, 2, 2, 2, generator=g, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: deform_conv2d(a[0], a[1], a[2], mask=a[3]), (x, offset, weight, mask))


@pytest.mark.parametrize("modulated", [False, True])
def test_module_starts_as_plain_conv_and_learns_offsets(modulated: bool) -> None:
    """Reference: at init (zero offset conv) DeformConv2d is F.conv2d(x, W) + b for v1 and 0.5 * F.conv2d(x, W) + b
    for v2 (mask = sigmoid(0)); the gradient reaching the offset conv equals the one through the naive loop."""
    torch.manual_seed(0)
    layer = DeformConv2d(3, 4, 3, stride=1, padding=1, modulated=modulated).to(DT)
    x = torch.randn(1, 3, 4, 5, dtype=DT)
    scale = 0.5 if modulated else 1.0
    ref = scale * F.conv2d(x, layer.weight, padding=1) + layer.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), ref, atol=1e-13, rtol=0.0)

    torch.nn.init.normal_(layer.offset_conv.weight, std=0.1)  # move off the integer grid
    out = layer(x)
    off, m = layer.offsets_and_mask(x)
    assert off.shape == (1, 18, 4, 5) and (m is None) == (not modulated)
    naive = _naive_deform(x, off, layer.weight, layer.bias, (1, 1), (1, 1), (1, 1), m)
    torch.testing.assert_close(out, naive, atol=1e-12, rtol=1e-10)
    params = [layer.offset_conv.weight, layer.offset_conv.bias, layer.weight]
    got = torch.autograd.grad(out.square().sum(), params)
    exp = torch.autograd.grad(naive.square().sum(), params)
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=1e-9)


def test_bad_shapes_raise_clear_errors() -> None:
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(x, torch.zeros(1, 17, 3, 3), w)
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), w)  # wrong output size for padding 0
    with pytest.raises(ValueError, match="mask must be"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), w, mask=torch.ones(1, 18, 3, 3))
    with pytest.raises(ValueError, match="channels per group"):
        deform_conv2d(torch.randn(1, 3, 5, 5), torch.zeros(1, 18, 3, 3), w)
    with pytest.raises(ValueError, match="4-D"):
        deform_conv2d(torch.randn(2, 5, 5), torch.zeros(1, 18, 3, 3), w)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        deform_conv2d(x, torch.zeros(1, 18, 3, 3), w, stride=0)
    with pytest.raises(ValueError, match="offset_groups"):
        DeformConv2d(3, 4, 3, offset_groups=2)
    with pytest.raises(ValueError, match=r"expected \(N, 3, H, W\)"):
        DeformConv2d(3, 4, 3)(torch.randn(1, 2, 5, 5))


def test_layer_specs() -> None:
    """Reference: the LayerSpec contract (src/tricklab/layers/spec.py): family "deform", finite outputs."""
    assert {s.family for s in LAYER_SPECS} == {"deform"}
    for spec in LAYER_SPECS:
        torch.manual_seed(0)
        (x,) = spec.example(torch.Generator().manual_seed(0))
        assert torch.isfinite(spec.build()(x)).all()
