"""Convolution blocks: depthwise-separable, dilated stack, squeeze-and-excitation, inverted residual, spatial
pyramid pooling, a two-pathway multi-scale block, and the ResNet basic / bottleneck blocks.

Every block works on 1-D signals ``(N, C, L)`` (``dim=1``, e.g. MNIST-1D) and 2-D images ``(N, C, H, W)``
(``dim=2``). The arithmetic is torch's own (``F.conv1d/2d``, ``F.adaptive_*_pool``, the norms of
:func:`tricklab.layers.norms.make_norm`); what this module adds is the wiring each paper prescribes. Each
family has a pure function over tensors (``depthwise_separable_conv``, ``dilated_conv``, ``squeeze_excite``,
``spatial_pyramid_pool``, ``multi_scale_paths``, ``residual_join``) and a thin ``nn.Module`` that owns the
parameters. Blocks that take ``norm=`` accept ``"batch"``, ``"layer"``, ``"instance"``, ``"group"``, ``"none"``.

References:
    Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications", arXiv.
    Chollet 2017, "Xception: Deep Learning with Depthwise Separable Convolutions", CVPR.
    Yu & Koltun 2016, "Multi-Scale Context Aggregation by Dilated Convolutions", ICLR.
    Hu, Shen & Sun 2018, "Squeeze-and-Excitation Networks", CVPR.
    Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR.
    He, Zhang, Ren & Sun 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition",
        ECCV (TPAMI 2015).
    Farabet, Couprie, Najman & LeCun 2013, "Learning Hierarchical Features for Scene Labeling", TPAMI.
    Kamnitsas et al. 2017, "Efficient Multi-Scale 3D CNN with Fully Connected CRF for Accurate Brain Lesion
        Segmentation", Medical Image Analysis.
    He, Zhang, Ren & Sun 2016, "Deep Residual Learning for Image Recognition", CVPR.
    Huang et al. 2016, "Deep Networks with Stochastic Depth", ECCV (drop-path on residual branches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.layers.norms import NORM_KINDS, make_norm
from tricklab.layers.spec import LayerSpec

PoolMode = Literal["max", "avg"]
MergeMode = Literal["concat", "sum"]


# ================================================================================================ helpers
def _check_dim(dim: int) -> int:
    if dim not in (1, 2) or isinstance(dim, bool):
        raise ValueError(f"dim must be 1 (signals, (N, C, L)) or 2 (images, (N, C, H, W)); got {dim!r}")
    return dim


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_norm(norm: str) -> str:
    if not isinstance(norm, str) or norm.lower() not in NORM_KINDS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORM_KINDS)}")
    return norm.lower()


def _check_input(x: Tensor, dim: int, channels: int | None, who: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: expected a Tensor, got {type(x).__name__}")
    if x.dim() != dim + 2:
        shape = "(N, C, L)" if dim == 1 else "(N, C, H, W)"
        raise ValueError(f"{who}: expected a {dim + 2}-D input {shape}, got shape {tuple(x.shape)}; add the batch "
                         f"dimension with x.unsqueeze(0) if you passed one example")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{who}: built for {channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")


def _conv(dim: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    return nn.Conv1d if dim == 1 else nn.Conv2d


def _conv_fn(dim: int) -> Callable[..., Tensor]:
    return F.conv1d if dim == 1 else F.conv2d


def _drop_path(x: Tensor, p: float, training: bool, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic depth on a residual branch (Huang et al. 2016): each example keeps the whole branch with
    probability ``1 - p`` and is scaled by ``1 / (1 - p)`` so that E[output] = branch; identity when not training.

    Private on purpose: :mod:`tricklab.layers.dropout` owns the public ``drop_path``; this copy keeps the conv
    blocks free of a dependency on a sibling family.
    """
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    # one Bernoulli per example, broadcast over (C, *spatial): the branch is dropped as a whole
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
    mask.bernoulli_(keep, generator=generator)
    return x * mask / keep


def _check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"drop_path must be a probability in [0, 1), got {p!r}")
    return float(p)


