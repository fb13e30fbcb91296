"""Tests for tricklab.layers.conv.

References, named per test: explicit torch compositions (``F.conv1d/2d`` with ``groups``, ``F.batch_norm`` in eval
mode, ``F.avg_pool``, ``F.interpolate``) for the blocks; NumPy closed forms for squeeze-excite and for spatial
pyramid pooling (a slow loop over adaptive bins); ``torch.autograd.gradcheck`` (central finite differences, float64)
for the gradients of the functional cores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.layers.conv import (
    LAYER_SPECS,
    BasicBlock,
    Bottleneck,
    DepthwiseSeparableConv1d,
    DepthwiseSeparableConv2d,
    DilatedStack,
    InvertedResidual,
    MultiScaleBlock,
    SpatialPyramidPooling,
    SqueezeExcite,
    _drop_path,
    depthwise_separable_conv,
    dilated_conv,
    residual_join,
    spatial_pyramid_pool,
    squeeze_excite,
)
from tricklab.layers.norms import NORM_KINDS

DT = torch.float64


def _values_and_grads(fn_a: Callable[[], Tensor], fn_b: Callable[[], Tensor], wrt: Sequence[Tensor],
                      atol: float = 1e-10) -> None:
    """fn_a() == fn_b() and their vector-Jacobian products with one random cotangent agree for every tensor in
    ``wrt`` (fn_b is the reference)."""
    a, b = fn_a(), fn_b()
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-8)
    v = torch.randn(a.shape, dtype=a.dtype, generator=torch.Generator().manual_seed(123))
    ga = torch.autograd.grad((a * v).sum(), list(wrt), allow_unused=True)
    gb = torch.autograd.grad((b * v).sum(), list(wrt), allow_unused=True)
    for x, y in zip(ga, gb):
        assert x is not None and y is not None
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-8)


def _randomise_norms(module: nn.Module, seed: int = 0) -> None:
    # non-trivial running statistics and affine terms, so an eval-mode reference exercises every norm parameter
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


def _bn(h: Tensor, m: nn.Module) -> Tensor:
    # eval-mode batch norm: (h - running_mean) / sqrt(running_var + eps) * weight + bias
    return F.batch_norm(h, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


# ================================================================================================ depthwise separable
@pytest.mark.parametrize("dim,stride,padding,dilation,mult", [(2, 1, 1, 1, 1), (2, 2, 2, 2, 2), (1, 1, 2, 1, 1),
                                                               (1, 2, 0, 3, 3)])
def test_depthwise_separable_equals_explicit_grouped_pair(dim: int, stride: int, padding: int, dilation: int,
                                                          mult: int) -> None:
    """Reference: F.conv{dim}d(groups=C_in) followed by a 1x1 F.conv{dim}d with the module's own weights."""
    torch.manual_seed(0)
    cls = DepthwiseSeparableConv2d if dim == 2 else DepthwiseSeparableConv1d
    layer = cls(3, 5, 3, stride=stride, padding=padding, dilation=dilation, depth_multiplier=mult).to(DT)
    x = torch.randn((2, 3) + (9,) * dim, dtype=DT, requires_grad=True)
    conv = F.conv2d if dim == 2 else F.conv1d

    def reference() -> Tensor:
        h = conv(x, layer.depthwise.weight, None, stride=stride, padding=padding, dilation=dilation, groups=3)
        return conv(h, layer.pointwise.weight, layer.pointwise.bias)

    assert layer.depthwise.weight.shape == (3 * mult, 1) + (3,) * dim
    _values_and_grads(lambda: layer(x), reference,
                      [x, layer.depthwise.weight, layer.pointwise.weight, layer.pointwise.bias])


