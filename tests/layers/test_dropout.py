"""Dropout family: DropBlock, Shakeout, DropPath and the torch dropouts exposed in LAYER_SPECS.

References used below (named again in each test):
* DropBlock: eq. 1 of Ghiasi et al. 2018 written out in Python; NumPy loops that paint block_size squares from the
  same uniform draws; the NumPy closed form of the per-position keep probability (1 - gamma)^n_y, where n_y is
  the number of valid seed positions whose block covers y; exchangeability arguments for the expectation.
* Shakeout: a per-example NumPy / torch loop over the paper's effective weights (Kang et al. 2016, eq. 5, Fig. 1);
  torch.nn.functional.linear for the expectation and the evaluation path.
* DropPath: the closed form x_i * b_i / (1 - p) with b_i read off the output; Monte Carlo mean vs x.
Monte Carlo tolerances are 5 standard errors estimated from the samples themselves.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.layers import dropout as D
from tricklab.layers.dropout import (
    LAYER_SPECS,
    DropBlock,
    DropPath,
    ShakeoutLinear,
    drop_block,
    drop_block_gamma,
    drop_block_mask,
    drop_path,
    shakeout_linear,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_mc_close(samples: torch.Tensor, expected: torch.Tensor, k: float = 5.0) -> None:
    """Assert mean over dim 0 of ``samples`` is within k standard errors (estimated) of ``expected``."""
    n = samples.shape[0]
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(n)
    bound = k * se + 1e-6
    worst = ((mean - expected).abs() / bound).max().item()
    assert ((mean - expected).abs() <= bound).all(), f"Monte Carlo mean off by up to {worst:.2f} x the bound"


# ================================================================================================ DropBlock
@pytest.mark.parametrize(("p", "b", "s"), [(0.1, 7, 14), (0.2, 3, 8), (0.5, 1, 5), (0.3, 5, 5)])
def test_gamma_is_paper_eq1_on_square_maps(p: float, b: int, s: int) -> None:
    """Reference: eq. 1, gamma = (1 - keep_prob) / b^2 * S^2 / (S - b + 1)^2, written out."""
    expected = p / b**2 * s**2 / (s - b + 1) ** 2
    assert drop_block_gamma(p, b, (s, s)) == pytest.approx(expected, rel=1e-12)
    # 1-D: the same formula with exponent d = 1
    assert drop_block_gamma(p, b, (s,)) == pytest.approx(p / b * s / (s - b + 1), rel=1e-12)


def test_gamma_non_square_and_clipped_blocks() -> None:
    """Reference: the per-axis product p * prod S_k / (b_k (S_k - b_k + 1)) with b_k = min(b, S_k)."""
    assert drop_block_gamma(0.2, 3, (6, 9)) == pytest.approx(0.2 * 6 / (3 * 4) * 9 / (3 * 7), rel=1e-12)
    # block wider than an axis: clipped to the axis (one seed position there)
    assert drop_block_gamma(0.2, 5, (3, 8)) == pytest.approx(0.2 * 3 / (3 * 1) * 8 / (5 * 4), rel=1e-12)
    for s in range(1, 12):
        for b in range(1, 9):
            assert drop_block_gamma(0.4, b, (s, s)) <= 0.4 + 1e-12  # b (S - b + 1) >= S


def _paint_numpy(seeds: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Slow reference: start from all-kept and zero the block of every seed (its top-left corner)."""
    spatial = tuple(s + b - 1 for s, b in zip(seeds.shape[2:], sizes))
    keep = np.ones(seeds.shape[:2] + spatial)
    for idx in zip(*np.nonzero(seeds)):
        n, c, *pos = idx
        window = tuple(slice(q, q + b) for q, b in zip(pos, sizes))
        keep[(n, c, *window)] = 0.0
    return keep


@pytest.mark.parametrize("shape", [(2, 3, 9, 7), (3, 2, 17)])
def test_expand_seeds_matches_loop(shape: tuple[int, ...]) -> None:
    """Reference: NumPy loop painting each seed's block; the fast path is a padded stride-1 max pool."""
    b = 3
    seed_shape = shape[:2] + tuple(s - b + 1 for s in shape[2:])
    seeds = (torch.rand(seed_shape, generator=_gen(1)) < 0.15).double()
    sizes = (b,) * (len(shape) - 2)
    got = 1.0 - D._expand_seeds(seeds, sizes)
    np.testing.assert_array_equal(got.numpy(), _paint_numpy(seeds.numpy(), sizes))