# ================================================================================================ depthwise separable
def depthwise_separable_conv(
    x: Tensor,
    depthwise_weight: Tensor,
    pointwise_weight: Tensor,
    depthwise_bias: Tensor | None = None,
    pointwise_bias: Tensor | None = None,
    stride: int = 1,
    padding: int | str = 0,
    dilation: int = 1,
) -> Tensor:
    """Depthwise convolution (one k-tap filter per input channel, ``groups = C_in``) then a 1x1 pointwise mix.

    Shapes (2-D; drop a trailing 1/k for 1-D): x (N, C_in, H, W); depthwise_weight (C_in * m, 1, k, k) with depth
    multiplier m; pointwise_weight (C_out, C_in * m, 1, 1). Cost per output position drops from
    C_in * C_out * k^2 to C_in * m * k^2 + C_in * m * C_out multiply-adds (Howard et al. 2017, eq. 5 vs 4).
    """
    if not isinstance(x, Tensor) or x.dim() not in (3, 4):
        raise ValueError(f"depthwise_separable_conv: x must be (N, C, L) or (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    c_in = x.shape[1]
    if depthwise_weight.dim() != x.dim() or depthwise_weight.shape[1] != 1 or depthwise_weight.shape[0] % c_in:
        raise ValueError(f"depthwise_weight must be (C_in * m, 1, *kernel) with C_in = {c_in}, got "
                         f"{tuple(depthwise_weight.shape)}")
    if pointwise_weight.dim() != x.dim() or any(s != 1 for s in pointwise_weight.shape[2:]) \
            or pointwise_weight.shape[1] != depthwise_weight.shape[0]:
        raise ValueError(f"pointwise_weight must be (C_out, {depthwise_weight.shape[0]}, 1{', 1' * (x.dim() - 3)}), "
                         f"got {tuple(pointwise_weight.shape)}")
    conv = _conv_fn(x.dim() - 2)
    h = conv(x, depthwise_weight, depthwise_bias, stride=stride, padding=padding, dilation=dilation, groups=c_in)
    return conv(h, pointwise_weight, pointwise_bias)


class _DepthwiseSeparableConvNd(nn.Module):
    dim: int = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | str = 0, dilation: int = 1, bias: bool = True, depth_multiplier: int = 1) -> None:
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("out_channels", out_channels)
        _check_int("kernel_size", kernel_size)
        _check_int("depth_multiplier", depth_multiplier)
        conv = _conv(self.dim)
        mid = in_channels * depth_multiplier
        # No depthwise bias: the pointwise layer is linear, so a per-channel shift before it folds into the
        # pointwise bias (Keras' SeparableConv and Chollet 2017 use a single bias the same way).
        self.depthwise = conv(in_channels, mid, kernel_size, stride=stride, padding=padding, dilation=dilation,
                              groups=in_channels, bias=False)
        self.pointwise = conv(mid, out_channels, 1, bias=bias)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, self.in_channels, type(self).__name__)
        return self.pointwise(self.depthwise(x))

    @staticmethod
    def num_parameters_formula(in_channels: int, out_channels: int, kernel_size: int, dim: int = 2,
                               bias: bool = True, depth_multiplier: int = 1) -> int:
        """C_in*m*k^dim (depthwise) + C_in*m*C_out (pointwise) + C_out (bias)."""
        mid = in_channels * depth_multiplier
        return mid * kernel_size ** dim + mid * out_channels + (out_channels if bias else 0)


class DepthwiseSeparableConv2d(_DepthwiseSeparableConvNd):
    """``(N, C_in, H, W) -> (N, C_out, H', W')``: depthwise k x k conv (groups=C_in) then 1x1 pointwise conv."""

    dim = 2


class DepthwiseSeparableConv1d(_DepthwiseSeparableConvNd):
    """``(N, C_in, L) -> (N, C_out, L')``: depthwise k-tap conv (groups=C_in) then a pointwise (k=1) conv."""

    dim = 1