def test_depthwise_separable_function_gradcheck() -> None:
    """Reference: central finite differences (torch.autograd.gradcheck, float64) of the functional core."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 5, 5, dtype=DT, generator=g, requires_grad=True)
    dw = torch.randn(4, 1, 3, 3, dtype=DT, generator=g, requires_grad=True)
    pw = torch.randn(3, 4, 1, 1, dtype=DT, generator=g, requires_grad=True)
    db = torch.randn(4, dtype=DT, generator=g, requires_grad=True)
    pb = torch.randn(3, dtype=DT, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: depthwise_separable_conv(*a, stride=1, padding=1), (x, dw, pw, db, pb))


@pytest.mark.parametrize("dim,c_in,c_out,k,m,bias", [(2, 16, 32, 3, 1, True), (2, 8, 4, 5, 2, False),
                                                     (1, 4, 8, 7, 1, True)])
def test_depthwise_separable_parameter_count(dim: int, c_in: int, c_out: int, k: int, m: int, bias: bool) -> None:
    """Reference: closed form C_in*m*k^dim + C_in*m*C_out + C_out*bias (Howard et al. 2017, sec. 3.1), which is
    smaller than a full convolution's C_in*C_out*k^dim + C_out."""
    cls = DepthwiseSeparableConv2d if dim == 2 else DepthwiseSeparableConv1d
    layer = cls(c_in, c_out, k, bias=bias, depth_multiplier=m)
    expected = c_in * m * k ** dim + c_in * m * c_out + (c_out if bias else 0)
    assert sum(p.numel() for p in layer.parameters()) == expected
    assert cls.num_parameters_formula(c_in, c_out, k, dim, bias, m) == expected
    if m == 1:
        assert expected < c_in * c_out * k ** dim + c_out


def test_depthwise_separable_rejects_bad_input() -> None:
    layer = DepthwiseSeparableConv2d(3, 4, 3)
    with pytest.raises(ValueError, match="input channels"):
        layer(torch.randn(1, 2, 5, 5))
    with pytest.raises(ValueError, match="4-D input"):
        layer(torch.randn(3, 5, 5))
    with pytest.raises(TypeError, match="kernel_size must be an int"):
        DepthwiseSeparableConv1d(3, 4, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="depthwise_weight"):
        depthwise_separable_conv(torch.randn(1, 3, 5, 5), torch.randn(4, 1, 3, 3), torch.randn(2, 4, 1, 1))


# ================================================================================================ dilated stack
@pytest.mark.parametrize("dim,size", [(1, 17), (1, 40), (2, 9), (2, 12)])
def test_dilated_stack_keeps_size_and_matches_explicit_convs(dim: int, size: int) -> None:
    """Reference: a loop of F.conv{dim}d with explicit padding d*(k-1)/2 and dilation d, then ReLU, plus the
    input when residual (norm="none" so the reference is exact)."""
    torch.manual_seed(0)
    dilations = (1, 2, 4) if dim == 2 else (1, 2, 4, 8)
    for residual in (False, True):
        stack = DilatedStack(3, dilations, kernel_size=3, dim=dim, norm="none", residual=residual).to(DT)
        x = torch.randn((2, 3) + (size,) * dim, dtype=DT, requires_grad=True)
        conv = F.conv2d if dim == 2 else F.conv1d

        def reference(stack: DilatedStack = stack, residual: bool = residual) -> Tensor:
            h = x
            for c, d in zip(stack.convs, dilations):
                y = F.relu(conv(h, c.weight, c.bias, padding=d, dilation=d))
                h = h + y if residual else y
            return h

        out = stack(x)
        assert out.shape == x.shape
        params = [p for c in stack.convs for p in (c.weight, c.bias)]
        _values_and_grads(lambda stack=stack: stack(x), reference, [x, *params])


