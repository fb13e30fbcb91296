"""Activations: torch's modules by name and our Swish, against NumPy closed forms (values and derivatives,
float64), plus the self-normalising property of SELU (Klambauer et al. 2017, Theorem 1) in a 50-layer MLP.

References: the closed forms written out in NumPy below (math.erf for the normal CDF), and
torch.autograd.gradcheck (finite differences) for Swish's d/dx and d/dbeta.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.layers.activations import (
    ACTIVATIONS,
    LAYER_SPECS,
    Swish,
    activation_names,
    canonical_activation,
    get_activation,
    swish,
)

SELU_ALPHA = 1.6732632423543772  # Klambauer et al. 2017, eq. (14), alpha_01
SELU_LAMBDA = 1.0507009873554805  # lambda_01
_erf = np.vectorize(math.erf)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _phi(x: np.ndarray) -> np.ndarray:  # standard normal density
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _Phi(x: np.ndarray) -> np.ndarray:  # standard normal CDF
    return 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))


_C = math.sqrt(2.0 / math.pi)


def _gelu_tanh(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u = _C * (x + 0.044715 * x**3)
    t = np.tanh(u)
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _C * (1 + 3 * 0.044715 * x * x)


def _mish(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sp = np.log1p(np.exp(x))  # softplus
    t = np.tanh(sp)
    return x * t, t + x * (1 - t * t) * _sigmoid(x)  # d softplus / dx = sigmoid(x)


# name -> (f(x), f'(x)) in NumPy, default constructor arguments
CLOSED_FORMS = {
    "relu": lambda x: (np.maximum(x, 0), (x > 0).astype(float)),
    "leaky_relu": lambda x: (np.where(x > 0, x, 0.01 * x), np.where(x > 0, 1.0, 0.01)),
    "prelu": lambda x: (np.where(x > 0, x, 0.25 * x), np.where(x > 0, 1.0, 0.25)),  # torch's init slope 0.25
    "elu": lambda x: (np.where(x > 0, x, np.expm1(x)), np.where(x > 0, 1.0, np.exp(x))),
    "selu": lambda x: (SELU_LAMBDA * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)),
                       SELU_LAMBDA * np.where(x > 0, 1.0, SELU_ALPHA * np.exp(x))),
    "silu": lambda x: (x * _sigmoid(x), _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
    "swish": lambda x: (x * _sigmoid(x), _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),  # beta = 1
    "gelu": lambda x: (x * _Phi(x), _Phi(x) + x * _phi(x)),
    "gelu_tanh": _gelu_tanh,
    "mish": _mish,
    "tanh": lambda x: (np.tanh(x), 1 - np.tanh(x) ** 2),
    "sigmoid": lambda x: (_sigmoid(x), _sigmoid(x) * (1 - _sigmoid(x))),
    "identity": lambda x: (x, np.ones_like(x)),
}


def test_every_registered_activation_has_a_closed_form_here() -> None:
    assert set(CLOSED_FORMS) == set(activation_names())


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_activation_values_and_derivatives_match_numpy(name: str) -> None:
    """Reference: the NumPy closed form f and its derivative f' (float64), on x ~ N(0, 2^2) away from 0."""
    rng = np.random.default_rng(0)
    x_np = rng.normal(0.0, 2.0, size=(64,))
    x_np = x_np[np.abs(x_np) > 1e-3]  # the ReLU kinks: derivative undefined at 0
    x = torch.tensor(x_np, requires_grad=True)
    module = get_activation(name).double()
    y = module(x)
    (dx,) = torch.autograd.grad(y.sum(), x)  # d sum f(x_i) / dx_i = f'(x_i)
    f, df = CLOSED_FORMS[name](x_np)
    np.testing.assert_allclose(y.detach().numpy(), f, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx.numpy(), df, rtol=1e-9, atol=1e-12)


def test_selu_constants_are_torch_s() -> None:
    """Reference: the paper's constants; torch's SELU(x) for x < 0 is lambda * alpha * (e^x - 1)."""
    x = torch.tensor([-1.0, 1.0], dtype=torch.float64)
    y = nn.SELU()(x)
    assert y[1].item() == pytest.approx(SELU_LAMBDA, abs=1e-15)
    assert y[0].item() == pytest.approx(SELU_LAMBDA * SELU_ALPHA * math.expm1(-1.0), rel=1e-14)


def test_prelu_slope_gradient_matches_closed_form() -> None:
    """Reference: d/da sum PReLU_a(x) = sum over x < 0 of x (NumPy)."""
    x_np = np.random.default_rng(1).standard_normal(50)
    m = get_activation("prelu").double()
    (da,) = torch.autograd.grad(m(torch.tensor(x_np)).sum(), m.weight)
    np.testing.assert_allclose(da.numpy(), [x_np[x_np < 0].sum()], rtol=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 2.5])
