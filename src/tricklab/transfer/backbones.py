"""Small backbones (inputs -> (B, feature_dim) features) for pretraining and transfer on MNIST-1D and
Fashion-MNIST, and a classifier that puts a linear head on one."""

from __future__ import annotations

from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = ["Classifier", "image_encoder", "make_encoder", "signal_encoder"]


def signal_encoder(length: int = 40, width: int = 32, feature_dim: int = 128) -> nn.Sequential:
    """(B, L) or (B, 1, L) -> (B, feature_dim): three Conv1d-BN-ReLU blocks (strides 1, 2, 2), flatten, Linear."""
    out_len = (length + 1) // 2
    out_len = (out_len + 1) // 2
    return nn.Sequential(
        nn.Unflatten(1, (1, length)),  # (B, L) -> (B, 1, L)
        nn.Conv1d(1, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),  # (B, w, L)
        nn.Conv1d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm1d(2 * width), nn.ReLU(),  # (B, 2w, L/2)
        nn.Conv1d(2 * width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm1d(2 * width), nn.ReLU(),  # L/4
        nn.Flatten(), nn.Linear(2 * width * out_len, feature_dim), nn.ReLU(),
    )


def image_encoder(channels: int = 1, width: int = 32, feature_dim: int = 128) -> nn.Sequential:
    """(B, C, 28, 28) -> (B, feature_dim): three Conv2d-BN-ReLU blocks (strides 1, 2, 2), global average, Linear."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, feature_dim), nn.ReLU(),
    )


def make_encoder(input_shape: tuple[int, ...], width: int = 32, feature_dim: int = 128) -> nn.Sequential:
    """The encoder for one example's shape: ``(L,)`` a signal, ``(C, H, W)`` an image."""
    if len(input_shape) == 1:
        return signal_encoder(input_shape[0], width, feature_dim)
    if len(input_shape) == 3:
        return image_encoder(input_shape[0], width, feature_dim)
    raise ConfigError(f"no encoder for inputs of shape {input_shape}: give (L,) signals or (C, H, W) images")


class Classifier(nn.Module):
    """``head(encoder(x))``."""

    def __init__(self, encoder: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))