# ================================================================================================ dilated stack
def dilated_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, dilation: int = 1) -> Tensor:
    """Size-preserving dilated convolution: padding = dilation * (k - 1) / 2 on each side (odd k).

    A k-tap filter with dilation d spans d*(k-1)+1 inputs, so that padding keeps L (or H, W) unchanged and the
    receptive field of a stack grows as 1 + (k-1) * sum(d) (Yu & Koltun 2016, sec. 2).
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"dilated_conv: x must be (N, C, L) or (N, C, H, W), got {tuple(x.shape)}")
    k = weight.shape[2:]
    if any(s % 2 == 0 for s in k):
        raise ValueError(f"dilated_conv: kernel {tuple(k)} has an even size; 'same' padding needs odd kernels")
    _check_int("dilation", dilation)
    pad = tuple(dilation * (s - 1) // 2 for s in k)
    return _conv_fn(x.dim() - 2)(x, weight, bias, padding=pad, dilation=dilation)


class DilatedStack(nn.Module):
    """Context module of Yu & Koltun 2016: conv(k, dilation d_i) -> norm -> ReLU for each d_i, size preserved.

    With the default dilations (1, 2, 4, 8) and k = 3 the receptive field grows exponentially, 1 + 2*15 = 31,
    while the parameter count grows linearly. ``residual=True`` adds each layer's input back (as in WaveNet /
    TCNs), which helps deep stacks train; the paper's module has no skip.
    """

    def __init__(self, channels: int, dilations: Sequence[int] = (1, 2, 4, 8), kernel_size: int = 3,
                 dim: int = 2, norm: str = "batch", residual: bool = False) -> None:
        super().__init__()
        _check_int("channels", channels)
        _check_int("kernel_size", kernel_size)
        _check_dim(dim)
        norm = _check_norm(norm)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so padding = dilation*(k-1)/2 keeps the size; got {kernel_size}")
        dilations = tuple(dilations)
        if not dilations:
            raise ValueError("dilations must name at least one layer, e.g. (1, 2, 4, 8)")
        for d in dilations:
            _check_int("each dilation", d)
        self.channels, self.dim, self.dilations, self.residual = channels, dim, dilations, residual
        conv = _conv(dim)
        self.convs = nn.ModuleList(
            conv(channels, channels, kernel_size, padding=d * (kernel_size - 1) // 2, dilation=d,
                 bias=norm == "none")  # a norm's shift makes the conv bias redundant
            for d in dilations)
        self.norms = nn.ModuleList(make_norm(norm, channels, dim) for _ in dilations)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, self.channels, "DilatedStack")
        for conv, norm in zip(self.convs, self.norms):
            h = F.relu(norm(conv(x)))
            x = x + h if self.residual else h
        return x


# ================================================================================================ squeeze-excite
def squeeze_excite(x: Tensor, fc1_weight: Tensor, fc1_bias: Tensor | None, fc2_weight: Tensor,
                   fc2_bias: Tensor | None) -> Tensor:
    """Channel gating of Hu et al. 2018, eq. 2-4: z = mean over space (squeeze, (N, C)),
    s = sigmoid(W2 relu(W1 z + b1) + b2) (excite, W1 (C/r, C), W2 (C, C/r)), output x * s per channel."""
    if x.dim() < 3:
        raise ValueError(f"squeeze_excite: x must be (N, C, *spatial), got {tuple(x.shape)}")
    z = x.mean(dim=tuple(range(2, x.dim())))
    s = torch.sigmoid(F.linear(F.relu(F.linear(z, fc1_weight, fc1_bias)), fc2_weight, fc2_bias))
    return x * s.reshape(s.shape + (1,) * (x.dim() - 2))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation gate over ``channels`` with hidden width ``max(1, channels // reduction)``."""

    def __init__(self, channels: int, reduction: int = 4, dim: int = 2) -> None:
        super().__init__()
        _check_int("channels", channels)
        _check_int("reduction", reduction)
        self.channels, self.dim = channels, _check_dim(dim)
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, self.channels, "SqueezeExcite")
        return squeeze_excite(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)