def test_swish_values_and_gradients_match_numpy(beta: float) -> None:
    """Reference: NumPy swish = x s, d/dx = s + beta x s (1 - s), d/dbeta = x^2 s (1 - s), s = sigmoid(beta x)."""
    x_np = np.random.default_rng(2).normal(0.0, 2.0, size=40)
    x = torch.tensor(x_np, requires_grad=True)
    b = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
    y = swish(x, b)
    dx, db = torch.autograd.grad(y.sum(), (x, b))
    s = _sigmoid(beta * x_np)
    np.testing.assert_allclose(y.detach().numpy(), x_np * s, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx.numpy(), s + beta * x_np * s * (1 - s), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(db.item(), np.sum(x_np**2 * s * (1 - s)), rtol=1e-10)
    # a Python-float beta gives the same values (the beta = 1 path uses torch's silu kernel)
    np.testing.assert_allclose(swish(x.detach(), beta).numpy(), x_np * s, rtol=1e-12, atol=1e-14)


def test_swish_gradcheck_float64() -> None:
    """Reference: finite differences (torch.autograd.gradcheck) for d/dx and d/dbeta."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swish, (x, b))
    assert torch.autograd.gradgradcheck(swish, (x, b))


def test_learnable_swish_module_trains_beta() -> None:
    """Reference: d/dbeta from the NumPy closed form; Swish(1.0) equals torch's SiLU."""
    torch.manual_seed(0)
    m = Swish(beta=0.7, learnable=True)
    assert [n for n, _ in m.named_parameters()] == ["beta"]
    x = torch.randn(4, 6)
    (db,) = torch.autograd.grad(m(x).sum(), m.beta)
    xn = x.double().numpy()
    s = _sigmoid(0.7 * xn)
    np.testing.assert_allclose(db.item(), np.sum(xn**2 * s * (1 - s)), rtol=1e-4)
    fixed = Swish(beta=1.0)
    assert list(fixed.parameters()) == []
    torch.testing.assert_close(fixed(x), nn.SiLU()(x), rtol=0, atol=0)
    assert "learnable=True" in repr(m)


def test_get_activation_names_aliases_and_kwargs() -> None:
    a, b = get_activation("prelu"), get_activation("prelu")
    assert a is not b and a.weight is not b.weight  # fresh parameters per layer
    assert isinstance(get_activation("Leaky-ReLU", negative_slope=0.2), nn.LeakyReLU)
    assert get_activation("leaky_relu", negative_slope=0.2).negative_slope == 0.2
    assert get_activation("gelu_tanh").approximate == "tanh"
    assert get_activation("gelu").approximate == "none"
    sw = get_activation("swish", beta=2.0, learnable=True)
    assert isinstance(sw, Swish) and sw.learnable
    assert isinstance(get_activation(nn.Tanh), nn.Tanh)
    assert canonical_activation("none") == "identity"
    assert set(ACTIVATIONS) == set(activation_names())


def test_get_activation_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown activation 'mishh'.*mish"):
        get_activation("mishh")
    with pytest.raises(TypeError, match="name such as 'relu'"):
        get_activation(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="does not accept"):
        get_activation("relu", slope=2)
    with pytest.raises(TypeError):
        Swish(beta="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        swish([1.0, 2.0])  # type: ignore[arg-type]


def test_layer_specs_are_unique_and_build() -> None:
    names = [s.name for s in LAYER_SPECS]
    assert len(names) == len(set(names))
    assert {"relu", "leaky_relu", "prelu", "elu", "selu", "silu", "gelu", "gelu_tanh", "mish", "swish"} <= set(names)
    assert all(s.family == "activations" for s in LAYER_SPECS)


def _deep_mlp_stats(act: nn.Module, depth: int = 50, width: int = 256, batch: int = 512) -> tuple[float, float]:
    """Mean and variance of the last layer's activations of a plain MLP with LeCun normal init
    (W ~ N(0, 1/fan_in), b = 0) on standard-normal input."""
    g = torch.Generator().manual_seed(0)
    h = torch.randn(batch, width, generator=g)
    with torch.no_grad():
        for _ in range(depth):
            w = torch.randn(width, width, generator=g) / math.sqrt(width)  # N(0, 1/fan_in)
            h = act(h @ w.T)
    return float(h.mean()), float(h.var())


def test_selu_self_normalises_a_50_layer_mlp_and_relu_collapses() -> None:
    """Reference: SELU's fixed point (mean 0, variance 1) of Klambauer et al. 2017, Theorem 1, vs ReLU under
    the same init, whose second moment halves each layer: E[relu(z)^2] = Var(z) / 2, so 50 layers scale the
    variance by about 2^-50."""
    mean, var = _deep_mlp_stats(nn.SELU())
    assert abs(mean) < 0.1 and 0.8 < var < 1.2, (mean, var)
    _, relu_var = _deep_mlp_stats(nn.ReLU())
    assert relu_var < 1e-6, relu_var  # collapsed: 2^-50 ~ 1e-15 times the input's
