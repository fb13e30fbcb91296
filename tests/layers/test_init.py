"""Initialisation: variance scaling's empirical std against its formula, init_model's schemes against torch's
nn.init with the same generator, orthogonality W W^T = I, and LSUV's unit output variances.

References: the Keras VarianceScaling formula Var = scale / n (with the truncated-normal correction
0.8796... = std of N(0, 1) truncated to [-2, 2], recomputed here with scipy.stats.truncnorm); torch.nn.init
functions called directly; torch.nn.init._calculate_fan_in_and_fan_out for fans; the layer outputs recomputed
by an independent forward pass with hooks for LSUV. Initialisers are not differentiable operations, so there are
no gradients to compare; LSUV's output is checked on the model's forward.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import truncnorm
from torch import nn

from tricklab.layers.init import (
    INIT_SCHEMES,
    TRUNC_NORMAL_STD_CORRECTION,
    fans,
    init_model,
    lecun_normal_,
    lsuv_init_,
    variance_scaling_,
    weight_layers,
)


def test_truncation_constant_is_the_truncated_normal_std() -> None:
    """Reference: scipy.stats.truncnorm(-2, 2).std()."""
    assert TRUNC_NORMAL_STD_CORRECTION == pytest.approx(truncnorm(-2, 2).std(), rel=1e-12)


@pytest.mark.parametrize("shape", [(7, 5), (8, 3, 5), (6, 4, 3, 3)])
def test_fans_match_torch(shape: tuple[int, ...]) -> None:
    """Reference: torch.nn.init._calculate_fan_in_and_fan_out."""
    assert fans(torch.empty(shape)) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="at least 2 dims"):
        fans(torch.empty(5))


@pytest.mark.parametrize("distribution", ["truncated_normal", "normal", "uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
def test_variance_scaling_empirical_std_matches_formula(mode: str, distribution: str) -> None:
    """Reference: std = sqrt(scale / n), n = fan_in / fan_out / (fan_in + fan_out) / 2 (Keras VarianceScaling).
    120k draws: the sample std is within ~0.5% of the truth; 2% tolerance."""
    w = torch.empty(200, 30, 4, 5)  # fan_in = 30 * 20 = 600, fan_out = 200 * 20 = 4000
    scale = 2.0
    variance_scaling_(w, scale, mode, distribution, generator=torch.Generator().manual_seed(0))
    n = {"fan_in": 600, "fan_out": 4000, "fan_avg": 2300}[mode]
    std = math.sqrt(scale / n)
    assert w.std().item() == pytest.approx(std, rel=0.02)
    assert abs(w.mean().item()) < 0.02 * std
    if distribution == "truncated_normal":  # support [-2 sigma', 2 sigma'], sigma' = std / 0.8796...
        assert w.abs().max().item() <= 2 * std / TRUNC_NORMAL_STD_CORRECTION + 1e-7
    if distribution == "uniform":  # U(-a, a), a = sqrt(3) std, and it fills the interval
        a = math.sqrt(3) * std
        assert w.abs().max().item() <= a and w.abs().max().item() > 0.99 * a


def test_variance_scaling_bad_arguments() -> None:
    w = torch.empty(3, 4)
    with pytest.raises(ValueError, match="mode"):
        variance_scaling_(w, mode="fan_mid")
    with pytest.raises(ValueError, match="distribution"):
        variance_scaling_(w, distribution="cauchy")
    with pytest.raises(ValueError, match="scale"):
        variance_scaling_(w, scale=0)
    with pytest.raises(TypeError):
        variance_scaling_([1.0])  # type: ignore[arg-type]


def test_lecun_normal_std() -> None:
    """Reference: N(0, 1/fan_in): std = 1/sqrt(fan_in), not truncated (max beyond 2 std with 160k draws)."""
    w = torch.empty(400, 400)
    lecun_normal_(w, generator=torch.Generator().manual_seed(1))
    assert w.std().item() == pytest.approx(1 / 20, rel=0.02)
    assert w.abs().max().item() > 3 / 20


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 5), nn.Tanh(),
                         nn.Linear(5, 3), nn.LayerNorm(3))


TORCH_REF = {
    "xavier_uniform": lambda w, g: nn.init.xavier_uniform_(w, generator=g),
    "xavier_normal": lambda w, g: nn.init.xavier_normal_(w, generator=g),
    "kaiming_uniform": lambda w, g: nn.init.kaiming_uniform_(w, generator=g),
    "kaiming_normal": lambda w, g: nn.init.kaiming_normal_(w, generator=g),
    "orthogonal": lambda w, g: nn.init.orthogonal_(w, generator=g),
    "lecun_normal": lambda w, g: nn.init.normal_(w, 0.0, 1 / math.sqrt(fans(w)[0]), generator=g),
    "variance_scaling": lambda w, g: nn.init.trunc_normal_(w, 0.0, 1 / math.sqrt(fans(w)[0]) / 0.87962566103423978,
                                                           -2 / math.sqrt(fans(w)[0]) / 0.87962566103423978,
                                                           2 / math.sqrt(fans(w)[0]) / 0.87962566103423978,
                                                           generator=g),
}


@pytest.mark.parametrize("scheme", sorted(INIT_SCHEMES))
def test_init_model_equals_torch_init_with_same_generator(scheme: str) -> None:
    """Reference: the torch.nn.init function (or the N(0, 1/fan_in) / truncated formula) applied layer by
    layer with an identically seeded generator; biases zero; the LayerNorm untouched."""
    torch.manual_seed(0)
    model, ref = _net(), _net()
    ref.load_state_dict(model.state_dict())
    init_model(model, scheme, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    for (_, m), (_, r) in zip(weight_layers(model), weight_layers(ref)):
        TORCH_REF[scheme](r.weight.data, g)
        torch.testing.assert_close(m.weight, r.weight, rtol=0, atol=0)
        assert torch.count_nonzero(m.bias) == 0
    torch.testing.assert_close(model[-1].weight, torch.ones(3))


def test_init_model_passes_scheme_arguments() -> None:
    """Reference: torch.nn.init.kaiming_normal_(mode='fan_out', nonlinearity='relu') and orthogonal gain."""
    torch.manual_seed(0)
    a, b = nn.Linear(6, 4), nn.Linear(6, 4)
    init_model(a, "kaiming_normal", generator=torch.Generator().manual_seed(1), mode="fan_out", nonlinearity="relu")
    nn.init.kaiming_normal_(b.weight, mode="fan_out", nonlinearity="relu", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)
    init_model(a, "orthogonal", gain=2.0)
    torch.testing.assert_close(a.weight @ a.weight.T, 4.0 * torch.eye(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(4, 9), (9, 4), (6, 2, 3, 3)])
def test_orthogonal_weights_are_orthonormal(shape: tuple[int, ...]) -> None:
    """Reference: W W^T = I (rows <= cols) or W^T W = I (rows > cols), W flattened to (out, fan_in)."""
    layer = nn.Linear(shape[1], shape[0]) if len(shape) == 2 else nn.Conv2d(shape[1], shape[0], shape[2])
    init_model(layer, "orthogonal", generator=torch.Generator().manual_seed(0))
    w = layer.weight.detach().reshape(shape[0], -1).double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(gram, torch.eye(gram.shape[0], dtype=torch.float64), atol=1e-6, rtol=0)


def test_init_model_default_and_errors() -> None:
    """'default' restores torch's own reset_parameters (reference: a layer reset with the same global seed)."""
    lin = nn.Linear(5, 3)
    init_model(lin, "orthogonal")
    torch.manual_seed(7)
    init_model(lin, "default")
    ref = nn.Linear(5, 3)
    torch.manual_seed(7)
    ref.reset_parameters()
    torch.testing.assert_close(lin.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(lin.bias, ref.bias, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown init scheme 'he'"):
        init_model(lin, "he")
    with pytest.raises(TypeError, match="does not accept"):
        init_model(lin, "xavier_uniform", mode="fan_in")
    with pytest.raises(TypeError, match="no arguments"):
        init_model(lin, "default", gain=2.0)
    with pytest.raises(TypeError):
        init_model(lin.weight, "orthogonal")  # type: ignore[arg-type]


def _layer_output_vars(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Independent check: one eval-mode forward with hooks on every Linear/Conv, population variance."""
    out: dict[str, float] = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, float(o.var(correction=0))))
               for n, m in weight_layers(model)]
    model.eval()
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


class _Shuffled(nn.Module):
    """Registration order (head, conv) differs from forward order (conv, head)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(8 * 4, 3)
        self.conv = nn.Conv1d(2, 8, 3, padding=1)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(torch.relu(self.bn(self.conv(x))))
        return self.head(nn.functional.max_pool1d(h, 2).flatten(1))


def test_lsuv_gives_unit_output_variance_per_layer() -> None:
    """Reference: each Linear/Conv output's variance on the batch, recomputed by an independent forward,
    within tol of 1 (Mishkin & Matas 2016, Algorithm 1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32),
                          nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(128, 10) * 3.0
    results = lsuv_init_(model, x, tol=0.05, generator=torch.Generator().manual_seed(0))
    assert [r["layer"] for r in results] == ["0", "2", "4", "6"]
    assert all(r["converged"] and 1 <= r["iterations"] <= 10 for r in results)
    got = _layer_output_vars(model, x)
    for r in results:
        assert abs(got[r["layer"]] - 1.0) < 0.05
        assert got[r["layer"]] == pytest.approx(r["variance"], rel=1e-5)
    assert all(torch.count_nonzero(m.bias) == 0 for _, m in weight_layers(model))


def test_lsuv_forward_order_mode_and_buffers() -> None:
    """Forward order, not registration order; the model's train mode comes back; BatchNorm running
    statistics are not touched by LSUV's forwards."""
    torch.manual_seed(0)
    model = _Shuffled()
    model.train()
    bn_before = model.bn.running_mean.clone()
    x = torch.randn(16, 2, 8)
    results = lsuv_init_(model, x)
    assert [r["layer"] for r in results] == ["conv", "head"]
    assert model.training
    torch.testing.assert_close(model.bn.running_mean, bn_before, rtol=0, atol=0)
    got = _layer_output_vars(model, x)
    assert all(abs(v - 1.0) < 0.1 for v in got.values())


def test_lsuv_with_nonzero_bias_iterates() -> None:
    """orthogonal=False keeps the current weights and biases: varied biases need several rescalings, and
    the loop still ends within tol of 1 (reference: the independent forward)."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 20)
    nn.init.uniform_(lin.bias, -0.8, 0.8)  # a per-unit spread (variance 0.21 < 1) that W does not scale
    x = torch.randn(64, 6) * 5
    (r,) = lsuv_init_(lin, x, tol=0.01, max_iters=50, orthogonal=False)
    assert r["converged"] and r["iterations"] > 1
    assert abs(_layer_output_vars(lin, x)[""] - 1.0) < 0.01


def test_lsuv_bad_input() -> None:
    with pytest.raises(ValueError, match="no Linear or Conv"):
        lsuv_init_(nn.Sequential(nn.ReLU()), torch.randn(2, 3))
    with pytest.raises(ValueError, match="tol"):
        lsuv_init_(nn.Linear(2, 2), torch.randn(2, 2), tol=0)
    with pytest.raises(ValueError, match="max_iters"):
        lsuv_init_(nn.Linear(2, 2), torch.randn(2, 2), max_iters=0)

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.a(x)

    results = lsuv_init_(Unused(), torch.randn(8, 3))  # an unused layer is simply not in the forward order
    assert [r["layer"] for r in results] == ["a"]


def test_lsuv_reports_a_layer_it_cannot_normalise() -> None:
    """Output variance = s^2 Var(W x) + Var(b) over units: with Var(b) = 4/3 > 1 (U(-2, 2)) no rescaling of W
    reaches 1, so the loop stops at max_iters and says converged=False (reference: that formula)."""
    torch.manual_seed(0)
    lin = nn.Linear(6, 50)
    nn.init.uniform_(lin.bias, -2.0, 2.0)
    (r,) = lsuv_init_(lin, torch.randn(32, 6), tol=0.05, max_iters=5, orthogonal=False)
    assert r["iterations"] == 5 and not r["converged"] and r["variance"] > 1.05
