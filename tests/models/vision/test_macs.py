"""MAC counter (tricklab.models.vision.macs) against hand counts (a small conv net, a depthwise-separable conv, a
strided and a transposed conv, multi-head attention) and against torch.utils.flop_counter (FLOPs / 2) on the
convolutional vision models, where torch's counter covers every operator they use."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from tricklab.layers.attention import MultiHeadAttention
from tricklab.layers.conv import DepthwiseSeparableConv2d
from tricklab.models import build_model
from tricklab.models.vision.macs import MacCounter, count_macs


def test_small_conv_net_equals_the_hand_count() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, stride=2, padding=1),
                        nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    # conv1: 8*8 outputs x 4 channels x (1 * 3*3) = 2304; conv2: 4*4 x 8 x (4 * 9) = 4608; linear: 128 * 10 = 1280
    hand = 8 * 8 * 4 * 9 + 4 * 4 * 8 * 4 * 9 + 128 * 10
    assert hand == 8192
    assert count_macs(net, torch.randn(3, 1, 8, 8)) == hand
    assert count_macs(net, torch.randn(3, 1, 8, 8), per_example=False) == 3 * hand
    with MacCounter() as c:
        net(torch.randn(1, 1, 8, 8))
    assert dict(c.by_op) == {"convolution": 2304 + 4608, "addmm": 1280}


def test_depthwise_transposed_and_attention_hand_counts() -> None:
    sep = DepthwiseSeparableConv2d(4, 6, 3, padding=1)
    # depthwise: 5*5 x 4 x 9 = 900; pointwise: 5*5 x 6 x 4 = 600
    assert count_macs(sep, torch.randn(1, 4, 5, 5)) == 900 + 600
    up = nn.ConvTranspose2d(3, 2, 2, stride=2)
    # every input element (3 x 4 x 4) reaches 2 channels x 2*2 kernel taps
    assert count_macs(up, torch.randn(1, 3, 4, 4)) == 3 * 4 * 4 * 2 * 4
    mha = MultiHeadAttention(8, 2)
    # in-proj 5 x 8 x 24 = 960; scores and mixing 2 heads x 5 x 5 x (4 + 4) = 400; out-proj 5 x 8 x 8 = 320
    assert count_macs(mha, torch.randn(1, 5, 8)) == 960 + 400 + 320


@pytest.mark.parametrize("name", ["resnet", "mobilenetv2", "xception", "convnext"])
def test_conv_models_equal_torch_flop_counter(name: str) -> None:
    model = build_model(name, (1, 28, 28), 10).eval()
    x = torch.randn(2, 1, 28, 28)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    assert count_macs(model, x) == counter.get_total_flops() // 2 // 2  # FLOPs = 2 x MACs; per example


def test_count_restores_training_mode() -> None:
    net = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5)).train()
    assert count_macs(net, torch.randn(4, 3)) == 6
    assert net.training
