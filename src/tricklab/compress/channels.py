"""Structured channel pruning: remove whole output channels (neurons, filters) and rewire what follows, so the
model is a smaller dense model and really runs faster.

A *channel group* is a producer layer (linear or convolution) whose output channels are removed, the batch norm
that follows it (its per-channel parameters and running statistics are sliced the same way) and the next linear
or convolution layer, the consumer, whose input channels are removed. Between producer and consumer only
channel-wise operations may sit (activations, dropout, pooling, DropBlock), plus at most one flatten, after which
each channel feeds ``per_channel`` consecutive inputs of a linear layer (``C x L`` maps flatten channel-major).
The last layer (the logits) is never a producer.

Criterion: the L1 norm of each output filter, ``||W[c]||_1`` (Li et al., "Pruning Filters for Efficient ConvNets",
ICLR 2017): the ``n - round(f n)`` filters of largest norm are kept (at least one), in their original order.

Removing channel ``c`` gives exactly the network in which the consumer ignores ``c`` (its input weights for ``c``
set to zero, :func:`mask_channels`): every other activation is computed by the same weights. That is what the
tests check.

Layer order is read from ``nn.Sequential`` containers; the models with their own ``forward`` that this module
knows are tricklab's ``mlp`` / ``plain_mlp`` (``.net``), ``cnn`` (``PaperConvNet1d``) and ``cnn2d`` (``CNN2d``).
Residual networks are refused: a skip connection ties the channels of a whole stage together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tricklab.compress.pruning import MASK, PRUNABLE, check_sparsity
from tricklab.errors import ConfigError
from tricklab.models.cnn1d import MLP, PaperConvNet1d
from tricklab.models.cnn2d import CNN2d
from tricklab.models.plain_mlp import PlainMLP

__all__ = ["ChannelGroup", "channel_groups", "channel_scores", "prune_channels", "mask_channels"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# modules that act on each channel alone and hold no per-channel state (safe between producer and consumer)
_CHANNELWISE_MODULES = ("torch.nn.modules.activation", "torch.nn.modules.pooling", "torch.nn.modules.dropout",
                        "torch.nn.modules.linear", "tricklab.layers.activations", "tricklab.layers.dropout")


@dataclass(frozen=True)
class ChannelGroup:
    """Producer ``producer`` (module name) loses output channels; ``norm`` (or None) and ``consumer`` follow."""

    producer: str
    norm: str | None
    consumer: str
    per_channel: int = 1  # consumer inputs per producer channel (the flattened spatial size, else 1)


def _out_channels(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def _in_channels(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


def _channelwise(m: nn.Module) -> bool:
    no_state = not any(True for _ in m.parameters()) and not any(True for _ in m.buffers())
    return no_state and (isinstance(m, nn.Identity) or type(m).__module__ in _CHANNELWISE_MODULES)


def _leaves(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) in execution order, entering nested ``nn.Sequential`` containers."""
    if isinstance(module, nn.Sequential):
        out = []
        for name, child in module.named_children():
            out += _leaves(f"{prefix}.{name}" if prefix else name, child)
        return out
    return [(prefix, module)]