def test_dilated_conv_function_gradcheck_and_size() -> None:
    """Reference: torch.autograd.gradcheck (finite differences) and the 'same' output size."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 11, dtype=DT, generator=g, requires_grad=True)
    w = torch.randn(3, 2, 5, dtype=DT, generator=g, requires_grad=True)
    assert dilated_conv(x, w, dilation=3).shape == (1, 3, 11)
    assert torch.autograd.gradcheck(lambda x, w: dilated_conv(x, w, dilation=2), (x, w))
    with pytest.raises(ValueError, match="even"):
        dilated_conv(x, torch.randn(3, 2, 4, dtype=DT))


def test_dilated_stack_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="odd"):
        DilatedStack(4, kernel_size=4)
    with pytest.raises(ValueError, match="dim"):
        DilatedStack(4, dim=3)
    with pytest.raises(ValueError, match="unknown norm"):
        DilatedStack(4, norm="weight")
    with pytest.raises(ValueError, match="at least one"):
        DilatedStack(4, dilations=())


# ================================================================================================ squeeze-excite
def _se_numpy(x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    # Hu et al. 2018 eq. 2-4: z = GAP(x); s = sigmoid(W2 relu(W1 z + b1) + b2); y = x * s
    z = x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    s = 1.0 / (1.0 + np.exp(-(np.maximum(z @ w1.T + b1, 0.0) @ w2.T + b2)))
    return x * s.reshape(s.shape + (1,) * (x.ndim - 2))


@pytest.mark.parametrize("dim", [1, 2])
def test_squeeze_excite_matches_numpy_and_gradcheck(dim: int) -> None:
    """Reference: the NumPy closed form of eq. 2-4 (values) and torch.autograd.gradcheck (gradients)."""
    torch.manual_seed(0)
    se = SqueezeExcite(8, reduction=4, dim=dim).to(DT)
    x = torch.randn((2, 8) + (5,) * dim, dtype=DT, requires_grad=True)
    out = se(x)
    ref = _se_numpy(*(t.detach().numpy() for t in (x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias)))
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    assert se.fc1.weight.shape == (2, 8)
    assert torch.autograd.gradcheck(squeeze_excite, (x, se.fc1.weight, se.fc1.bias, se.fc2.weight, se.fc2.bias))


# ================================================================================================ inverted residual
def test_inverted_residual_matches_explicit_composition() -> None:
    """Reference: F.conv2d (1x1 expand, depthwise groups=hidden, 1x1 project) + eval-mode F.batch_norm + ReLU6
    (clamp to [0, 6]), no activation after the projection, plus the input (stride 1, C_in == C_out)."""
    torch.manual_seed(0)
    block = InvertedResidual(4, 4, stride=1, expand_ratio=3, norm="batch").to(DT).eval()
    _randomise_norms(block)
    x = torch.randn(2, 4, 6, 6, dtype=DT, requires_grad=True)
    c1, n1, _, c2, n2, _, c3, n3 = block.block

    def reference() -> Tensor:
        h = torch.clamp(_bn(F.conv2d(x, c1.weight), n1), 0.0, 6.0)
        h = torch.clamp(_bn(F.conv2d(h, c2.weight, padding=1, groups=12), n2), 0.0, 6.0)
        return x + _bn(F.conv2d(h, c3.weight), n3)

    assert block.use_residual and c1.weight.shape == (12, 4, 1, 1) and c2.weight.shape == (12, 1, 3, 3)
    _values_and_grads(lambda: block(x), reference, [x, c1.weight, c2.weight, c3.weight, n3.weight])


def test_inverted_residual_shapes_and_shortcut_rule() -> None:
    """Reference: the rule of Sandler et al. 2018 (residual iff stride 1 and C_in == C_out) and the strided output
    size ceil(L / 2) of a k=3, padding 1, stride 2 conv."""
    torch.manual_seed(0)
    strided = InvertedResidual(4, 8, stride=2, expand_ratio=6, dim=1)
    assert not strided.use_residual
    assert strided(torch.randn(2, 4, 15)).shape == (2, 8, math.ceil(15 / 2))
    assert not InvertedResidual(4, 8, stride=1).use_residual
    no_expand = InvertedResidual(4, 4, expand_ratio=1, norm="none")
    assert isinstance(no_expand.block[0], nn.Conv2d) and no_expand.block[0].groups == 4  # starts depthwise
    # linear bottleneck: the last module is the norm after the projection, not an activation
    assert isinstance(InvertedResidual(4, 4).block[-1], nn.BatchNorm2d)


# ================================================================================================ SPP
def _spp_numpy(x: np.ndarray, levels: Sequence[int], mode: str) -> np.ndarray:
    # slow reference: adaptive bins [floor(i*S/l), ceil((i+1)*S/l)) per axis, max or mean inside, level-major
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    out = []
    reduce = np.max if mode == "max" else np.mean
    for lvl in levels:
        grids = [[(math.floor(i * s / lvl), math.ceil((i + 1) * s / lvl)) for i in range(lvl)] for s in spatial]
        vals = np.zeros((n, c) + (lvl,) * len(spatial))
        if len(spatial) == 1:
            for i, (a, b) in enumerate(grids[0]):
                vals[:, :, i] = reduce(x[:, :, a:b], axis=2)
        else:
            for i, (a, b) in enumerate(grids[0]):
                for j, (p, q) in enumerate(grids[1]):
                    vals[:, :, i, j] = reduce(x[:, :, a:b, p:q], axis=(2, 3))
        out.append(vals.reshape(n, -1))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("spatial", [(8, 8), (7, 5), (3, 3), (13, 10), (16,), (11,), (3,)])
def test_spatial_pyramid_pool_matches_bin_loop(spatial: tuple[int, ...], mode: str) -> None:
    """Reference: a NumPy loop over adaptive pooling bins; output length C * sum(l^dim) for every input size,
    including sizes not divisible by the level and smaller than it."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, 3) + spatial, dtype=DT, generator=g)
    levels = (1, 2, 4)
    out = spatial_pyramid_pool(x, levels, mode)  # type: ignore[arg-type]
    dim = len(spatial)
    assert out.shape == (2, 3 * sum(lvl ** dim for lvl in levels))
    np.testing.assert_allclose(out.numpy(), _spp_numpy(x.numpy(), levels, mode), rtol=1e-12, atol=1e-12)
    layer = SpatialPyramidPooling(levels, mode, dim=dim)  # type: ignore[arg-type]
    assert layer.output_size(3) == out.shape[1]
    torch.testing.assert_close(layer(x), out)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_spatial_pyramid_pool_gradcheck(mode: str) -> None:
    """Reference: torch.autograd.gradcheck; random inputs have no ties, so max pooling is differentiable there."""
    g = torch.Generator().manual_seed(4)
    x2 = torch.randn(1, 2, 5, 6, dtype=DT, generator=g, requires_grad=True)
    x1 = torch.randn(1, 2, 7, dtype=DT, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: spatial_pyramid_pool(x, (1, 2, 3), mode), (x2,))  # type: ignore[arg-type]
    assert torch.autograd.gradcheck(lambda x: spatial_pyramid_pool(x, (1, 2, 4), mode), (x1,))  # type: ignore[arg-type]