@pytest.mark.parametrize(("shape", "b"), [((2, 3, 10, 10), 3), ((2, 2, 6, 9), 4), ((4, 3, 20), 5), ((1, 2, 3, 3), 5)])
def test_mask_matches_slow_reference_from_the_same_draws(shape: tuple[int, ...], b: int) -> None:
    """Reference: the same uniforms (same generator seed) thresholded at eq. 1's gamma, painted by a NumPy loop."""
    p = 0.3
    mask = drop_block_mask(shape, p, b, generator=_gen(3), dtype=torch.float64)
    sizes = tuple(min(b, s) for s in shape[2:])
    gamma = p
    for s, k in zip(shape[2:], sizes):
        gamma *= s / (k * (s - k + 1))
    seed_shape = shape[:2] + tuple(s - k + 1 for s, k in zip(shape[2:], sizes))
    u = torch.rand(seed_shape, generator=_gen(3), dtype=torch.float64)
    ref = _paint_numpy((u < gamma).numpy(), sizes)
    assert mask.shape == shape
    np.testing.assert_array_equal(mask.numpy(), ref)


def _opening_numpy(dropped: np.ndarray, b: int) -> np.ndarray:
    """Union of all b x b windows (inside the map) that are entirely dropped: a morphological opening."""
    out = np.zeros_like(dropped)
    n, c, h, w = dropped.shape
    for i in range(n):
        for j in range(c):
            for y in range(h - b + 1):
                for x in range(w - b + 1):
                    if dropped[i, j, y : y + b, x : x + b].all():
                        out[i, j, y : y + b, x : x + b] = 1
    return out


def test_dropped_units_form_whole_blocks() -> None:
    """The dropped set is exactly a union of full block_size x block_size squares inside the map (NumPy loop):
    no isolated unit and no clipped block at a border, unlike plain dropout."""
    b = 3
    x = torch.ones(4, 3, 11, 11)
    out = drop_block(x, 0.25, b, training=True, generator=_gen(5))
    dropped = (out == 0).numpy().astype(np.int64)
    assert dropped.sum() > 0
    np.testing.assert_array_equal(_opening_numpy(dropped, b), dropped)
    # an independent per-unit (plain dropout) mask fails the same check, so the check has teeth
    plain = (torch.rand(4, 3, 11, 11, generator=_gen(6)) < 0.25).numpy().astype(np.int64)
    assert (_opening_numpy(plain, b) != plain).any()


def _cover_counts(size: int, b: int) -> np.ndarray:
    """Number of valid seed positions (top-left corners 0..S-b) whose block covers each position y."""
    b = min(b, size)
    y = np.arange(size)
    return np.minimum(y, size - b) - np.maximum(0, y - b + 1) + 1


def test_keep_probability_per_position_matches_closed_form() -> None:
    """Reference: NumPy closed form P(keep y) = (1 - gamma)^(n_h(y) n_w(x)) with gamma from eq. 1; Monte Carlo
    over 4000 independent (example, channel) maps. Border units are kept more often than interior ones."""
    h = w = 8
    b, p = 3, 0.3
    masks = drop_block_mask((500, 8, h, w), p, b, generator=_gen(7), dtype=torch.float64).reshape(-1, h, w)
    gamma = drop_block_gamma(p, b, (h, w))
    counts = np.outer(_cover_counts(h, b), _cover_counts(w, b))
    expected = torch.from_numpy((1.0 - gamma) ** counts)
    assert_mc_close(masks, expected)
    assert expected[0, 0] > expected[4, 4]  # the corner is covered by 1 seed position, the centre by 9


def test_expectation_kept_per_position_for_block_size_one() -> None:
    """With block_size 1 all positions are exchangeable, so E[x * M * count / count_ones] = x exactly;
    Monte Carlo over 3000 stacked copies (one call) vs x."""
    x = torch.randn(2, 3, 5, 5, generator=_gen(8), dtype=torch.float64)
    n = 3000
    out = drop_block(x.repeat(n, 1, 1, 1), 0.3, 1, training=True, generator=_gen(9))
    assert_mc_close(out.reshape(n, *x.shape), x)


