"""LoRA: zero-initialised B equals the base layer; merged equals unmerged; the update equals the closed form.

References: the base ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` themselves (torch built-ins), and the slow path
of LoRA's eq. (3) written out: a functional linear / convolution with the explicit weight ``W0 + (alpha/r) B A``
(for convolutions the product is built with Python loops over output and input channels), differentiated by
autograd, for outputs and for the gradients of x, A and B.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError
from tricklab.transfer import (LoRAConv, LoRALinear, count_parameters, inject_lora, merge_lora,
                               unmerge_lora)


def _randomize_b(layer: LoRALinear | LoRAConv, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_b.copy_(torch.randn(layer.lora_b.shape, generator=g, dtype=layer.lora_b.dtype) * 0.3)


def _slow_conv_delta(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    out = torch.zeros(b.shape[0], *a.shape[1:], dtype=a.dtype)
    for o in range(b.shape[0]):
        for r in range(a.shape[0]):
            out[o] = out[o] + b.flatten(1)[o, r] * a[r]
    return scaling * out


def check_same_output_and_grads(f, g, x: torch.Tensor, params: list[torch.Tensor], atol: float = 1e-10) -> None:
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    w = torch.randn_like(f(x1))
    y1, y2 = f(x1), g(x2)
    torch.testing.assert_close(y1, y2, atol=atol, rtol=1e-9)
    g1 = torch.autograd.grad((y1 * w).sum(), [x1, *params], allow_unused=True)
    g2 = torch.autograd.grad((y2 * w).sum(), [x2, *params], allow_unused=True)
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-9)


def test_zero_b_equals_the_base_linear() -> None:
    torch.manual_seed(0)
    base = nn.Linear(7, 5).double()
    ref = copy.deepcopy(base)
    lora = LoRALinear(base, rank=3, alpha=6.0)
    assert torch.count_nonzero(lora.lora_b) == 0 and torch.count_nonzero(lora.lora_a) > 0
    check_same_output_and_grads(lora, ref, torch.randn(4, 7, dtype=torch.float64), [])


@pytest.mark.parametrize("nd", [1, 2])
def test_zero_b_equals_the_base_conv(nd: int) -> None:
    torch.manual_seed(0)
    base = (nn.Conv1d(3, 4, 5, stride=2, padding=1) if nd == 1 else nn.Conv2d(3, 4, 3, padding=1, dilation=2)).double()
    ref = copy.deepcopy(base)
    x = torch.randn(2, 3, *([11] * nd), dtype=torch.float64)
    check_same_output_and_grads(LoRAConv(base, rank=2), ref, x, [])


def test_linear_matches_the_closed_form_update() -> None:
    torch.manual_seed(0)
    base = nn.Linear(6, 4).double()
    lora = LoRALinear(base, rank=2, alpha=5.0)
    _randomize_b(lora)

    def slow(x: torch.Tensor) -> torch.Tensor:  # eq. (3): h = (W0 + alpha/r B A) x + b
        return F.linear(x, base.weight + (5.0 / 2) * lora.lora_b @ lora.lora_a, base.bias)

    check_same_output_and_grads(lora, slow, torch.randn(3, 6, dtype=torch.float64), [lora.lora_a, lora.lora_b])


@pytest.mark.parametrize("nd", [1, 2])
def test_conv_matches_the_closed_form_update(nd: int) -> None:
    torch.manual_seed(0)
    base = (nn.Conv1d(3, 4, 3, stride=2, padding=2) if nd == 1 else nn.Conv2d(2, 3, 3, stride=1, padding=1)).double()
    lora = LoRAConv(base, rank=2, alpha=3.0)
    _randomize_b(lora)
    conv = F.conv1d if nd == 1 else F.conv2d

    def slow(x: torch.Tensor) -> torch.Tensor:
        w = base.weight + _slow_conv_delta(lora.lora_a, lora.lora_b, 1.5)
        return conv(x, w, base.bias, base.stride, base.padding, base.dilation)

    x = torch.randn(2, base.in_channels, *([9] * nd), dtype=torch.float64)
    check_same_output_and_grads(lora, slow, x, [lora.lora_a, lora.lora_b])


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 8), nn.ReLU(),
                         nn.Linear(8, 3)).double()


def test_merged_forward_equals_unmerged_outputs_and_input_gradients() -> None:
    torch.manual_seed(0)
    net = _net()
    names = inject_lora(net, rank=2, alpha=4.0)
    assert names == ["0", "3", "5"]
    for m in net.modules():
        if isinstance(m, (LoRALinear, LoRAConv)):
            _randomize_b(m)
    unmerged = copy.deepcopy(net)
    base_before = [m.base.weight.clone() for m in net.modules() if isinstance(m, (LoRALinear, LoRAConv))]
    assert merge_lora(net) == 3 and merge_lora(net) == 3  # idempotent: a second merge adds nothing
    x = torch.randn(5, 1, 10, dtype=torch.float64)
    check_same_output_and_grads(net, unmerged, x, [])
    unmerge_lora(net)
    after = [m.base.weight for m in net.modules() if isinstance(m, (LoRALinear, LoRAConv))]
    for a, b in zip(base_before, after):
        torch.testing.assert_close(a, b)
    check_same_output_and_grads(net, unmerged, x, [])


def test_inject_freezes_the_base_and_counts_trained_parameters() -> None:
    torch.manual_seed(0)
    net = _net()
    total = count_parameters(net)["total"]
    inject_lora(net, ["3", "5"], rank=2, trainable=["5.base.bias"])
    counts = count_parameters(net)
    # LoRA factors: layer 3: A (2, 40) + B (8, 2); layer 5: A (2, 8) + B (3, 2); plus the head's bias (3)
    lora = 2 * 40 + 8 * 2 + 2 * 8 + 3 * 2
    assert counts == {"total": total + lora, "trainable": lora + 3}
    trained = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trained == {"3.lora_a", "3.lora_b", "5.lora_a", "5.lora_b", "5.base.bias"}
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(net(torch.randn(4, 1, 10, dtype=torch.float64)), torch.tensor([0, 1, 2, 0])).backward()
    opt.step()
    moved = trained - {"3.lora_a", "5.lora_a"}  # dL/dA = s B^T (...) is zero while B is still zero
    for n, p in net.named_parameters():
        assert (not torch.equal(p, before[n])) == (n in moved), n
    assert all(p.grad is None for n, p in net.named_parameters() if n not in trained)


def test_bad_arguments_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError, match="rank"):
        LoRALinear(nn.Linear(3, 3), rank=0)
    with pytest.raises(ConfigError, match="groups"):
        LoRAConv(nn.Conv1d(4, 4, 3, groups=2))
    with pytest.raises(ConfigError, match="no module matched"):
        inject_lora(_net(), ["nope"])
    with pytest.raises(ConfigError, match="ReLU"):
        inject_lora(_net(), ["1"])
