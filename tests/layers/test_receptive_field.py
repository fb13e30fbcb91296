"""Tests for tricklab.layers.receptive_field.

Reference: the empirical receptive field, i.e. the set of input positions where the gradient of one output unit
is non-zero, in stacks whose weights are positive constants and whose pooling is averaging (no cancellation, so
every position inside the field has a non-zero gradient). The recurrence's field for that unit,
[start + u*jump - (size-1)/2, start + u*jump + (size-1)/2], must be exactly the span of that support for units
whose field lies inside the input, and must contain it (clipped to the input) at the border, where the zero padding
of intermediate maps can cut the support short.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from tricklab.layers.conv import DepthwiseSeparableConv2d, DilatedStack
from tricklab.layers.deform import DeformConv2d
from tricklab.layers.receptive_field import (
    LayerRF,
    input_gradient_support,
    print_receptive_fields,
    receptive_field,
)

DT = torch.float64


def _positive(model: nn.Module) -> nn.Module:
    # constant positive weights, zero bias: every path from input to output carries a positive product
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.fill_(0.0 if name.endswith("bias") else 0.1)
    return model.to(DT).eval()


STACKS_1D: dict[str, Callable[[], nn.Module]] = {
    "conv_pool": lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.AvgPool1d(2), nn.Conv1d(2, 2, 3)),
    "strided_dilated": lambda: nn.Sequential(nn.Conv1d(1, 2, 3, stride=2, padding=1), nn.Conv1d(2, 2, 3, dilation=2),
                                             nn.AvgPool1d(3, stride=2, padding=1), nn.Conv1d(2, 1, 5, stride=3)),
    "even_kernels": lambda: nn.Sequential(nn.Conv1d(1, 2, 4, stride=2, padding=1), nn.Conv1d(2, 2, 2),
                                          nn.AvgPool1d(2, stride=1), nn.Conv1d(2, 1, 3, padding="same", dilation=3)),
    "dilated_stack": lambda: DilatedStack(1, (1, 2, 4, 8), 3, dim=1, norm="none"),
}


@pytest.mark.parametrize("name", list(STACKS_1D))
def test_1d_field_equals_input_gradient_support_for_every_unit(name: str) -> None:
    """Reference: input-gradient support of every output unit (positive weights, average pooling)."""
    model = _positive(STACKS_1D[name]())
    length = 64
    fields = receptive_field(model, (1, 1, length))
    last = fields[-1]
    (out_len,) = last.output_shape
    assert model(torch.ones(1, 1, length, dtype=DT)).shape[-1] == out_len
    interior = 0
    for u in range(out_len):
        ((lo, hi),) = last.region((u,))
        assert float(lo).is_integer() and float(hi).is_integer()
        ((s_lo, s_hi),) = input_gradient_support(model, (1, 1, length), (u,))
        if 0 <= lo and hi <= length - 1:  # field inside the input: the support spans it exactly
            interior += 1
            assert (s_lo, s_hi) == (lo, hi), (name, u, last)
        else:  # at the border, zero padding of intermediate maps can cut the support short of the clipped field
            assert max(0, lo) <= s_lo and s_hi <= min(length - 1, hi), (name, u, last)
    assert interior >= out_len // 3


def test_dilated_stack_field_is_one_plus_k_minus_one_times_sum_of_dilations() -> None:
    """Reference: Yu & Koltun 2016's closed form r = 1 + (k-1) * sum(d) = 1 + 2 * 15 = 31 for k=3, d=(1,2,4,8)."""
    fields = receptive_field(DilatedStack(2, (1, 2, 4, 8), 3, dim=1), (2, 2, 50))
    assert [f.size for f in fields] == [(1 + 2 * sum((1, 2, 4, 8)[:i + 1]),) for i in range(4)]
    assert fields[-1].size == (31,) and fields[-1].jump == (1,) and fields[-1].start == (0.0,)


STACKS_2D: dict[str, Callable[[], nn.Module]] = {
    "asymmetric": lambda: nn.Sequential(nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(1, 0)), nn.ReLU(),
                                        nn.AvgPool2d(2), nn.Conv2d(2, 2, 3, dilation=(2, 1), padding=1),
                                        nn.BatchNorm2d(2), nn.Conv2d(2, 1, (1, 3), stride=2)),
    "separable": lambda: nn.Sequential(DepthwiseSeparableConv2d(1, 2, 3, stride=2, padding=1), nn.AvgPool2d(3, 2),
                                       DepthwiseSeparableConv2d(2, 1, 3, dilation=2)),
}