def test_expectation_kept_for_map_averages_with_blocks() -> None:
    """Every (example, channel) map has the same mask distribution and the normalisation is symmetric in them,
    so for an input constant on each map the map-averaged output is unbiased: E[mean_y out_bc] = x_bc.
    Monte Carlo over 2000 stacked copies vs x (the reference is x itself)."""
    vals = torch.randn(2, 3, 1, 1, generator=_gen(10), dtype=torch.float64)
    x = vals.expand(2, 3, 9, 9)
    n = 2000
    out = drop_block(x.repeat(n, 1, 1, 1), 0.2, 3, training=True, generator=_gen(11))
    assert_mc_close(out.reshape(n, 2, 3, 81).mean(-1), vals.reshape(2, 3))
    # and for a constant tensor the total is preserved exactly on every draw (count / count_ones rescaling)
    one = drop_block(torch.full((2, 3, 9, 9), 2.5, dtype=torch.float64), 0.2, 3, generator=_gen(12))
    assert (one == 0).any()
    torch.testing.assert_close(one.mean(), torch.tensor(2.5, dtype=torch.float64), rtol=1e-12, atol=0)


def test_drop_block_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(2, 3, 6, 6, generator=_gen(13))
    assert drop_block(x, 0.5, 3, training=False) is x
    assert drop_block(x, 0.0, 3, training=True) is x
    layer = DropBlock(0.5, 3).eval()
    assert torch.equal(layer(x), x)
    layer.train()
    assert not torch.equal(layer(x), x)


def test_drop_block_gradient_is_mask_times_scale() -> None:
    """Reference: closed form d(out)/dx = M * count / count_ones with M from drop_block_mask on the same seed;
    and torch.autograd.gradcheck in float64 with a fixed generator."""
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64, generator=_gen(14), requires_grad=True)
    out = drop_block(x, 0.3, 3, generator=_gen(15))
    w = torch.randn_like(x)
    (gx,) = torch.autograd.grad((out * w).sum(), x)
    mask = drop_block_mask(x.shape, 0.3, 3, generator=_gen(15), dtype=torch.float64)
    scale = mask.numel() / mask.sum()
    torch.testing.assert_close(out, x * mask * scale, rtol=1e-12, atol=0)
    torch.testing.assert_close(gx, w * mask * scale, rtol=1e-12, atol=0)
    assert torch.autograd.gradcheck(lambda t: drop_block(t, 0.3, 3, generator=_gen(15)), (x,))


def test_drop_block_module_uses_the_global_rng_like_the_function() -> None:
    """Reference: the functional form with the same global seed (both draw from torch's default generator)."""
    x = torch.randn(2, 4, 10, generator=_gen(16))
    layer = DropBlock(0.3, 4, dim=1)
    torch.manual_seed(123)
    a = layer(x)
    torch.manual_seed(123)
    b = drop_block(x, 0.3, 4, training=True)
    assert torch.equal(a, b)
    layer.drop_prob = 0.0  # settable (the schedule changes it)
    assert torch.equal(layer(x), x)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), True, "0.1", None])
def test_drop_block_rejects_bad_probabilities(bad: object) -> None:
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises((ValueError, TypeError), match="drop"):
        drop_block(x, bad, 3)  # type: ignore[arg-type]
    layer = DropBlock(0.1, 3)
    with pytest.raises((ValueError, TypeError), match="drop_prob"):
        layer.drop_prob = bad  # type: ignore[assignment]
    assert layer.drop_prob == 0.1


def test_drop_block_rejects_bad_shapes_and_arguments() -> None:
    with pytest.raises(ValueError, match="block_size"):
        drop_block(torch.randn(1, 1, 4, 4), 0.1, 0)
    with pytest.raises(ValueError, match=r"\(B, C, L\) or \(B, C, H, W\)"):
        drop_block(torch.randn(4, 4), 0.1, 3)
    with pytest.raises(TypeError, match="floating-point"):
        drop_block(torch.ones(1, 1, 4, 4, dtype=torch.long), 0.1, 3)
    with pytest.raises(TypeError, match="torch.Tensor"):
        drop_block(np.ones((1, 1, 4, 4)), 0.1, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim=1"):
        DropBlock(0.1, 3, dim=2)(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="dim must be 1"):
        DropBlock(0.1, 3, dim=3)


# ================================================================================================= Shakeout
def _shakeout_reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, r: np.ndarray, tau: float, c: float) -> np.ndarray:
    """Per-example loop over the paper's effective weights: (w + c tau s)/(1 - tau) if r_j = 1 else -c s."""
    s = np.sign(w)
    out = np.zeros((x.shape[0], w.shape[0]))
    for n in range(x.shape[0]):
        w_eff = np.where(r[n][None, :] == 1, (w + c * tau * s) / (1 - tau), -c * s)  # (out, in)
        out[n] = w_eff @ x[n] + b
    return out


