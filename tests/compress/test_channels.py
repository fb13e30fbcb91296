"""Structured channel pruning (tricklab.compress.channels). Reference: the masked network (the same weights, the
consumers' inputs from removed channels zeroed), the slow path that removal must reproduce; outputs and the
gradients of every kept weight are compared. The kept channels are checked against a NumPy ranking of filter L1
norms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.compress.channels import channel_groups, mask_channels, prune_channels
from tricklab.errors import ConfigError
from tricklab.models import build_model


def _trained_like(model: nn.Module, seed: int) -> nn.Module:
    """Random BN statistics and affine parameters, as after training (fresh ones would hide a slicing bug)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


MODELS = {
    "mlp": ((40,), {}),
    "plain_mlp": ((40,), {"depth": 4, "width": 16}),
    "cnn": ((40,), {}),
    "cnn2d": ((1, 12, 12), {"channels": [6, 8], "pool_size": 2}),
    "cnn2d_dropblock": ((1, 12, 12), {"channels": [6, 8], "drop_block": 0.1}),
}


def _model(key: str) -> tuple[nn.Module, torch.Tensor]:
    shape, args = MODELS[key]
    torch.manual_seed(0)
    model = build_model(key.split("_dropblock")[0], shape, 5, **args)
    return _trained_like(model, 1), torch.randn(7, *shape)


@pytest.mark.parametrize("key", list(MODELS))
@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_channel_pruned_net_equals_the_masked_net(key: str, fraction: float) -> None:
    model, x = _model(key)
    small, kept = prune_channels(model, fraction)
    masked = mask_channels(model, kept)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    xs, xm = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_small, out_masked = small(xs), masked(xm)
    torch.testing.assert_close(out_small, out_masked, rtol=1e-5, atol=1e-5)
    out_small.square().sum().backward()
    out_masked.square().sum().backward()
    torch.testing.assert_close(xs.grad, xm.grad, rtol=1e-5, atol=1e-5)
    # the gradient of each kept weight equals the gradient of the same weight in the masked net
    rows: dict[str, torch.Tensor] = {}
    cols: dict[str, torch.Tensor] = {}
    for g in channel_groups(model):
        rows[g.producer] = kept[g.producer]
        cols[g.consumer] = (kept[g.producer][:, None] * g.per_channel + torch.arange(g.per_channel)).flatten()
    for name in rows.keys() | cols.keys():
        full = masked.get_submodule(name).weight.grad
        full = full[rows[name]] if name in rows else full
        full = full[:, cols[name]] if name in cols else full
        torch.testing.assert_close(small.get_submodule(name).weight.grad, full, rtol=1e-5, atol=1e-5)


def test_kept_channels_are_the_largest_filter_l1_norms() -> None:
    model, _ = _model("cnn")
    _, kept = prune_channels(model, 0.5)
    for name in ("conv1", "conv2", "conv3"):
        w = model.get_submodule(name).weight.detach().numpy()
        norms = np.abs(w).reshape(w.shape[0], -1).sum(1)
        keep = w.shape[0] - round(0.5 * w.shape[0])
        expected = np.sort(np.argsort(-norms, kind="stable")[:keep])
        np.testing.assert_array_equal(kept[name].numpy(), expected)


def test_groups_of_the_cnn2d_rewire_its_batch_norms_and_the_flattened_linear() -> None:
    model, _ = _model("cnn2d")
    groups = channel_groups(model)
    assert [(g.producer, g.norm, g.consumer, g.per_channel) for g in groups] == [
        ("features.0", "features.1", "features.4", 1), ("features.4", "features.5", "fc", 4)]
    small, _ = prune_channels(model, 0.5)
    assert small.features[1].num_features == 3 and small.fc.in_features == 4 * 4


def test_residual_networks_are_refused_with_the_reason() -> None:
    model = build_model("resnet1d", (40,), 5)
    with pytest.raises(ConfigError, match="residual"):
        prune_channels(model, 0.5)
    with pytest.raises(ConfigError, match="fraction"):
        prune_channels(build_model("mlp", (40,), 5), 1.0)
