"""plain_mlp: structure, forward and gradients against a slow explicit loop, init schemes, errors, and the
signal-propagation behaviour it exists to show (ReLU + default init vanishes; SELU + LeCun normal does not).

References: an explicit loop of F.linear + the activation function over the model's own parameters (outputs
and every parameter gradient, float64); torch.nn.functional.selu / relu.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError
from tricklab.models import MODELS, build_model
from tricklab.models.plain_mlp import PlainMLP, plain_mlp


def test_registered_with_summary() -> None:
    assert MODELS.get("plain_mlp") is plain_mlp
    assert "plain MLP" in MODELS.summary("plain_mlp")


def test_structure_no_norm_no_skip() -> None:
    m = build_model("plain_mlp", (40,), 10)
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(linears) == 30  # depth
    assert [lin.out_features for lin in linears] == [64] * 29 + [10]
    assert sum(isinstance(x, nn.ReLU) for x in m.modules()) == 29
    assert not any(isinstance(x, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) for x in m.modules())
    one = build_model("plain_mlp", (1, 8), 3, depth=1)
    assert [type(x) for x in one.net] == [nn.Linear] and one(torch.randn(2, 1, 8)).shape == (2, 3)


@pytest.mark.parametrize("activation,fn", [("relu", F.relu), ("selu", F.selu), ("mish", F.mish),
                                           ("gelu_tanh", lambda t: F.gelu(t, approximate="tanh"))])
def test_forward_and_gradients_match_explicit_loop(activation: str, fn) -> None:
    """Reference: h <- act(h W_i^T + b_i) written out with F.linear, last layer without activation."""
    torch.manual_seed(0)
    m = build_model("plain_mlp", (2, 5), 4, depth=5, width=7, activation=activation, init="xavier_normal").double()
    x = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    linears = [lin for lin in m.modules() if isinstance(lin, nn.Linear)]

    def reference(inp: torch.Tensor) -> torch.Tensor:
        h = inp.reshape(3, 10)
        for i, lin in enumerate(linears):
            h = F.linear(h, lin.weight, lin.bias)
            if i < len(linears) - 1:
                h = fn(h)
        return h

    out, ref = m(x), reference(x)
    torch.testing.assert_close(out, ref)
    params = [x, *m.parameters()]
    up = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for a, b in zip(torch.autograd.grad(out, params, up), torch.autograd.grad(ref, params, up)):
        torch.testing.assert_close(a, b)


def test_init_scheme_is_applied() -> None:
    m = build_model("plain_mlp", (16,), 3, depth=4, width=32, activation="selu", init="lecun_normal")
    for lin in (x for x in m.modules() if isinstance(x, nn.Linear)):
        assert torch.count_nonzero(lin.bias) == 0
    # "default" keeps torch's init: non-zero biases
    d = build_model("plain_mlp", (16,), 3, depth=2)
    assert torch.count_nonzero(d.net[0].bias) > 0


def _hidden_std(model: PlainMLP, x: torch.Tensor) -> float:
    """Std over the batch of the last hidden activation, averaged over units: how much of the input survives
    (the biases alone leave a constant vector with zero spread across examples)."""
    with torch.no_grad():
        return float(model.net[:-1](x).std(dim=0).mean())


def test_default_relu_vanishes_while_selu_lecun_keeps_unit_scale() -> None:
    """Reference: the signal-propagation argument (He et al. 2015; Klambauer et al. 2017). torch's default
    Linear init has Var(w) = 1 / (3 fan_in), so a ReLU layer scales the input-dependent second moment by ~1/6:
    after 29 layers ~6^-29 ~ 1e-22 of it is left (std ~1e-11; the measured ~1e-9 includes the bias path);
    SELU + N(0, 1/fan_in) keeps the spread across examples at ~1."""
    torch.manual_seed(0)
    x = torch.randn(256, 64)
    relu = build_model("plain_mlp", (64,), 10)
    selu = build_model("plain_mlp", (64,), 10, activation="selu", init="lecun_normal")
    assert _hidden_std(relu, x) < 1e-6
    assert 0.7 < _hidden_std(selu, x) < 1.3


@pytest.mark.parametrize("kwargs,match", [
    ({"depth": 0}, "depth"),
    ({"width": -3}, "width"),
    ({"activation": "reluu"}, "unknown activation"),
    ({"activation": 3}, "activation"),
    ({"init": "he"}, "unknown init"),
    ({"hidden": 5}, "accepts"),
])
def test_bad_arguments_raise_config_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model("plain_mlp", (40,), 10, **kwargs)