def _shakeout_torch_loop(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r: torch.Tensor, tau: float,
                         c: float) -> torch.Tensor:
    """The same loop in torch (differentiable) for the gradient reference."""
    s = torch.sign(w)
    rows = []
    for n in range(x.shape[0]):
        w_eff = torch.where(r[n][None, :] == 1, (w + c * tau * s) / (1 - tau), -c * s)
        rows.append(w_eff @ x[n] + b)
    return torch.stack(rows)


def test_shakeout_matches_paper_loop_outputs_and_gradients() -> None:
    """Reference: the per-example loop over eq. 5's effective weights (NumPy for outputs, torch for gradients)."""
    g = _gen(20)
    x = torch.randn(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    r = (torch.rand(6, 5, generator=g) < 0.6).double()
    tau, c = 0.4, 0.7
    out = shakeout_linear(x, w, b, tau, c, training=True, mask=r)
    ref_np = _shakeout_reference(x.detach().numpy(), w.detach().numpy(), b.detach().numpy(), r.numpy(), tau, c)
    np.testing.assert_allclose(out.detach().numpy(), ref_np, rtol=1e-12, atol=1e-12)
    ref = _shakeout_torch_loop(x, w, b, r, tau, c)
    up = torch.randn(6, 4, dtype=torch.float64, generator=g)
    grads = torch.autograd.grad((out * up).sum(), (x, w, b))
    ref_grads = torch.autograd.grad((ref * up).sum(), (x, w, b))
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a, ww, bb: shakeout_linear(a, ww, bb, tau, c, mask=r), (x, w, b))


def test_shakeout_sampled_mask_is_reproducible_and_per_example() -> None:
    """Reference: the loop with r recovered from the output of a c = 0 call on an identity weight."""
    x = torch.randn(4, 3, 5, dtype=torch.float64, generator=_gen(21))  # leading dims (4, 3) are examples
    eye = torch.eye(5, dtype=torch.float64)
    a = shakeout_linear(x, eye, None, 0.5, 0.0, generator=_gen(22))
    b = shakeout_linear(x, eye, None, 0.5, 0.0, generator=_gen(22))
    assert torch.equal(a, b)
    kept = a != 0  # with W = I and c = 0 the output is x * r / (1 - tau): r is visible
    torch.testing.assert_close(a, x * kept / 0.5, rtol=1e-12, atol=0)
    assert 0 < kept.sum() < kept.numel() and kept.reshape(12, 5).any(0).all()


def test_shakeout_c_zero_is_inverted_dropout_on_the_inputs() -> None:
    """Reference: F.linear(x * r / (1 - tau), W, b), torch's linear on dropout-masked inputs."""
    g = _gen(23)
    x, w, b = torch.randn(5, 6, generator=g), torch.randn(3, 6, generator=g), torch.randn(3, generator=g)
    r = (torch.rand(5, 6, generator=g) < 0.7).float()
    torch.testing.assert_close(shakeout_linear(x, w, b, 0.3, 0.0, mask=r), F.linear(x * r / 0.7, w, b))


def test_shakeout_expectation_is_the_plain_linear_layer() -> None:
    """E[r~] = 1 makes E[u] = x W^T + b (the paper's motivation); Monte Carlo over 4000 draws vs F.linear."""
    g = _gen(24)
    x = torch.randn(3, 6, dtype=torch.float64, generator=g)
    w = torch.randn(4, 6, dtype=torch.float64, generator=g)
    b = torch.randn(4, dtype=torch.float64, generator=g)
    n = 4000
    out = shakeout_linear(x.repeat(n, 1), w, b, 0.4, 0.8, generator=_gen(25)).reshape(n, 3, 4)
    assert_mc_close(out, F.linear(x, w, b))


def test_shakeout_eval_is_plain_linear() -> None:
    """Reference: nn.Linear with the same weights (torch built-in)."""
    torch.manual_seed(0)
    layer = ShakeoutLinear(6, 3, tau=0.5, c=2.0)
    torch.manual_seed(0)
    plain = nn.Linear(6, 3)  # same init sequence: ShakeoutLinear is an nn.Linear
    assert torch.equal(layer.weight, plain.weight) and torch.equal(layer.bias, plain.bias)
    x = torch.randn(4, 6, generator=_gen(26))
    layer.eval()
    assert torch.equal(layer(x), plain(x))
    layer.train()
    assert not torch.allclose(layer(x), plain(x))


