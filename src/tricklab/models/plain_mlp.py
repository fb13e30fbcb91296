"""A deep plain MLP: ``depth`` Linear layers with an activation between them, no normalisation, no skips.

The model the initialisation and activation experiments need: with nothing but the init and the activation to
keep the signal alive, a 30-layer ReLU MLP with torch's default init lets activations and gradients vanish,
while SELU + LeCun normal (Klambauer et al. 2017) or LSUV (Mishkin & Matas 2016) keep them at unit scale.

    x (B, D) -> Linear(D, W) -> act -> [Linear(W, W) -> act] x (depth - 2) -> Linear(W, C) -> logits (B, C)

Inputs of any shape ``(B, *input_shape)`` are flattened.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.layers.activations import canonical_activation, get_activation
from tricklab.layers.init import INIT_SCHEMES, init_model
from tricklab.models import MODELS, as_shape, check_positive


class PlainMLP(nn.Module):
    """``depth`` Linear layers (depth >= 1) of width ``width`` with ``activation`` between them."""

    def __init__(self, in_features: int, num_classes: int, depth: int = 30, width: int = 64,
                 activation: str = "relu", init: str = "default") -> None:
        super().__init__()
        self.in_features = in_features
        dims = [in_features] + [width] * (depth - 1) + [num_classes]  # depth + 1 sizes -> depth layers
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(get_activation(activation))  # a fresh module per layer (PReLU has parameters)
        self.net = nn.Sequential(*layers)
        if init != "default":
            init_model(self, init)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.reshape(x.shape[0], -1))  # (B, *shape) -> (B, D) -> (B, C)


@MODELS.register("plain_mlp", summary="Deep plain MLP (no norm, no skip): depth x Linear(width) + activation; "
                                      "for init/activation studies.")
def plain_mlp(input_shape: tuple[int, ...], num_classes: int, depth: int = 30, width: int = 64,
              activation: str = "relu", init: str = "default") -> nn.Module:
    """Deep plain MLP (no norm, no skip): ``depth`` Linear layers of ``width`` with ``activation`` between.

    ``init``: ``"default"`` (torch's) or any :func:`tricklab.layers.init.init_model` scheme (``"lecun_normal"``
    with ``activation="selu"`` gives a self-normalising network).
    """
    shape = as_shape(input_shape, model="plain_mlp", ndim=(1, 2, 3))
    check_positive("plain_mlp", num_classes=num_classes, depth=depth, width=width)
    try:
        canonical_activation(activation)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model 'plain_mlp': {exc}") from None
    if not isinstance(init, str) or (init.lower() != "default" and init.lower() not in INIT_SCHEMES):
        raise ConfigError(f"model 'plain_mlp': unknown init {init!r}; choose one of default, "
                          f"{', '.join(INIT_SCHEMES)}")
    return PlainMLP(math.prod(shape), num_classes, depth=depth, width=width, activation=activation,
                    init=init.lower())