# ================================================================================================ inverted residual
def residual_join(shortcut: Tensor, branch: Tensor, drop_path: float = 0.0, training: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:
    """shortcut + DropPath_p(branch): the residual sum of He et al. 2016 (eq. 1, y = F(x) + x), with the
    branch dropped per example with probability ``drop_path`` while training (stochastic depth)."""
    if shortcut.shape != branch.shape:
        raise ValueError(f"residual_join: shortcut {tuple(shortcut.shape)} and branch {tuple(branch.shape)} differ; "
                         f"project the shortcut (1x1 conv) when stride or channels change")
    return shortcut + _drop_path(branch, drop_path, training, generator)


class InvertedResidual(nn.Module):
    """MobileNetV2 block (Sandler et al. 2018, Table 1): 1x1 expand to t*C_in -> norm -> ReLU6 -> depthwise k x k
    (stride s) -> norm -> ReLU6 -> 1x1 project to C_out -> norm, with **no** activation after the projection
    (the linear bottleneck: ReLU on the narrow C_out space would destroy information, sec. 3.2). The input is
    added back when stride == 1 and C_in == C_out. ``expand_ratio=1`` skips the expansion conv, as in the paper's
    first block. ``se=True`` inserts a squeeze-excite gate after the depthwise conv (MobileNetV3 style).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: int = 6,
                 norm: str = "batch", dim: int = 2, kernel_size: int = 3, drop_path: float = 0.0,
                 se: bool = False) -> None:
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("out_channels", out_channels)
        _check_int("stride", stride)
        _check_int("expand_ratio", expand_ratio)
        _check_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (padding (k-1)/2 keeps the size at stride 1); got {kernel_size}")
        self.dim, norm = _check_dim(dim), _check_norm(norm)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.drop_path = _check_p(drop_path)
        hidden = in_channels * expand_ratio
        conv = _conv(dim)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [conv(in_channels, hidden, 1, bias=False), make_norm(norm, hidden, dim), nn.ReLU6()]
        layers += [conv(hidden, hidden, kernel_size, stride=stride, padding=kernel_size // 2, groups=hidden,
                        bias=False), make_norm(norm, hidden, dim), nn.ReLU6()]
        if se:
            layers.append(SqueezeExcite(hidden, reduction=4, dim=dim))
        layers += [conv(hidden, out_channels, 1, bias=False), make_norm(norm, out_channels, dim)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, self.in_channels, "InvertedResidual")
        out = self.block(x)
        if self.use_residual:
            return residual_join(x, out, self.drop_path, self.training)
        return out


# ================================================================================================ SPP
def spatial_pyramid_pool(x: Tensor, levels: Sequence[int] = (1, 2, 4), mode: PoolMode = "max") -> Tensor:
    """Pool each map into an l x l grid for every level l and concatenate: (N, C, H, W) -> (N, C * sum(l^2))
    (1-D: (N, C, L) -> (N, C * sum(l))), whatever H and W are (He et al. 2014, sec. 2.3).

    Bins follow adaptive pooling: bin i of l covers [floor(i*H/l), ceil((i+1)*H/l)), so every input position is
    in some bin even when H is not divisible by l (bins then overlap by one). The output is level-major:
    level 1's C*1 numbers, then level 2's C*4 (channel-major within a level), ...
    """
    if not isinstance(x, Tensor) or x.dim() not in (3, 4):
        raise ValueError(f"spatial_pyramid_pool: x must be (N, C, L) or (N, C, H, W), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    levels = tuple(levels)
    if not levels:
        raise ValueError("spatial_pyramid_pool: levels must name at least one grid size, e.g. (1, 2, 4)")
    for lvl in levels:
        _check_int("each level", lvl)
    if mode not in ("max", "avg"):
        raise ValueError(f"spatial_pyramid_pool: mode must be 'max' or 'avg', got {mode!r}")
    one_d = x.dim() == 3
    if one_d:
        pool = F.adaptive_max_pool1d if mode == "max" else F.adaptive_avg_pool1d
    else:
        pool = F.adaptive_max_pool2d if mode == "max" else F.adaptive_avg_pool2d
    return torch.cat([pool(x, lvl).flatten(1) for lvl in levels], dim=1)


class SpatialPyramidPooling(nn.Module):
    """Fixed-length vector ``C * sum(l^dim for l in levels)`` from any input size; parameter-free."""

    def __init__(self, levels: Sequence[int] = (1, 2, 4), mode: PoolMode = "max", dim: int = 2) -> None:
        super().__init__()
        self.levels, self.mode, self.dim = tuple(levels), mode, _check_dim(dim)
        if not self.levels:
            raise ValueError("SpatialPyramidPooling: levels must name at least one grid size, e.g. (1, 2, 4)")
        for lvl in self.levels:
            _check_int("each level", lvl)
        if mode not in ("max", "avg"):
            raise ValueError(f"SpatialPyramidPooling: mode must be 'max' or 'avg', got {mode!r}")

    def output_size(self, channels: int) -> int:
        """Length of the output vector for ``channels`` input maps."""
        return channels * sum(lvl ** self.dim for lvl in self.levels)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, None, "SpatialPyramidPooling")
        return spatial_pyramid_pool(x, self.levels, self.mode)


# ================================================================================================ multi-scale
def multi_scale_paths(x: Tensor, fine: Callable[[Tensor], Tensor], coarse: Callable[[Tensor], Tensor],
                      factor: int = 2) -> tuple[Tensor, Tensor]:
    """Run ``fine`` on x and ``coarse`` on x average-pooled by ``factor``, then resample the coarse result back
    to x's spatial size by (bi)linear interpolation. Returns (fine(x), up(coarse(down(x)))), both of x's size.

    ``ceil_mode`` pooling keeps the last partial window, so odd sizes lose no border; the exact ``size=`` of the
    upsampling makes the two paths line up for any input size.
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"multi_scale_paths: x must be (N, C, L) or (N, C, H, W), got {tuple(x.shape)}")
    _check_int("factor", factor)
    one_d = x.dim() == 3
    pool = F.avg_pool1d if one_d else F.avg_pool2d
    low = coarse(pool(x, factor, factor, ceil_mode=True))
    size = x.shape[2:]
    up = F.interpolate(low, size=size, mode="linear" if one_d else "bilinear", align_corners=False)
    return fine(x), up