def test_shakeout_rejects_bad_input() -> None:
    x, w = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="features"):
        shakeout_linear(torch.randn(2, 5), w, None, 0.5, 1.0)
    with pytest.raises(ValueError, match="tau"):
        shakeout_linear(x, w, None, 1.0, 1.0)
    with pytest.raises(ValueError, match="c must be"):
        shakeout_linear(x, w, None, 0.5, -1.0)
    with pytest.raises(ValueError, match="mask"):
        shakeout_linear(x, w, None, 0.5, 1.0, mask=torch.ones(3, 3))
    with pytest.raises(ValueError, match="2-D"):
        shakeout_linear(x, torch.randn(3), None, 0.5, 1.0)
    with pytest.raises(ValueError, match="c must be"):
        ShakeoutLinear(3, 2, tau=0.5, c=float("nan"))


# ================================================================================================= DropPath
def test_drop_path_drops_whole_examples_and_rescales() -> None:
    """Reference: closed form out_i = x_i * b_i / (1 - p), b_i in {0, 1} read off each example; the fraction of
    dropped examples is Binomial(n, p) (checked to 5 standard deviations); gradients equal b_i / (1 - p)."""
    p, n = 0.3, 2000
    x = (torch.rand(n, 3, 4, generator=_gen(30), dtype=torch.float64) + 0.5).requires_grad_(True)
    out = drop_path(x, p, generator=_gen(31))
    kept = (out != 0).reshape(n, -1)
    assert (kept.all(1) | (~kept).all(1)).all()  # all or nothing per example
    b = kept.all(1).double().reshape(n, 1, 1)
    torch.testing.assert_close(out, x * b / (1 - p), rtol=1e-12, atol=0)
    frac = 1.0 - b.mean().item()
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n)
    (gx,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(gx, (b / (1 - p)).expand_as(x))
    xs = x[:4].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: drop_path(t, p, generator=_gen(32)), (xs,))


def test_drop_path_expectation_kept() -> None:
    """Monte Carlo over 4000 stacked copies: mean of out ~ x (reference: x itself)."""
    x = torch.randn(2, 5, dtype=torch.float64, generator=_gen(33))
    n = 4000
    out = drop_path(x.repeat(n, 1), 0.25, generator=_gen(34)).reshape(n, 2, 5)
    assert_mc_close(out, x)


def test_drop_path_identity_in_eval_and_p_one_is_refused() -> None:
    x = torch.randn(3, 4)
    assert drop_path(x, 0.5, training=False) is x
    assert drop_path(x, 0.0) is x
    assert torch.equal(DropPath(0.5).eval()(x), x)
    with pytest.raises(ValueError, match="p = 1"):
        drop_path(x, 1.0)
    with pytest.raises(ValueError, match="p = 1"):
        DropPath(1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        DropPath(-0.2)


# ============================================================================================ LAYER_SPECS
def test_layer_specs_cover_every_module_and_torch_dropouts() -> None:
    names = [s.name for s in LAYER_SPECS]
    assert len(names) == len(set(names))
    assert all(s.family == "dropout" and s.summary for s in LAYER_SPECS)
    built = {type(s.build()) for s in LAYER_SPECS}
    defined = {obj for _, obj in inspect.getmembers(D, inspect.isclass)
               if issubclass(obj, nn.Module) and obj.__module__ == D.__name__}
    assert defined <= built
    assert {nn.Dropout, nn.Dropout1d, nn.Dropout2d} <= built


@pytest.mark.parametrize("spec", LAYER_SPECS, ids=[s.name for s in LAYER_SPECS])
def test_layer_spec_contract(spec) -> None:
    """What tests/contracts/test_layers.py checks: finite train-mode forward, finite gradient for every parameter
    and input, and torch.compile(backend="aot_eager") equal to eager in eval mode (reference: eager)."""
    torch.manual_seed(0)
    layer = spec.build().train()
    inputs = tuple(t.requires_grad_(i in spec.grad_inputs) for i, t in enumerate(spec.example(_gen(0))))
    out = layer(*inputs)
    assert torch.isfinite(out).all()
    out.sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for i in spec.grad_inputs:
        assert inputs[i].grad is not None and torch.isfinite(inputs[i].grad).all()
    layer.eval()
    plain = tuple(t.detach() for t in inputs)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(layer, backend="aot_eager")(*plain), layer(*plain))
