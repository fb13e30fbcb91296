"""Small models for the explanation tests, each built from a fixed seed."""

from __future__ import annotations

import torch
from torch import nn

from tricklab.models import build_model


def cnn2d(seed: int = 0, image: int = 12, classes: int = 5) -> nn.Module:
    """tricklab's cnn2d (conv-BN-ReLU-maxpool x 2) with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    m = build_model("cnn2d", (1, image, image), classes, channels=[4, 6])
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(mod.weight)
            nn.init.normal_(mod.bias)
    return m.eval()


def paper_cnn(seed: int = 0, length: int = 40, classes: int = 10) -> nn.Module:
    """The MNIST-1D paper ConvNet (functional torch.relu between its convolutions)."""
    torch.manual_seed(seed)
    return build_model("cnn", (length,), classes).eval()


class PaperCNNModules(nn.Module):
    """The paper ConvNet with nn.ReLU modules instead of torch.relu (same weights): what captum's DeepLift can
    see, since it hooks modules."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.r1, self.r2, self.r3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        h = x.reshape(x.shape[0], n.in_channels, n.length)
        h = self.r3(n.conv3(self.r2(n.conv2(self.r1(n.conv1(h))))))
        return n.linear(h.flatten(1))


def smooth_mlp(seed: int = 0, features: int = 6, classes: int = 3) -> nn.Module:
    """A smooth (tanh / softplus) MLP: integrated gradients' quadrature converges fast on it."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 16), nn.Tanh(), nn.Linear(16, 16), nn.Softplus(),
                         nn.Linear(16, classes)).eval()


def hooks_left(model: nn.Module) -> int:
    """Number of forward / backward / pre-hooks registered on any submodule."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total
