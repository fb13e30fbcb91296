"""Deformable convolution v1 (Dai et al. 2017) and v2 (modulated, Zhu et al. 2019) in pure PyTorch.

A k x k convolution samples its input on a fixed grid. Deformable convolution adds a learned, per-position,
per-tap offset to every sampling location and reads the input there by bilinear interpolation; v2 also scales
each tap by a learned modulation scalar in [0, 1]. For output position p0 and kernel tap p_k (Dai eq. 2,
Zhu eq. 1):

    y(p0) = sum_k  w_k * m_k(p0) * x(p0 * s - pad + p_k * d + dp_k(p0))

with x(.) bilinear interpolation that reads 0 outside the image (each of the 4 neighbours counts only if it lies
inside), dp_k the offsets and m_k the mask (all ones for v1).

Layout (torchvision's ``deform_conv2d``): x (N, C_in, H, W); weight (C_out, C_in / groups, kh, kw); offset
(N, 2 * G * kh * kw, H_out, W_out) holding, for offset group g and tap k = i * kw + j, (dy, dx) at channels
g*2*K + 2k and g*2*K + 2k + 1 (K = kh * kw); mask (N, G * kh * kw, H_out, W_out), tap k of group g at channel
g*K + k. The C_in channels split into G contiguous offset groups, each with its own offsets.

The implementation is vectorised: one ``gather`` reads the 4 neighbours of every (tap, output position) for all
channels, the bilinear weights and the mask combine them into the im2col matrix (N, C_in * K, L), and one
``einsum`` with the weight gives the output. Autograd gives the gradients w.r.t. input, offset, mask and weight.

References:
    Dai et al. 2017, "Deformable Convolutional Networks", ICCV.
    Zhu, Hu, Lin & Dai 2019, "Deformable ConvNets v2: More Deformable, Better Results", CVPR.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from tricklab.layers.spec import LayerSpec

IntPair = int | tuple[int, int]


def _pair_of(name: str, value: IntPair, minimum: int) -> tuple[int, int]:
    pair = _pair(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if any(v < minimum for v in pair):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return pair[0], pair[1]


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable 2-D convolution (v1; v2 when ``mask`` is given). Shapes and layout: see the module docstring.

    Returns (N, C_out, H_out, W_out) with H_out = (H + 2*pad_h - dil_h*(kh-1) - 1) // stride_h + 1 (as F.conv2d).
    Weight groups follow F.conv2d: groups = C_in / weight.shape[1]; offset groups = offset.shape[1] / (2*kh*kw).
    """
    for name, t in (("x", x), ("offset", offset), ("weight", weight)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"deform_conv2d: {name} must be a 4-D tensor, got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    sh, sw = _pair_of("stride", stride, 1)
    ph, pw = _pair_of("padding", padding, 0)
    dh, dw = _pair_of("dilation", dilation, 1)
    n, c_in, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    if c_in % c_per_group:
        raise ValueError(f"deform_conv2d: weight expects {c_per_group} channels per group, which does not divide "
                         f"the input's {c_in} channels")
    groups = c_in // c_per_group
    if c_out % groups:
        raise ValueError(f"deform_conv2d: {c_out} output channels do not split into {groups} weight groups")
    h_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"deform_conv2d: input {h}x{w} is too small for kernel {kh}x{kw} with padding {(ph, pw)} "
                         f"and dilation {(dh, dw)}")
    taps = kh * kw
    if offset.shape[0] != n or offset.shape[2:] != (h_out, w_out) or offset.shape[1] % (2 * taps) \
            or offset.shape[1] == 0:
        raise ValueError(f"deform_conv2d: offset must be (N={n}, 2*G*{taps}, {h_out}, {w_out}) for G offset groups, "
                         f"got {tuple(offset.shape)}")
    g_off = offset.shape[1] // (2 * taps)
    if c_in % g_off:
        raise ValueError(f"deform_conv2d: {g_off} offset groups do not divide the {c_in} input channels")
    if mask is not None and (mask.dim() != 4 or tuple(mask.shape) != (n, g_off * taps, h_out, w_out)):
        raise ValueError(f"deform_conv2d: mask must be (N, G*kh*kw, H_out, W_out) = {(n, g_off * taps, h_out, w_out)}"
                         f", got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"deform_conv2d: bias must be ({c_out},), got {tuple(bias.shape)}")

    L = h_out * w_out
    # Regular sampling grid p0*s - pad + p_k*d, shape (K, H_out, W_out) per axis, tap-major like the offsets.
    dtype, device = offset.dtype, offset.device
    oy = torch.arange(h_out, device=device, dtype=dtype) * sh - ph
    ox = torch.arange(w_out, device=device, dtype=dtype) * sw - pw
    ky = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)  # (K,) row of tap k = i*kw + j
    kx = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)
    base_y = ky[:, None, None] + oy[None, :, None]  # (K, H_out, 1)
    base_x = kx[:, None, None] + ox[None, None, :]  # (K, 1, W_out)
    off = offset.reshape(n, g_off, taps, 2, h_out, w_out)
    py = (base_y + off[:, :, :, 0]).reshape(n, g_off, taps * L)  # (N, G, K*L) fractional rows
    px = (base_x + off[:, :, :, 1]).reshape(n, g_off, taps * L)

    # Bilinear interpolation: the 4 integer neighbours and their weights. floor() has zero gradient, so the
    # weights' gradient w.r.t. py/px is the exact (piecewise-linear) derivative of the interpolant.
    y0 = torch.floor(py)
    x0 = torch.floor(px)
    ly, lx = py - y0, px - x0
    y0i, x0i = y0.long(), x0.long()
    corners = []
    for cy, cx, wgt in ((y0i, x0i, (1 - ly) * (1 - lx)), (y0i, x0i + 1, (1 - ly) * lx),
                        (y0i + 1, x0i, ly * (1 - lx)), (y0i + 1, x0i + 1, ly * lx)):
        inside = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)  # neighbours outside the image read as 0
        idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1))
        corners.append((idx, wgt * inside.to(wgt.dtype)))
    idx = torch.cat([c[0] for c in corners], dim=2)  # (N, G, 4*K*L)
    wts = torch.stack([c[1] for c in corners], dim=2)  # (N, G, 4, K*L)
    if mask is not None:
        # modulation m_k(p0) multiplies every bilinear weight of tap k (Zhu et al. eq. 1)
        wts = wts * mask.reshape(n, g_off, 1, taps * L)

    cg = c_in // g_off
    xg = x.reshape(n, g_off, cg, h * w)
    vals = torch.gather(xg, 3, idx[:, :, None, :].expand(n, g_off, cg, idx.shape[-1]))  # (N, G, Cg, 4*K*L)
    vals = vals.reshape(n, g_off, cg, 4, taps * L)
    cols = (vals * wts[:, :, None]).sum(dim=3)  # (N, G, Cg, K*L): the deformable im2col
    cols = cols.reshape(n, groups, c_per_group * taps, L)  # channel c, tap k at row c*K + k, as weight.flatten(1)
    wmat = weight.reshape(groups, c_out // groups, c_per_group * taps)
    out = torch.einsum("gok,ngkl->ngol", wmat, cols).reshape(n, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.reshape(1, c_out, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Deformable conv layer whose offsets (and, if ``modulated``, sigmoid masks) are predicted from the input by
    a regular conv with the same kernel, stride, padding and dilation, zero-initialised so that training starts
    from the plain convolution (offsets 0; masks sigmoid(0) = 0.5 in v2), as both papers do.

    The papers train the offset branch with a smaller learning rate (x0.1 in Zhu et al. 2019); put
    ``layer.offset_conv.parameters()`` in their own optimizer parameter group to do the same.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair = 3, stride: IntPair = 1,
                 padding: IntPair = 0, dilation: IntPair = 1, modulated: bool = False, groups: int = 1,
                 offset_groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups),
                        ("offset_groups", offset_groups)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"DeformConv2d: {name} must be a positive int, got {v!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConv2d: groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        if in_channels % offset_groups:
            raise ValueError(f"DeformConv2d: offset_groups={offset_groups} must divide in_channels={in_channels}")
        self.kernel_size = _pair_of("kernel_size", kernel_size, 1)
        self.stride = _pair_of("stride", stride, 1)
        self.padding = _pair_of("padding", padding, 0)
        self.dilation = _pair_of("dilation", dilation, 1)
        self.in_channels, self.out_channels, self.modulated = in_channels, out_channels, modulated
        self.offset_groups = offset_groups
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        taps = offset_groups * kh * kw
        # channels: 2*G*K offsets (dy, dx per tap), then G*K mask logits when modulated
        self.offset_conv = nn.Conv2d(in_channels, (3 if modulated else 2) * taps, self.kernel_size,
                                     stride=self.stride, padding=self.padding, dilation=self.dilation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # main weight like nn.Conv2d (kaiming-uniform a=sqrt(5)); offset branch zero (Dai 2017 sec. 2.1)
        ref = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                        groups=self.in_channels // self.weight.shape[1], bias=self.bias is not None)
        with torch.no_grad():
            self.weight.copy_(ref.weight)
            if self.bias is not None:
                self.bias.copy_(ref.bias)
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The predicted offset (N, 2*G*K, H_out, W_out) and mask (N, G*K, H_out, W_out) or None."""
        out = self.offset_conv(x)
        n_off = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        if not self.modulated:
            return out, None
        return out[:, :n_off], torch.sigmoid(out[:, n_off:])

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DeformConv2d: expected (N, {self.in_channels}, H, W), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, modulated={self.modulated}")


def _example(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 4, 7, 7, generator=g),)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("deform_conv2d", "deform", lambda: DeformConv2d(4, 6, 3, padding=1), _example,
              "deformable convolution v1: learned per-tap offsets, bilinear sampling (Dai et al. 2017)"),
    LayerSpec("modulated_deform_conv2d", "deform",
              lambda: DeformConv2d(4, 6, 3, stride=2, padding=2, dilation=2, modulated=True, offset_groups=2),
              _example, "deformable convolution v2: offsets + sigmoid modulation mask (Zhu et al. 2019)"),
)

__all__ = ["DeformConv2d", "LAYER_SPECS", "deform_conv2d"]
