"""The MNIST-1D networks of the uncertainty runs. Reference: tricklab.models.cnn1d.PaperConvNet1d (the paper's
ConvNet) with the same weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.errors import ConfigError
from tricklab.models.cnn1d import PaperConvNet1d
from tricklab.uncertainty.models import mnist1d_cnn, mnist1d_cnn_body


def test_without_dropout_it_is_the_paper_convnet() -> None:
    torch.manual_seed(0)
    ours = mnist1d_cnn()
    ref = PaperConvNet1d(1, 40, 10)
    convs = [m for m in ours if isinstance(m, nn.Conv1d)]
    with torch.no_grad():
        for dst, src in zip([ref.conv1, ref.conv2, ref.conv3, ref.linear], [*convs, ours[-1]]):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    x = torch.randn(4, 40)
    torch.testing.assert_close(ours(x), ref(x))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())


def test_dropout_placement_and_body() -> None:
    model = mnist1d_cnn(dropout=0.2)
    assert sum(isinstance(m, nn.Dropout) for m in model) == 3
    assert isinstance(model[-1], nn.Linear) and isinstance(model[-2], (nn.Dropout, nn.Flatten))
    assert mnist1d_cnn_body()(torch.randn(2, 40)).shape == (2, 125)
    with pytest.raises(ConfigError, match="dropout"):
        mnist1d_cnn(dropout=1.0)
    with pytest.raises(ConfigError, match="too short"):
        mnist1d_cnn(length=1)


def test_mlp_is_the_paper_mlp() -> None:
    """Reference: tricklab.models.cnn1d.MLP (the paper's MLP) with the same weights."""
    from tricklab.models.cnn1d import MLP
    from tricklab.uncertainty.models import mnist1d_mlp

    torch.manual_seed(0)
    ours = mnist1d_mlp()
    ref = MLP(40, 10)
    ref.load_state_dict({f"net.{k}": v for k, v in ours.state_dict().items()})
    x = torch.randn(3, 40)
    torch.testing.assert_close(ours(x), ref(x))
    assert sum(isinstance(m, nn.Dropout) for m in mnist1d_mlp(dropout=0.3)) == 2