def _groups_of_sequence(items: list[tuple[str, nn.Module]]) -> list[ChannelGroup]:
    groups: list[ChannelGroup] = []
    producer: tuple[str, nn.Module] | None = None
    norm: str | None = None
    flattened = False
    for name, m in items:
        if isinstance(m, PRUNABLE):
            if producer is not None:
                n_out = _out_channels(producer[1])
                if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.groups != 1:
                    pass  # grouped / depthwise consumer: its channels are tied to its own outputs
                elif flattened and isinstance(m, nn.Linear) and m.in_features % n_out == 0:
                    groups.append(ChannelGroup(producer[0], norm, name, m.in_features // n_out))
                elif not flattened and _in_channels(m) == n_out:
                    groups.append(ChannelGroup(producer[0], norm, name, 1))
            grouped = isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) and m.groups != 1
            producer, norm, flattened = (None if grouped else (name, m)), None, False
        elif producer is not None and isinstance(m, _NORMS) and norm is None and not flattened \
                and m.num_features == _out_channels(producer[1]):
            norm = name
        elif isinstance(m, nn.Flatten) and not flattened:
            flattened = True
        elif not _channelwise(m):
            producer = None  # an operation we cannot see through: the chain breaks here
    return groups


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The channel groups of ``model`` (see the module docstring), in layer order."""
    if isinstance(model, nn.Sequential):
        items = _leaves("", model)
    elif isinstance(model, MLP | PlainMLP):
        items = _leaves("net", model.net)
    elif isinstance(model, PaperConvNet1d):  # relu after each conv, then flatten (forward())
        relu = ("", nn.ReLU())
        items = [("conv1", model.conv1), relu, ("conv2", model.conv2), relu, ("conv3", model.conv3), relu,
                 ("", nn.Flatten()), ("linear", model.linear)]
    elif isinstance(model, CNN2d):
        items = _leaves("features", model.features) + [("pool", model.pool), ("", nn.Flatten()),
                                                        ("dropout", model.dropout), ("fc", model.fc)]
    else:
        raise ConfigError(f"structured channel pruning reads the layer order of nn.Sequential models and of "
                          f"tricklab's mlp, plain_mlp, cnn and cnn2d; {type(model).__name__} is none of them "
                          f"(a residual network ties the channels of a whole stage through its skip connections, "
                          f"which is not supported)")
    groups = _groups_of_sequence(items)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no prunable channel group (a linear/conv layer followed by "
                          f"another through channel-wise operations only)")
    return groups


def channel_scores(model: nn.Module, group: ChannelGroup) -> torch.Tensor:
    """L1 norm of each output filter of the group's producer: (C_out,)."""
    w = model.get_submodule(group.producer).weight.detach()
    return w.abs().flatten(1).sum(1)


def _kept(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    n = scores.numel()
    keep = max(1, n - round(fraction * n))
    order = torch.argsort(scores, descending=True, stable=True)[:keep]
    return order.sort().values  # keep the surviving channels in their original order


def _consumer_columns(keep: torch.Tensor, per_channel: int) -> torch.Tensor:
    # channel c feeds inputs c * per_channel ... (c + 1) * per_channel - 1 (channel-major flatten)
    return (keep[:, None] * per_channel + torch.arange(per_channel)).flatten()


def _slice_param(module: nn.Module, name: str, index: torch.Tensor, dim: int) -> None:
    t = getattr(module, name, None)
    if t is None:
        return
    new = t.detach().index_select(dim, index).clone()
    if isinstance(t, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=t.requires_grad))
    else:
        module._buffers[name] = new


@torch.no_grad()
def _remove(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> None:
    producer = model.get_submodule(group.producer)
    for name in ("weight", "bias", MASK):
        _slice_param(producer, name, keep, 0)
    if isinstance(producer, nn.Linear):
        producer.out_features = keep.numel()
    else:
        producer.out_channels = keep.numel()
    if group.norm is not None:
        norm = model.get_submodule(group.norm)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _slice_param(norm, name, keep, 0)
        norm.num_features = keep.numel()
    consumer = model.get_submodule(group.consumer)
    columns = _consumer_columns(keep, group.per_channel)
    for name in ("weight", MASK):
        _slice_param(consumer, name, columns, 1)
    if isinstance(consumer, nn.Linear):
        consumer.in_features = columns.numel()
    else:
        consumer.in_channels = keep.numel()


def prune_channels(model: nn.Module, fraction: float,
                   groups: list[ChannelGroup] | None = None) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A smaller copy of ``model`` with ``fraction`` of the output channels of every group's producer removed
    (lowest filter L1 norm first). Returns the copy and, per producer, the indices of the channels it kept."""
    fraction = check_sparsity("channel pruning fraction", fraction)
    groups = channel_groups(model) if groups is None else groups
    kept = {g.producer: _kept(channel_scores(model, g), fraction) for g in groups}
    small = copy.deepcopy(model)
    for g in groups:
        _remove(small, g, kept[g.producer])
    return small, kept


@torch.no_grad()
def mask_channels(model: nn.Module, kept: dict[str, torch.Tensor],
                  groups: list[ChannelGroup] | None = None) -> nn.Module:
    """A same-size copy of ``model`` in which every consumer ignores the removed channels (their input weights
    zeroed): the network that :func:`prune_channels` makes smaller without changing what it computes."""
    groups = channel_groups(model) if groups is None else groups
    masked = copy.deepcopy(model)
    for g in groups:
        producer = masked.get_submodule(g.producer)
        drop = torch.ones(_out_channels(producer), dtype=torch.bool)
        drop[kept[g.producer]] = False
        columns = _consumer_columns(drop.nonzero().flatten(), g.per_channel)
        masked.get_submodule(g.consumer).weight[:, columns] = 0.0
    return masked
