"""RealNVP against references: the log-determinant against ``log |det|`` of the Jacobian from
``torch.func.jacrev`` (float64, small inputs), inverse(forward(x)) = x, the log-likelihood against the
change-of-variables formula computed by brute force and against a zuko (test-only) flow built from the same
coupling transformations, and gradients of the log-likelihood against the brute-force path."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.func import jacrev

from tricklab.errors import ConfigError
from tricklab.paradigms.generative.realnvp import (
    AffineCoupling,
    RealNVP,
    checkerboard_mask,
    dequantize,
    logit_preprocess,
    realnvp_image,
    realnvp_mlp,
    squeeze,
    unsqueeze,
)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights (the builders zero-initialise the last layers, which makes every flow the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def _models() -> list[tuple[RealNVP, tuple[int, ...]]]:
    flat = realnvp_mlp(6, hidden=8, couplings=4).double()
    image = realnvp_image(channels=1, size=4, hidden=4, blocks=2).double()
    _randomize(flat, 0)
    _randomize(image, 1)
    return [(flat, (6,)), (image, (1, 4, 4))]


def _brute_force_log_prob(model: RealNVP, x: Tensor, shape: tuple[int, ...]) -> Tensor:
    """log N(f(x); 0, I) + log |det J_f(x)|, with J_f from jacrev on one example at a time."""
    out = []
    for xi in x:
        def f(v: Tensor) -> Tensor:
            return model(v.view(1, *shape))[0].reshape(-1)
        jac = jacrev(f)(xi.reshape(-1))
        z = f(xi.reshape(-1))
        out.append(-0.5 * (z.pow(2).sum() + z.numel() * math.log(2 * math.pi)) + torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("which", [0, 1], ids=["mlp", "image"])
def test_logdet_equals_jacrev_log_abs_det_and_inverse_round_trips(which: int) -> None:
    model, shape = _models()[which]
    g = torch.Generator().manual_seed(2)
    x = torch.rand((3, *shape), generator=g, dtype=torch.float64) * 0.9 + 0.05
    z, logdet = model(x)
    for i in range(3):
        jac = jacrev(lambda v: model(v.view(1, *shape))[0].reshape(-1))(x[i].reshape(-1))
        sign, ref = torch.linalg.slogdet(jac)
        assert sign != 0
        torch.testing.assert_close(logdet[i], ref)
    torch.testing.assert_close(model.inverse(z), x, atol=1e-10, rtol=1e-10)
    # and the other way round: forward(inverse(z)) = z for z from the base distribution
    z0 = torch.randn((3, *shape), generator=g, dtype=torch.float64)
    torch.testing.assert_close(model(model.inverse(z0))[0], z0, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("which", [0, 1], ids=["mlp", "image"])
def test_log_prob_equals_brute_force_change_of_variables_with_gradients(which: int) -> None:
    model, shape = _models()[which]
    x = torch.rand((4, *shape), generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.9 + 0.05
    ours = model.log_prob(x)
    ref = _brute_force_log_prob(model, x, shape)
    torch.testing.assert_close(ours, ref)
    params = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(ours.sum(), params), torch.autograd.grad(ref.sum(), params)):
        torch.testing.assert_close(a, b)


def test_log_prob_equals_a_zuko_flow_built_from_the_same_couplings() -> None:
    zuko = pytest.importorskip("zuko")
    from torch.distributions import AffineTransform, Independent, Normal

    model = realnvp_mlp(6, hidden=8, couplings=3).double()
    _randomize(model, 4)
    transforms = []
    for layer in model.flows:
        assert isinstance(layer, AffineCoupling)
        mask = layer.mask.bool()

        def meta(x_a: Tensor, layer: AffineCoupling = layer, mask: Tensor = mask) -> object:
            # rebuild the masked input b * x from x_a, run our s/t network, keep the transformed half
            full = x_a.new_zeros((*x_a.shape[:-1], mask.numel()))
            full[..., mask] = x_a
            s, t = layer._s_t(full)
            # one event of the transformed coordinates: the log-determinant is summed over them
            return zuko.transforms.DependentTransform(AffineTransform(t[..., ~mask], torch.exp(s[..., ~mask])), 1)

        transforms.append(zuko.transforms.CouplingTransform(meta, mask))
    base = Independent(Normal(torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)), 1)
    ref_flow = zuko.distributions.NormalizingFlow(zuko.transforms.ComposedTransform(*transforms), base)
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(model.log_prob(x), ref_flow.log_prob(x))


def test_squeeze_logit_and_dequantize() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).view(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    # channel 4c + 2i + j of the output holds pixel (2h + i, 2w + j) of input channel c
    assert y[1, 4 * 2 + 2 * 1 + 0, 1, 2] == x[1, 2, 3, 4]
    torch.testing.assert_close(unsqueeze(y), x)
    # logit preprocessing: log-determinant against jacrev of the elementwise map (diagonal Jacobian)
    u = torch.rand(1, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out, logdet = logit_preprocess(u, 0.05)
    jac = jacrev(lambda v: logit_preprocess(v.view(1, 5), 0.05)[0].reshape(-1))(u.reshape(-1))
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1])
    torch.testing.assert_close(out, torch.logit(0.05 + 0.9 * u))
    k = torch.tensor([0.0, 1.0, 128.0, 255.0]) / 255
    d = dequantize(k.expand(1000, 4), generator=torch.Generator().manual_seed(7))
    lo = torch.tensor([0.0, 1.0, 128.0, 255.0]) / 256
    assert ((d >= lo) & (d < lo + 1 / 256)).all()


def test_image_flow_trains_samples_and_refuses_bad_shapes() -> None:
    torch.manual_seed(0)
    model = realnvp_image(channels=1, size=8, hidden=8, blocks=1)
    x = dequantize(torch.rand(16, 1, 8, 8))
    loss = -model.log_prob(x).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.sample(2).shape == (2, 1, 8, 8)
    assert checkerboard_mask(2, 2).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ConfigError, match="even"):
        realnvp_image(size=7)
    with pytest.raises(ConfigError, match="dim"):
        realnvp_mlp(1)