def test_spatial_pyramid_pool_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="mode"):
        spatial_pyramid_pool(torch.randn(1, 2, 4, 4), mode="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        spatial_pyramid_pool(torch.randn(4, 4))
    with pytest.raises(ValueError, match="at least one"):
        spatial_pyramid_pool(torch.randn(1, 2, 4, 4), levels=())


# ================================================================================================ multi-scale
@pytest.mark.parametrize("dim,size,merge", [(2, 9, "concat"), (2, 8, "sum"), (1, 21, "concat"), (1, 16, "sum")])
def test_multi_scale_block_matches_explicit_two_pathways(dim: int, size: int, merge: str) -> None:
    """Reference: fine = relu(conv_k3(x)); coarse = interpolate(relu(conv_k5(avg_pool_2(x, ceil_mode))), size of x,
    (bi)linear); merged by a 1x1 conv of the concatenation or by their sum (norm="none" so it is exact)."""
    torch.manual_seed(0)
    block = MultiScaleBlock(3, 4, dim=dim, norm="none", merge=merge).to(DT)  # type: ignore[arg-type]
    x = torch.randn((2, 3) + (size,) * dim, dtype=DT, requires_grad=True)
    conv, pool = (F.conv2d, F.avg_pool2d) if dim == 2 else (F.conv1d, F.avg_pool1d)
    fc, cc = block.fine[0], block.coarse[0]

    def reference() -> Tensor:
        a = F.relu(conv(x, fc.weight, fc.bias, padding=1))
        low = F.relu(conv(pool(x, 2, 2, ceil_mode=True), cc.weight, cc.bias, padding=2))
        b = F.interpolate(low, size=x.shape[2:], mode="bilinear" if dim == 2 else "linear", align_corners=False)
        return a + b if merge == "sum" else conv(torch.cat([a, b], 1), block.fuse.weight, block.fuse.bias)

    assert block(x).shape == (2, 4) + (size,) * dim
    _values_and_grads(lambda: block(x), reference, [x, fc.weight, cc.weight])


def test_multi_scale_block_sees_wider_context_than_its_fine_path() -> None:
    """Reference: the support of the input gradient of one centre output unit (positive weights, no cancellation):
    the fine 3-tap path alone reaches 3 positions; the pooled 5-tap path reaches at least 2*5 = 10."""
    block = MultiScaleBlock(1, 1, dim=1, norm="none", merge="sum").to(DT)
    with torch.no_grad():
        for p in block.parameters():
            p.fill_(0.1)
    x = torch.ones(1, 1, 41, dtype=DT, requires_grad=True)
    (g,) = torch.autograd.grad(block(x)[0, 0, 20], x)
    support = g[0, 0].nonzero().flatten()
    assert int(support.max() - support.min() + 1) >= 10


# ================================================================================================ ResNet blocks
@pytest.mark.parametrize("dim,stride,c_in,c_out", [(2, 1, 4, 4), (2, 2, 4, 8), (1, 2, 3, 6), (1, 1, 4, 6)])
def test_basic_block_matches_explicit_composition(dim: int, stride: int, c_in: int, c_out: int) -> None:
    """Reference: relu(bn(conv3x3(relu(bn(conv3x3_s(x))))) + shortcut(x)), shortcut = x or bn(conv1x1_s(x)), in
    eval mode with explicit F.conv / F.batch_norm (He et al. 2016, Fig. 2 and option B)."""
    torch.manual_seed(0)
    block = BasicBlock(c_in, c_out, stride=stride, dim=dim).to(DT).eval()
    _randomise_norms(block)
    x = torch.randn((2, c_in) + (8,) * dim, dtype=DT, requires_grad=True)
    conv = F.conv2d if dim == 2 else F.conv1d
    c1, n1, _, c2, n2 = block.branch

    def reference() -> Tensor:
        h = F.relu(_bn(conv(x, c1.weight, stride=stride, padding=1), n1))
        h = _bn(conv(h, c2.weight, padding=1), n2)
        if stride == 1 and c_in == c_out:
            sc = x
        else:
            sc = _bn(conv(x, block.shortcut[0].weight, stride=stride), block.shortcut[1])
        return F.relu(h + sc)

    projected = not (stride == 1 and c_in == c_out)
    assert isinstance(block.shortcut, nn.Sequential) == projected
    assert block(x).shape == (2, c_out) + (math.ceil(8 / stride),) * dim
    _values_and_grads(lambda: block(x), reference, [x, c1.weight, c2.weight, n2.weight])


@pytest.mark.parametrize("c_in,mid,stride", [(16, 4, 1), (8, 4, 1), (8, 2, 2)])
def test_bottleneck_matches_explicit_composition(c_in: int, mid: int, stride: int) -> None:
    """Reference: 1x1 -> 3x3 (stride) -> 1x1 to mid*4 with eval F.batch_norm and ReLU, plus x or a projected x."""
    torch.manual_seed(0)
    block = Bottleneck(c_in, mid, stride=stride).to(DT).eval()
    _randomise_norms(block)
    x = torch.randn(2, c_in, 6, 6, dtype=DT, requires_grad=True)
    c1, n1, _, c2, n2, _, c3, n3 = block.branch

    def reference() -> Tensor:
        h = F.relu(_bn(F.conv2d(x, c1.weight), n1))
        h = F.relu(_bn(F.conv2d(h, c2.weight, stride=stride, padding=1), n2))
        h = _bn(F.conv2d(h, c3.weight), n3)
        same = stride == 1 and c_in == mid * 4
        sc = x if same else _bn(F.conv2d(x, block.shortcut[0].weight, stride=stride), block.shortcut[1])
        return F.relu(h + sc)

    assert block.out_channels == mid * 4
    assert isinstance(block.shortcut, nn.Identity) == (stride == 1 and c_in == mid * 4)
    _values_and_grads(lambda: block(x), reference, [x, c1.weight, c2.weight, c3.weight])


def test_zero_init_residual_starts_as_identity() -> None:
    """Reference: with the last norm's scale at zero the branch outputs its (zero) bias, so the block is relu(x)."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 5, 5)
    for block in (BasicBlock(8, 8, zero_init_residual=True), Bottleneck(8, 2, zero_init_residual=True)):
        block.eval()
        torch.testing.assert_close(block(x), F.relu(x))


@pytest.mark.parametrize("norm", NORM_KINDS)
@pytest.mark.parametrize("make", [
    lambda n: BasicBlock(8, 16, stride=2, norm=n),
    lambda n: Bottleneck(8, 8, norm=n, dim=1),
    lambda n: InvertedResidual(8, 8, norm=n),
    lambda n: DilatedStack(8, (1, 2), norm=n, dim=1),
    lambda n: MultiScaleBlock(8, 8, norm=n),
], ids=["basic", "bottleneck", "inverted", "dilated", "multiscale"])
def test_every_norm_kind_is_accepted(make: Callable[[str], nn.Module], norm: str) -> None:
    """Reference: autograd reaches every parameter with finite values for each norm kind in NORM_KINDS."""
    torch.manual_seed(0)
    block = make(norm)
    dim = block.dim
    x = torch.randn((2, 8) + (8,) * dim)
    out = block(x)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


# ================================================================================================ drop path
def test_drop_path_keeps_or_drops_whole_examples_and_preserves_the_mean() -> None:
    """Reference: the stochastic-depth definition (Huang et al. 2016): each example's branch is 0 or x / (1-p), the
    kept fraction is Binomial(n, 1-p) (4-sigma band) and the identity holds in eval or at p = 0."""
    p, n = 0.3, 4000
    x = torch.rand(n, 2, 3) + 0.5
    g = torch.Generator().manual_seed(5)
    y = _drop_path(x, p, True, g)
    kept = (y != 0).flatten(1).all(1)
    dropped = (y == 0).flatten(1).all(1)
    assert bool((kept | dropped).all())
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(int(kept.sum()) - n * (1 - p)) < 4 * sigma
    assert torch.equal(_drop_path(x, p, False), x)
    assert torch.equal(_drop_path(x, 0.0, True), x)


def test_basic_block_drop_path_drops_the_branch_per_example() -> None:
    """Reference: per example, relu(x + branch(x) / (1-p)) when kept and relu(x) when dropped (norm="none")."""
    torch.manual_seed(0)
    p = 0.5
    block = BasicBlock(3, 3, norm="none", drop_path=p).train()
    x = torch.randn(64, 3, 5, 5)
    out = block(x)
    branch = block.branch(x)
    kept = F.relu(x + branch / (1 - p))
    dropped = F.relu(x)
    is_kept = torch.isclose(out, kept, atol=1e-6).flatten(1).all(1)
    is_dropped = torch.isclose(out, dropped, atol=1e-6).flatten(1).all(1)
    assert bool((is_kept | is_dropped).all()) and 0 < int(is_kept.sum()) < 64
    block.eval()
    torch.testing.assert_close(block(x), F.relu(x + branch))
    with pytest.raises(ValueError, match="drop_path"):
        BasicBlock(3, 3, drop_path=1.0)


def test_residual_join_and_block_argument_errors() -> None:
    with pytest.raises(ValueError, match="project the shortcut"):
        residual_join(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=">= 1"):
        BasicBlock(4, 4, stride=0)
    with pytest.raises(ValueError, match="unknown norm"):
        Bottleneck(4, 4, norm="batchnorm")
    with pytest.raises(ValueError, match="input channels"):
        BasicBlock(4, 4)(torch.randn(1, 3, 5, 5))


def test_layer_specs_are_unique_and_in_family() -> None:
    """Reference: the LayerSpec contract (src/tricklab/layers/spec.py): unique names, family "conv"."""
    names = [s.name for s in LAYER_SPECS]
    assert len(names) == len(set(names)) and all(s.family == "conv" for s in LAYER_SPECS)
    for spec in LAYER_SPECS:
        torch.manual_seed(0)
        layer = spec.build()
        (x,) = spec.example(torch.Generator().manual_seed(0))
        assert torch.isfinite(layer(x)).all()