class MultiScaleBlock(nn.Module):
    """Two-pathway block: a full-resolution path with a small kernel (local detail) and a context path that sees
    the input downsampled by ``factor`` through a larger kernel, upsampled back and merged.

    Why: at factor 2 the context path's k_c-tap kernel covers about 2*k_c input positions for the cost of a k_c
    kernel at a quarter (2-D) of the positions, so the block sees wide context cheaply while the fine path keeps
    precise localisation; this is the idea of Farabet et al. 2013 (the same filters on a Laplacian pyramid) and of
    Kamnitsas et al. 2017 (DeepMedic: a normal and a subsampled pathway, upsampled and joined). Each path is
    conv -> norm -> ReLU with ``out_channels`` maps; ``merge="concat"`` joins them with a 1x1 conv (2*C_out ->
    C_out), ``merge="sum"`` adds them.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int = 2, norm: str = "batch",
                 fine_kernel: int = 3, coarse_kernel: int = 5, factor: int = 2, merge: MergeMode = "concat") -> None:
        super().__init__()
        _check_int("in_channels", in_channels)
        _check_int("out_channels", out_channels)
        _check_int("factor", factor)
        for name, k in (("fine_kernel", fine_kernel), ("coarse_kernel", coarse_kernel)):
            _check_int(name, k)
            if k % 2 == 0:
                raise ValueError(f"{name} must be odd so padding (k-1)/2 keeps the size; got {k}")
        if merge not in ("concat", "sum"):
            raise ValueError(f"merge must be 'concat' or 'sum', got {merge!r}")
        self.dim, norm = _check_dim(dim), _check_norm(norm)
        self.in_channels, self.factor, self.merge = in_channels, factor, merge
        conv = _conv(dim)
        bias = norm == "none"
        self.fine = nn.Sequential(conv(in_channels, out_channels, fine_kernel, padding=fine_kernel // 2, bias=bias),
                                  make_norm(norm, out_channels, dim), nn.ReLU())
        self.coarse = nn.Sequential(conv(in_channels, out_channels, coarse_kernel, padding=coarse_kernel // 2,
                                         bias=bias), make_norm(norm, out_channels, dim), nn.ReLU())
        self.fuse = conv(2 * out_channels, out_channels, 1) if merge == "concat" else None

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, self.in_channels, "MultiScaleBlock")
        a, b = multi_scale_paths(x, self.fine, self.coarse, self.factor)
        if self.fuse is None:
            return a + b
        return self.fuse(torch.cat([a, b], dim=1))


# ================================================================================================ ResNet blocks
class _ResidualBlock(nn.Module):
    expansion: int = 1

    def _make_shortcut(self, in_channels: int, out_channels: int, stride: int, norm: str, dim: int) -> nn.Module:
        # Option B of He et al. 2016 (sec. 3.3): identity when shapes match, else a strided 1x1 projection + norm.
        if stride == 1 and in_channels == out_channels:
            return nn.Identity()
        return nn.Sequential(_conv(dim)(in_channels, out_channels, 1, stride=stride, bias=False),
                             make_norm(norm, out_channels, dim))

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.dim, self.in_channels, type(self).__name__)
        # post-activation ResNet (v1): relu(shortcut(x) + F(x))
        return F.relu(residual_join(self.shortcut(x), self.branch(x), self.drop_path, self.training))

    def _validate(self, in_channels: int, out_channels: int, stride: int, norm: str, dim: int,
                  drop_path: float) -> str:
        _check_int("in_channels", in_channels)
        _check_int("out_channels", out_channels)
        _check_int("stride", stride)
        self.dim = _check_dim(dim)
        self.drop_path = _check_p(drop_path)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        return _check_norm(norm)


class BasicBlock(_ResidualBlock):
    """ResNet-18/34 block (He et al. 2016, Fig. 2 left): 3x3 conv (stride) -> norm -> ReLU -> 3x3 conv -> norm,
    plus the (projected) input, then ReLU. ``zero_init_residual`` zeroes the last norm's scale so the block starts
    as the identity (Goyal et al. 2017), which helps large-batch training."""

    expansion = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, norm: str = "batch", dim: int = 2,
                 drop_path: float = 0.0, zero_init_residual: bool = False) -> None:
        super().__init__()
        norm = self._validate(in_channels, out_channels, stride, norm, dim, drop_path)
        conv = _conv(dim)
        last = make_norm(norm, out_channels, dim)
        self.branch = nn.Sequential(
            conv(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            make_norm(norm, out_channels, dim), nn.ReLU(),
            conv(out_channels, out_channels, 3, padding=1, bias=False), last)
        if zero_init_residual and getattr(last, "weight", None) is not None:
            nn.init.zeros_(last.weight)
        self.shortcut = self._make_shortcut(in_channels, out_channels, stride, norm, dim)


class Bottleneck(_ResidualBlock):
    """ResNet-50+ block (He et al. 2016, Fig. 5 right): 1x1 reduce to ``mid`` -> 3x3 (stride) -> 1x1 expand to
    ``mid * expansion`` (4), each followed by a norm, ReLU between, plus the (projected) input, then ReLU. The
    stride sits on the 3x3 conv (the "ResNet v1.5" placement, which loses no input positions in the 1x1)."""

    expansion = 4

    def __init__(self, in_channels: int, mid_channels: int, stride: int = 1, norm: str = "batch", dim: int = 2,
                 drop_path: float = 0.0, expansion: int = 4, zero_init_residual: bool = False) -> None:
        super().__init__()
        _check_int("mid_channels", mid_channels)
        _check_int("expansion", expansion)
        self.expansion = expansion
        out_channels = mid_channels * expansion
        norm = self._validate(in_channels, out_channels, stride, norm, dim, drop_path)
        self.mid_channels = mid_channels
        conv = _conv(dim)
        last = make_norm(norm, out_channels, dim)
        self.branch = nn.Sequential(
            conv(in_channels, mid_channels, 1, bias=False), make_norm(norm, mid_channels, dim), nn.ReLU(),
            conv(mid_channels, mid_channels, 3, stride=stride, padding=1, bias=False),
            make_norm(norm, mid_channels, dim), nn.ReLU(),
            conv(mid_channels, out_channels, 1, bias=False), last)
        if zero_init_residual and getattr(last, "weight", None) is not None:
            nn.init.zeros_(last.weight)
        self.shortcut = self._make_shortcut(in_channels, out_channels, stride, norm, dim)


# ================================================================================================ specs
def _randn(*shape: int) -> Callable[[torch.Generator], tuple[Tensor, ...]]:
    return lambda g: (torch.randn(*shape, generator=g),)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("depthwise_separable_conv2d", "conv", lambda: DepthwiseSeparableConv2d(4, 8, 3, padding=1),
              _randn(2, 4, 8, 8), "depthwise k x k conv (groups=C_in) then 1x1 pointwise (MobileNet, Xception)"),
    LayerSpec("depthwise_separable_conv1d", "conv", lambda: DepthwiseSeparableConv1d(4, 8, 5, padding=2),
              _randn(2, 4, 16), "1-D depthwise-separable conv"),
    LayerSpec("dilated_stack", "conv", lambda: DilatedStack(8, (1, 2, 4, 8), 3, dim=1, norm="batch"),
              _randn(2, 8, 40), "size-preserving dilated conv stack, receptive field 1+(k-1)*sum(d) (Yu & Koltun)"),
    LayerSpec("dilated_stack2d", "conv", lambda: DilatedStack(8, (1, 2), 3, dim=2, norm="group", residual=True),
              _randn(2, 8, 8, 8), "2-D dilated conv stack with residual connections"),
    LayerSpec("squeeze_excite", "conv", lambda: SqueezeExcite(8, reduction=4, dim=2),
              _randn(2, 8, 5, 5), "squeeze-and-excitation channel gate (Hu et al. 2018)"),
    LayerSpec("inverted_residual", "conv", lambda: InvertedResidual(8, 8, stride=1, expand_ratio=6, norm="batch"),
              _randn(2, 8, 6, 6), "MobileNetV2 inverted residual with linear bottleneck"),
    LayerSpec("inverted_residual1d", "conv",
              lambda: InvertedResidual(8, 16, stride=2, expand_ratio=4, norm="layer", dim=1, se=True),
              _randn(2, 8, 16), "1-D inverted residual, strided, with a squeeze-excite gate"),
    LayerSpec("spatial_pyramid_pooling", "conv", lambda: SpatialPyramidPooling((1, 2, 4), "max", dim=2),
              _randn(2, 3, 7, 9), "fixed-length C*sum(l^2) vector from any image size (He et al. 2014)"),
    LayerSpec("spatial_pyramid_pooling1d", "conv", lambda: SpatialPyramidPooling((1, 2, 4), "avg", dim=1),
              _randn(2, 3, 13), "fixed-length C*sum(l) vector from any signal length"),
    LayerSpec("multi_scale_block", "conv", lambda: MultiScaleBlock(3, 8, dim=2, norm="batch"),
              _randn(2, 3, 9, 9), "full-resolution + 2x-downsampled pathways, upsampled and fused"),
    LayerSpec("multi_scale_block1d", "conv", lambda: MultiScaleBlock(3, 8, dim=1, norm="instance", merge="sum"),
              _randn(2, 3, 21), "1-D two-pathway multi-scale block"),
    LayerSpec("basic_block", "conv", lambda: BasicBlock(4, 8, stride=2, norm="batch", drop_path=0.1),
              _randn(2, 4, 8, 8), "ResNet basic block (two 3x3 convs) with projection shortcut and drop-path"),
    LayerSpec("bottleneck", "conv", lambda: Bottleneck(16, 4, stride=1, norm="group", dim=2),
              _randn(2, 16, 6, 6), "ResNet bottleneck block (1x1 - 3x3 - 1x1, expansion 4)"),
    LayerSpec("basic_block1d", "conv", lambda: BasicBlock(8, 8, stride=1, norm="batch", dim=1),
              _randn(2, 8, 20), "1-D ResNet basic block with identity shortcut"),
)

__all__ = [
    "BasicBlock", "Bottleneck", "DepthwiseSeparableConv1d", "DepthwiseSeparableConv2d", "DilatedStack",
    "InvertedResidual", "LAYER_SPECS", "MultiScaleBlock", "SpatialPyramidPooling", "SqueezeExcite",
    "depthwise_separable_conv", "dilated_conv", "multi_scale_paths", "residual_join", "spatial_pyramid_pool",
    "squeeze_excite",
]
