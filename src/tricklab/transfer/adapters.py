"""Bottleneck adapters: small residual modules inserted after frozen layers, trained per task.

Houlsby et al., "Parameter-Efficient Transfer Learning for NLP", ICML 2019, section 2.1: an adapter projects a
d-dimensional feature down to m << d dimensions, applies a nonlinearity and projects back up, with a skip
connection: ``h <- h + W_up f(W_down h + b_down) + b_up``. ``W_up`` and ``b_up`` start at zero here, so an
adapter starts as the identity and the adapted network equals the pretrained one (the paper's near-identity
initialisation, made exact).

``inject_adapters`` wraps target layers as ``Adapted(layer, adapter)``: ``adapter(layer(x))``. The features are
taken along dimension ``channel_dim``: the last one for a linear layer's (..., d) output, 1 for a convolution's
(N, C, ...) output (the adapter is then pointwise: the same bottleneck at every position).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.transfer.finetune import freeze_except

__all__ = ["Adapted", "BottleneckAdapter", "inject_adapters"]


class BottleneckAdapter(nn.Module):
    """``x + up(act(down(x)))`` along ``channel_dim`` (Houlsby et al. 2019); starts as the identity."""

    def __init__(self, dim: int, bottleneck: int = 16, activation: Callable[[], nn.Module] = nn.ReLU,
                 channel_dim: int = -1) -> None:
        super().__init__()
        if not (isinstance(dim, int) and dim >= 1 and isinstance(bottleneck, int) and bottleneck >= 1):
            raise ConfigError(f"BottleneckAdapter needs positive integer dim and bottleneck, got {dim}, {bottleneck}")
        self.channel_dim = channel_dim
        self.down = nn.Linear(dim, bottleneck)
        self.act = activation()
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = x.movedim(self.channel_dim, -1)  # (..., d): the Linear layers act on the feature dimension
        h = self.up(self.act(self.down(h)))
        return x + h.movedim(-1, self.channel_dim)


class Adapted(nn.Module):
    """``adapter(layer(x))``: a (frozen) layer followed by its adapter."""

    def __init__(self, layer: nn.Module, adapter: BottleneckAdapter) -> None:
        super().__init__()
        self.layer = layer
        self.adapter = adapter

    def forward(self, x: Tensor) -> Tensor:
        return self.adapter(self.layer(x))


def _out_features(name: str, m: nn.Module) -> tuple[int, int]:
    if isinstance(m, nn.Linear):
        return m.out_features, -1
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return m.out_channels, 1
    raise ConfigError(f"inject_adapters: {name!r} is a {type(m).__name__}; give Linear or Conv layers, or wrap "
                      f"it yourself with Adapted(layer, BottleneckAdapter(dim, channel_dim=...))")


def inject_adapters(model: nn.Module, targets: Iterable[str], *, bottleneck: int = 16,
                    trainable: Iterable[str] = ()) -> list[str]:
    """Put a :class:`BottleneckAdapter` after each named layer of ``model`` (in place) and freeze everything
    but the adapters and the parameter-name prefixes in ``trainable`` (names after injection: a wrapped layer's
    weight is ``<name>.layer.weight``; e.g. a new head). Returns the names."""
    names = list(targets)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if not names or missing:
        raise ConfigError(f"inject_adapters: unknown target(s) {missing or names}; names: {list(modules)[1:20]}")
    for name in names:
        layer = modules[name]
        dim, channel_dim = _out_features(name, layer)
        w = next(layer.parameters())
        adapter = BottleneckAdapter(dim, bottleneck, channel_dim=channel_dim).to(w.device, w.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, Adapted(layer, adapter))
    # names after injection: the wrapped layer is <name>.layer, its adapter <name>.adapter
    freeze_except(model, [*trainable, *(f"{n}.adapter." for n in names)])
    return names