@pytest.mark.parametrize("name", list(STACKS_2D))
def test_2d_field_per_axis_equals_input_gradient_support(name: str) -> None:
    """Reference: input-gradient support (a rectangle) of the centre output unit, per axis; corner units' support
    lies inside their clipped field."""
    model = _positive(STACKS_2D[name]())
    shape = (1, 1, 29, 34)
    last = receptive_field(model, shape)[-1]
    h_out, w_out = last.output_shape
    assert len(last.size) == 2
    centre = (h_out // 2, w_out // 2)
    region = last.region(centre)
    assert all(0 <= lo and hi <= n - 1 for (lo, hi), n in zip(region, shape[2:]))  # an interior unit
    assert input_gradient_support(model, shape, centre) == [(int(lo), int(hi)) for lo, hi in region], (name, last)
    for corner in ((0, 0), (h_out - 1, w_out - 1)):  # clipped fields bound the support at the border
        support = input_gradient_support(model, shape, corner)
        for (s_lo, s_hi), (lo, hi), n in zip(support, last.region(corner), shape[2:]):
            assert max(0, lo) <= s_lo and s_hi <= min(n - 1, hi), (name, corner, last)


def test_max_pool_gradient_support_lies_inside_the_field() -> None:
    """Reference: max pooling passes gradient to one position per window, so the support is a subset of the
    field (and the field is the same as for average pooling with the same geometry)."""
    def make(pool: type[nn.Module]) -> nn.Module:
        return nn.Sequential(nn.Conv1d(1, 2, 3), pool(3, 2), nn.Conv1d(2, 1, 3, dilation=2))
    model = _positive(make(nn.MaxPool1d))
    with torch.no_grad():
        model[0].weight.copy_(torch.rand(model[0].weight.shape, generator=torch.Generator().manual_seed(0)) + 0.1)
    last = receptive_field(model, (1, 1, 40))[-1]
    assert last.size == receptive_field(make(nn.AvgPool1d), (1, 1, 40))[-1].size
    x = torch.rand(1, 1, 40, dtype=DT, generator=torch.Generator().manual_seed(1), requires_grad=True)
    (g,) = torch.autograd.grad(model(x)[0, 0, 5], x)
    support = g[0, 0].nonzero().flatten()
    ((lo, hi),) = last.region((5,))
    assert support.numel() > 0 and lo <= int(support.min()) and int(support.max()) <= hi


def test_known_recurrence_values() -> None:
    """Reference: the recurrence by hand (Araujo et al. 2019): conv k3 -> r 3, j 1, start 1; maxpool k2 s2 -> r 4,
    j 2, start 1.5; conv k3 s2 p1 d2 (k_e 5) -> r 4 + 4*2 = 12, j 4, start 1.5 + (2 - 1)*2 = 3.5; avgpool k3 s2 p1
    -> r 12 + 2*4 = 20, j 8, start 3.5 + (1 - 1)*4 = 3.5."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, 2, 1, 2),
                          nn.AvgPool2d(3, 2, 1))
    fields = receptive_field(model, (1, 1, 32, 32))
    assert [f.name for f in fields] == ["0", "2", "3", "4"]
    assert [f.size[0] for f in fields] == [3, 4, 12, 20]
    assert [f.jump[0] for f in fields] == [1, 2, 4, 8]
    assert [f.start[1] for f in fields] == [1.0, 1.5, 3.5, 3.5]
    assert fields[-1].output_shape == (4, 4)
    assert fields[-1].center((1, 2)) == (3.5 + 8, 3.5 + 16)


def test_model_state_is_untouched_and_head_is_ignored() -> None:
    """Reference: the model's train flag and batch-norm running statistics before and after the call."""
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.BatchNorm1d(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(2, 3))
    model.train()
    before = model[1].running_mean.clone()
    fields = receptive_field(model, (1, 1, 10))
    assert model.training and torch.equal(model[1].running_mean, before)
    # the global pool 8 -> 1 is a whole-factor pool (k = s = 8, field 3 + 7 = 10); Flatten ends the spatial map
    assert [f.kind for f in fields] == ["Conv1d", "AdaptiveAvgPool1d"] and fields[-1].size == (10,)
    # whole-factor adaptive pools are regular pools: 8 -> 2 is k = s = 4
    fields = receptive_field(nn.Sequential(nn.Conv1d(1, 1, 3), nn.AdaptiveAvgPool1d(2)), (1, 1, 10))
    assert fields[-1].kernel == (4,) and fields[-1].size == (3 + 3,)


def test_errors_name_the_problem() -> None:
    class Block(nn.Module):  # residual: the shortcut conv reads the block input, not the previous layer's map
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(1, 1, 3, stride=2, padding=1)
            self.b = nn.Conv1d(1, 1, 1, stride=2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(x)

    with pytest.raises(ValueError, match="not a chain"):
        receptive_field(Block(), (1, 1, 16))
    with pytest.raises(ValueError, match="pointwise="):
        receptive_field(nn.Sequential(nn.Conv1d(1, 1, 3), nn.Upsample(scale_factor=2)), (1, 1, 16))
    fields = receptive_field(nn.Sequential(nn.Conv1d(1, 1, 3), nn.Softplus(), nn.LocalResponseNorm(1)), (1, 1, 16),
                             pointwise=(nn.LocalResponseNorm,))
    assert len(fields) == 1
    with pytest.raises(ValueError, match="DeformConv2d"):  # offsets depend on the input: no fixed field
        receptive_field(nn.Sequential(nn.Conv2d(1, 2, 3), DeformConv2d(2, 2, 3)), (1, 1, 9, 9))
    with pytest.raises(ValueError, match="batch dimension"):
        receptive_field(nn.Conv1d(1, 1, 3), (1, 16))
    with pytest.raises(ValueError, match="whole factor"):
        receptive_field(nn.AdaptiveAvgPool1d(3), (1, 1, 10))
    with pytest.raises(TypeError, match="nn.Module"):
        receptive_field("model", (1, 1, 8))  # type: ignore[arg-type]


def test_print_table_lists_every_layer() -> None:
    """Reference: the computed LayerRF values appear in the printed table, one row per spatial layer."""
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
    buf = io.StringIO()
    table = print_receptive_fields(model, (1, 1, 16, 16), file=buf)
    assert buf.getvalue().strip() == table
    lines = table.splitlines()
    assert len(lines) == 2 + 2 and "rf size" in lines[0] and "MaxPool2d" in lines[3] and "4x4" in lines[3]
    fields = receptive_field(model, (1, 1, 16, 16))
    assert all(isinstance(f, LayerRF) for f in fields)
    assert print_receptive_fields(fields, file=io.StringIO()) == table
    assert math.isclose(fields[-1].start[0], 1.5)
