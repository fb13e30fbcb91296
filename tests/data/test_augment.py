"""Functional augmentations (tricklab.data.augment) against independent references.

References used below, per test: NumPy closed forms in float64 (mixup eq. 1 of Zhang et al. 2018, the CutMix
paste of Yun et al. 2019 and its area-weighted targets, ``np.roll`` for shifts, ``np.flip`` for flips,
``np.eye`` for one-hot rows), slow per-example Python loops that re-derive boxes from the documented draw
order (cutout, random erasing), ``scipy.stats.beta`` for the Beta(alpha, alpha) sampler, and
``torch.autograd.gradcheck`` in float64 for every gradient (plus the closed-form gradient in NumPy).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tricklab.data import augment as A


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randx(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


SHAPES = [(5, 40), (4, 2, 12), (3, 2, 7, 9)]  # (B, L) MNIST-1D-like, (B, C, L), (B, C, H, W)


# -------------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("shape,expected", [((2, 40), 1), ((2, 3, 40), 1), ((2, 1, 28, 28), 2)])
def test_infer_spatial_dims(shape: tuple[int, ...], expected: int) -> None:
    assert A.infer_spatial_dims(torch.zeros(shape)) == expected
    assert A.infer_spatial_dims(torch.zeros(2, 28, 28), 2) == 2  # (B, H, W) needs the explicit argument


@pytest.mark.parametrize("shape,sd", [((5,), None), ((2, 1, 1, 4, 4), None), ((3,), 1), ((3, 4), 2), ((3, 4), 3)])
def test_infer_spatial_dims_errors(shape: tuple[int, ...], sd: int | None) -> None:
    with pytest.raises(ValueError, match="spatial"):
        A.infer_spatial_dims(torch.zeros(shape), sd)


def test_resolve_sizes() -> None:
    # reference: the documented rule round(fraction * side), at least 1
    assert A.resolve_sizes(None, (40,), A.CUTOUT_FRACTION, "size") == (round(0.25 * 40),)
    assert A.resolve_sizes(None, (28, 28), A.CUTOUT_FRACTION, "size") == (7, 7)
    assert A.resolve_sizes(None, (40,), A.SHIFT_FRACTION, "m") == (4,)
    assert A.resolve_sizes(0.01, (10,), 0.5, "size") == (1,)
    assert A.resolve_sizes(3, (28, 28), 0.5, "size") == (3, 3)
    assert A.resolve_sizes([2, 5], (28, 28), 0.5, "size") == (2, 5)
    for bad, err in [(1.5, ValueError), ([1], ValueError), (-1, ValueError), (True, TypeError), ("a", TypeError)]:
        with pytest.raises(err):
            A.resolve_sizes(bad, (28, 28), 0.5, "size")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- targets
def test_one_hot_targets_matches_numpy_eye() -> None:
    """Reference: np.eye(C)[y]."""
    y = torch.tensor([2, 0, 1, 2])
    out = A.one_hot_targets(y, 4, torch.float64)
    np.testing.assert_array_equal(out.numpy(), np.eye(4)[y.numpy()])
    assert out.dtype == torch.float64
    assert A.one_hot_targets(y, 3).dtype == torch.float32


@pytest.mark.parametrize(
    "y,c,dtype,err",
    [
        (torch.tensor([0.0, 1.0]), 2, torch.float32, TypeError),
        (torch.tensor([[0, 1]]), 2, torch.float32, ValueError),
        (torch.tensor([0, 3]), 3, torch.float32, ValueError),
        (torch.tensor([-1, 0]), 3, torch.float32, ValueError),
        (torch.tensor([0, 1]), 0, torch.float32, ValueError),
        (torch.tensor([0, 1]), 2, torch.int64, TypeError),
    ],
)
def test_one_hot_targets_errors(y: torch.Tensor, c: int, dtype: torch.dtype, err: type[Exception]) -> None:
    with pytest.raises(err):
        A.one_hot_targets(y, c, dtype)


def test_soft_targets_errors() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        A.soft_targets(torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="classes"):
        A.soft_targets(torch.rand(2, 3), 2, num_classes=4)
    with pytest.raises(ValueError, match="rows"):
        A.soft_targets(torch.rand(3, 3), 2)


# --------------------------------------------------------------------------------------------- mixup
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("soft", [False, True])
def test_mixup_matches_numpy_formula_outputs_and_gradients(shape: tuple[int, ...], soft: bool) -> None:
    """Reference: NumPy float64 eq. 1 of Zhang et al. 2018, lam x + (1-lam) x[perm] (same for targets);
    gradient of sum(w * x~) w.r.t. x in closed form: lam w + scatter-add of (1-lam) w onto perm."""
    b, c, lam = shape[0], 4, 0.37
    x = randx(shape, 1).requires_grad_(True)
    perm = torch.randperm(b, generator=gen(2))
    labels = torch.randint(0, c, (b,), generator=gen(3))
    y = torch.softmax(randx((b, c), 4), -1) if soft else labels
    xm, ym = A.mixup(x, y, lam, perm, num_classes=None if soft else c)
    xn, pn = x.detach().numpy(), perm.numpy()
    yn = y.numpy() if soft else np.eye(c)[labels.numpy()]
    np.testing.assert_allclose(xm.detach().numpy(), lam * xn + (1 - lam) * xn[pn], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ym.numpy(), lam * yn + (1 - lam) * yn[pn], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ym.sum(-1).numpy(), np.ones(b), atol=1e-12)  # each row still sums to one
    if not soft:  # the weight on the own class is lam (plus the partner's share when it has the same class)
        own = ym[torch.arange(b), labels].numpy()
        np.testing.assert_allclose(own, lam + (1 - lam) * (labels[perm] == labels).numpy(), atol=1e-12)
    w = randx(shape, 5)
    (g,) = torch.autograd.grad((xm * w).sum(), x)
    ref = lam * w.numpy()
    np.add.at(ref, pn, (1 - lam) * w.numpy())
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-12, atol=1e-12)


def test_mixup_gradcheck_inputs_and_soft_targets() -> None:
    """Reference: torch.autograd.gradcheck (finite differences, float64)."""
    x = randx((3, 5), 0).requires_grad_(True)
    y = torch.softmax(randx((3, 4), 1), -1).requires_grad_(True)
    perm = torch.tensor([2, 0, 1])
    assert torch.autograd.gradcheck(lambda a, t: A.mixup(a, t, 0.3, perm), (x, y))


def test_mixup_identity_and_extremes() -> None:
    x = randx((4, 6), 0, torch.float32)
    y = torch.tensor([0, 1, 2, 1])
    perm = torch.tensor([3, 2, 1, 0])
    xm, ym = A.mixup(x, y, 1.0, perm, 3)
    assert torch.equal(xm, x) and xm.data_ptr() != x.data_ptr()
    assert torch.equal(ym, A.one_hot_targets(y, 3))  # reference: np.eye via one_hot_targets (tested above)
    xm, ym = A.mixup(x, y, 0.0, perm, 3)
    assert torch.equal(xm, x[perm]) and torch.equal(ym, A.one_hot_targets(y[perm], 3))
    assert ym.dtype == x.dtype


@pytest.mark.parametrize(
    "kwargs,err",
    [
        ({"lam": 1.5}, ValueError),
        ({"lam": -0.1}, ValueError),
        ({"perm": torch.tensor([0, 1])}, ValueError),
        ({"perm": torch.tensor([0.0, 1.0, 2.0])}, ValueError),
        ({"perm": torch.tensor([0, 1, 3])}, ValueError),
        ({"num_classes": None}, ValueError),
        ({"x": torch.zeros(3, 2, dtype=torch.long)}, TypeError),
    ],
)
def test_mixup_errors(kwargs: dict, err: type[Exception]) -> None:
    args = {"x": torch.zeros(3, 2), "y": torch.tensor([0, 1, 2]), "lam": 0.5, "perm": torch.tensor([2, 1, 0]),
            "num_classes": 3}
    args.update(kwargs)
    with pytest.raises(err):
        A.mixup(**args)


def test_sample_mixup_is_beta_distributed_and_deterministic() -> None:
    """Reference: scipy.stats.beta(alpha, alpha) CDF, Kolmogorov-Smirnov test on 3000 draws."""
    scipy_stats = pytest.importorskip("scipy.stats")
    g = gen(0)
    draws = np.array([A.sample_mixup(g, 0.4) for _ in range(3000)])
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert scipy_stats.kstest(draws, scipy_stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    g1, g2 = gen(7), gen(7)
    assert [A.sample_mixup(g1, 1.0) for _ in range(5)] == [A.sample_mixup(g2, 1.0) for _ in range(5)]
    tiny = [A.sample_mixup(g, 0.01) for _ in range(200)]  # near-0/1 draws stay finite
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in tiny)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="alpha"):
            A.sample_mixup(g, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Generator"):
        A.sample_mixup(None, 0.2)  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------- cutmix
def _numpy_paste(x: np.ndarray, perm: np.ndarray, box: A.Box) -> np.ndarray:
    out = x.copy()
    region = (Ellipsis, *(slice(a, b) for a, b in box))
    out[region] = x[perm][region]
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lam", [0.2, 0.55, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_counts_pasted_pixels_and_matches_numpy(shape: tuple[int, ...], lam: float, seed: int) -> None:
    """Reference: NumPy slice assignment of the returned box; the target weights are checked against an exact
    count of pasted positions (every input value is unique, so a position was pasted iff it changed)."""
    b = shape[0]
    x = torch.arange(math.prod(shape), dtype=torch.float64).view(shape)  # unique values everywhere
    x.requires_grad_(True)
    y = torch.arange(b)  # distinct classes, so the pasted share is visible in the partner's column
    perm = torch.roll(torch.arange(b), 1)  # a derangement: nobody is paired with itself
    xm, ym, box = A.cutmix(x, y, lam, perm, gen(seed), num_classes=b)
    d = len(box)
    spatial = shape[-d:]
    np.testing.assert_array_equal(xm.detach().numpy(), _numpy_paste(x.detach().numpy(), perm.numpy(), box))
    # exact pasted count per example (over one channel: the box spans all channels)
    changed = (xm != x).detach().reshape(b, -1, *spatial)[:, 0].reshape(b, -1).sum(1)
    area = math.prod(spatial)
    assert torch.all(changed == math.prod(hi - lo for lo, hi in box))
    frac = changed.double() / area
    idx = torch.arange(b)
    torch.testing.assert_close(ym[idx, y], 1 - frac, rtol=0, atol=1e-12)
    torch.testing.assert_close(ym[idx, y[perm]], frac, rtol=0, atol=1e-12)
    torch.testing.assert_close(ym.sum(-1), torch.ones(b, dtype=torch.float64), rtol=0, atol=1e-12)
    # the unclipped box has sides round(S (1-lam)^(1/d)) (area 1-lam, eq. 2 of Yun et al.); clipping only shrinks
    for (lo, hi), s in zip(box, spatial):
        assert 0 <= lo <= hi <= s and hi - lo <= round(s * (1 - lam) ** (1 / d))
    # gradient of sum(w * x~): w where not pasted, and onto the partner where pasted (NumPy closed form)
    w = randx(shape, 9)
    (g,) = torch.autograd.grad((xm * w).sum(), x)
    region = (Ellipsis, *(slice(lo, hi) for lo, hi in box))
    mask = np.zeros(shape, dtype=bool)
    mask[region] = True
    ref = np.where(mask, 0.0, w.numpy())
    np.add.at(ref, perm.numpy(), np.where(mask, w.numpy(), 0.0))
    np.testing.assert_allclose(g.numpy(), ref, rtol=0, atol=1e-12)


def test_cutmix_unclipped_box_has_the_requested_area() -> None:
    """Reference: eq. 2 of Yun et al. 2019: r_w = W sqrt(1-lam), r_h = H sqrt(1-lam); over seeds, a box whose
    centre is far from the borders is exactly that size."""
    full = 0
    for seed in range(60):
        box = A.cutmix_box(gen(seed), (28, 28), 0.75)  # side round(28 * 0.5) = 14
        sides = [hi - lo for lo, hi in box]
        assert all(s <= 14 for s in sides)
        full += sides == [14, 14]
    assert full > 5  # centres in [7, 21) on both axes: about a quarter of the draws
    box1 = A.cutmix_box(gen(0), (40,), 0.75)  # 1-D: length round(40 * 0.25) = 10
    assert box1[0][1] - box1[0][0] <= 10


def test_cutmix_gradcheck_and_identity() -> None:
    """Reference: torch.autograd.gradcheck; lam = 1 pastes nothing (side round(S * 0) = 0)."""
    x = randx((3, 2, 5, 5), 0).requires_grad_(True)
    y = torch.softmax(randx((3, 4), 1), -1).requires_grad_(True)
    perm = torch.tensor([1, 2, 0])
    assert torch.autograd.gradcheck(lambda a, t: A.cutmix(a, t, 0.5, perm, gen(3))[:2], (x, y))
    labels = torch.tensor([0, 1, 2])
    xm, ym, box = A.cutmix(x.detach(), labels, 1.0, perm, gen(0), num_classes=3)
    assert torch.equal(xm, x.detach()) and torch.equal(ym, A.one_hot_targets(labels, 3, torch.float64))
    assert math.prod(hi - lo for lo, hi in box) == 0


def test_cutmix_is_deterministic_given_the_seed() -> None:
    x, y, perm = randx((4, 1, 8, 8), 0), torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 3, 2])
    a = A.cutmix(x, y, 0.4, perm, gen(5), num_classes=4)
    b = A.cutmix(x, y, 0.4, perm, gen(5), num_classes=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    boxes = {A.cutmix(x, y, 0.4, perm, gen(s), num_classes=4)[2] for s in range(10)}
    assert len(boxes) > 1


# ----------------------------------------------------------------------------------- cutout / erasing
def _loop_box_mask(starts: np.ndarray, ends: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    """Slow reference: a per-example, per-position loop."""
    mask = np.zeros((len(starts), *spatial), dtype=bool)
    for b in range(len(starts)):
        for pos in np.ndindex(*spatial):
            mask[(b, *pos)] = all(starts[b, k] <= pos[k] < ends[b, k] for k in range(len(spatial)))
    return mask


def test_box_mask_matches_a_loop() -> None:
    starts = np.array([[0, 2], [3, 0], [1, 1]])
    ends = np.array([[2, 5], [3, 4], [4, 2]])
    got = A.box_mask(torch.from_numpy(starts), torch.from_numpy(ends), (4, 5)).numpy()
    np.testing.assert_array_equal(got, _loop_box_mask(starts, ends, (4, 5)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [None, 3, 0.5])
def test_cutout_zeroes_exactly_the_box(shape: tuple[int, ...], size: int | float | None) -> None:
    """Reference: a slow loop that re-derives each box from the documented draws (a centre randint(0, S_k)
    per dimension, then rand(B) < p), clips [c - s//2, c - s//2 + s) to the borders and zeroes it in NumPy."""
    x = randx(shape, 0) + 10.0  # no accidental zeros
    x.requires_grad_(True)
    out = A.cutout(x, gen(4), size, p=0.7)
    d = 1 if len(shape) < 4 else 2
    spatial = shape[-d:]
    sides = A.resolve_sizes(size, spatial, A.CUTOUT_FRACTION, "size")
    g = gen(4)
    centres = [torch.randint(0, s, (shape[0],), generator=g).numpy() for s in spatial]
    apply = (torch.rand(shape[0], generator=g) < 0.7).numpy()
    ref = x.detach().numpy().copy()
    mask = np.zeros(ref.shape, dtype=bool)
    for b in range(shape[0]):
        if not apply[b]:
            continue
        region = tuple(slice(max(c[b] - s // 2, 0), min(c[b] - s // 2 + s, n))
                       for c, s, n in zip(centres, sides, spatial))
        mask[(b, Ellipsis, *region)] = True
    ref[mask] = 0.0
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    assert (out == 0).sum() == mask.sum()
    (grad,) = torch.autograd.grad((out * 3.0).sum(), x)  # closed form: 3 outside the box, 0 inside
    np.testing.assert_array_equal(grad.numpy(), np.where(mask, 0.0, 3.0))


def test_cutout_identity_fill_determinism_and_errors() -> None:
    x = randx((4, 1, 6, 6), 0)
    assert torch.equal(A.cutout(x, gen(0), 2, p=0.0), x)  # p = 0: identity
    assert torch.equal(A.cutout(x, gen(1), 2), A.cutout(x, gen(1), 2))
    assert not torch.equal(A.cutout(x, gen(1), 2), A.cutout(x, gen(2), 2))
    out = A.cutout(x, gen(1), 2, fill=-1.5)
    assert torch.equal(out == -1.5, A.cutout(x, gen(1), 2) == 0)  # same boxes, another fill value
    before = x.clone()
    A.cutout(x, gen(0), 3)
    assert torch.equal(x, before)  # never in place
    with pytest.raises(TypeError, match="Generator"):
        A.cutout(x, 0, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        A.cutout(x, gen(0), 0)
    with pytest.raises(ValueError, match="probability"):
        A.cutout(x, gen(0), 2, p=1.5)


def test_cutout_gradcheck() -> None:
    """Reference: torch.autograd.gradcheck (float64)."""
    x = randx((2, 3, 10), 0).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: A.cutout(a, gen(3), 4), (x,))


@pytest.mark.parametrize("shape", SHAPES)
def test_random_erasing_constant_fill_zeroes_exactly_the_sampled_boxes(shape: tuple[int, ...]) -> None:
    """Reference: the boxes of sample_erasing_boxes with the same seed, applied by a slow loop."""
    x = randx(shape, 0) + 10.0
    out = A.random_erasing(x, gen(3), p=0.8, fill=0.0)
    d = 1 if len(shape) < 4 else 2
    starts, ends = A.sample_erasing_boxes(gen(3), shape[0], shape[-d:], p=0.8)
    mask = _loop_box_mask(starts.numpy(), ends.numpy(), shape[-d:])
    mask = mask.reshape(shape[0], *([1] * (len(shape) - 1 - d)), *shape[-d:]) & np.ones(shape, dtype=bool)
    np.testing.assert_array_equal(out.numpy(), np.where(mask, 0.0, x.numpy()))


def test_random_erasing_random_fill_uses_the_next_normal_draws() -> None:
    """Reference: boxes from sample_erasing_boxes, then torch.randn(x.shape) from the same generator."""
    x = randx((6, 2, 8, 8), 0)
    out = A.random_erasing(x, gen(5), p=1.0)
    g = gen(5)
    starts, ends = A.sample_erasing_boxes(g, 6, (8, 8), p=1.0)
    noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
    mask = torch.from_numpy(_loop_box_mask(starts.numpy(), ends.numpy(), (8, 8)))[:, None]
    torch.testing.assert_close(out, torch.where(mask, noise, x), rtol=0, atol=0)
    assert mask.sum() > 0


@pytest.mark.parametrize("spatial", [(40,), (28, 28), (12, 30)])
def test_random_erasing_box_statistics(spatial: tuple[int, ...]) -> None:
    """Reference: the definition (Zhong et al. 2020, Alg. 1): area fraction in [s_l, s_h] and aspect ratio
    H_e / W_e in [r_1, 1/r_1], up to rounding each side to an integer; applied with frequency p."""
    n, p, sl, sh, r1 = 2000, 0.5, 0.02, 0.4, 0.3
    starts, ends = A.sample_erasing_boxes(gen(0), n, spatial, p=p, scale=(sl, sh), ratio=r1)
    sides = (ends - starts).double()
    applied = (sides > 0).all(1)
    assert abs(applied.double().mean().item() - p) < 0.05  # binomial sd ~ 0.011
    assert torch.all((sides == 0).all(1) | applied)  # an example is either left alone or gets a real box
    s = sides[applied]
    limit = torch.tensor(spatial, dtype=torch.float64)
    assert torch.all(ends <= limit) and torch.all(starts >= 0)
    area = s.prod(1) / math.prod(spatial)
    if len(spatial) == 1:
        assert torch.all(area >= sl - 0.5 / spatial[0]) and torch.all(area <= sh + 0.5 / spatial[0])
    else:
        h, w = s[:, 0], s[:, 1]
        # rounding moves each side by at most 1/2: (h - 1/2)(w - 1/2) <= S_e <= (h + 1/2)(w + 1/2)
        total = math.prod(spatial)
        assert torch.all((h - 0.5) * (w - 0.5) <= sh * total + 1e-9)
        assert torch.all((h + 0.5) * (w + 0.5) >= sl * total - 1e-9)
        assert torch.all((h - 0.5) / (w + 0.5) <= 1 / r1 + 1e-9) and torch.all((h + 0.5) / (w - 0.5) >= r1 - 1e-9)
        # log-uniform aspect: r and 1/r equally likely (when the box fits either way)
        if spatial[0] == spatial[1]:
            assert abs((h > w).double().mean().item() - (h < w).double().mean().item()) < 0.1


def test_random_erasing_identity_determinism_gradients_and_errors() -> None:
    """Reference for the gradient: torch.autograd.gradcheck (float64)."""
    x = randx((5, 1, 7, 7), 0)
    assert torch.equal(A.random_erasing(x, gen(0), p=0.0, fill=0.0), x)  # p = 0: identity
    assert torch.equal(A.random_erasing(x, gen(2), p=1.0), A.random_erasing(x, gen(2), p=1.0))
    assert not torch.equal(A.random_erasing(x, gen(2), p=1.0), A.random_erasing(x, gen(3), p=1.0))
    xg = randx((3, 12), 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: A.random_erasing(a, gen(1), p=1.0), (xg,))
    for kwargs in ({"scale": (0.5, 0.2)}, {"scale": (0.0, 0.2)}, {"ratio": 2.0}, {"fill": "noise"}, {"p": -0.1}):
        with pytest.raises(ValueError):
            A.random_erasing(x, gen(0), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating"):
        A.random_erasing(torch.zeros(2, 5, dtype=torch.long), gen(0), p=1.0)


# --------------------------------------------------------------------------------------------- shift
def _numpy_shift(x: np.ndarray, shifts: np.ndarray, mode: str) -> np.ndarray:
    """Reference: np.roll per example over the trailing axes; zero mode also zeroes the wrapped-in part."""
    d = shifts.shape[1]
    out = np.empty_like(x)
    for b in range(x.shape[0]):
        axes = tuple(range(x.ndim - 1 - d, x.ndim - 1))
        rolled = np.roll(x[b], tuple(int(s) for s in shifts[b]), axis=axes)
        if mode == "zeros":
            for ax, s in zip(axes, shifts[b]):
                index = [slice(None)] * rolled.ndim
                index[ax] = slice(0, s) if s > 0 else slice(rolled.shape[ax] + s, None)
                if s != 0:
                    rolled[tuple(index)] = 0
        out[b] = rolled
    return out


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["circular", "zeros"])
def test_shift_matches_numpy_roll_outputs_and_gradients(shape: tuple[int, ...], mode: str) -> None:
    """Reference: np.roll (plus zero fill); gradient of sum(w * out) is w shifted back (gradcheck too)."""
    d = 1 if len(shape) < 4 else 2
    x = randx(shape, 0).requires_grad_(True)
    shifts = A.sample_shifts(gen(1), shape[0], [3] * d)
    out = A.shift(x, shifts, mode=mode)
    np.testing.assert_array_equal(out.detach().numpy(), _numpy_shift(x.detach().numpy(), shifts.numpy(), mode))
    w = randx(shape, 2)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    back = _numpy_shift(w.numpy(), -shifts.numpy(), mode)  # adjoint of a shift is the opposite shift
    if mode == "zeros":  # positions shifted out of the frame receive no gradient
        back = back * _numpy_shift(_numpy_shift(np.ones(shape), shifts.numpy(), mode), -shifts.numpy(), mode)
    np.testing.assert_allclose(g.numpy(), back, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda a: A.shift(a, shifts, mode=mode), (x,))


def test_random_shift_uses_sample_shifts_and_is_deterministic() -> None:
    """Reference: shift() with sample_shifts() drawn from an identically seeded generator (tested above
    against np.roll); shifts are uniform on [-m, m] (checked over many draws)."""
    x = randx((6, 1, 28, 28), 0)
    out = A.random_shift(x, gen(3), 2)
    ref = A.shift(x, A.sample_shifts(gen(3), 6, [2, 2]), mode="zeros")
    assert torch.equal(out, ref)
    assert torch.equal(A.random_shift(x, gen(3)), A.random_shift(x, gen(3)))  # default: round(0.1 * 28) = 3
    assert not torch.equal(A.random_shift(x, gen(3)), A.random_shift(x, gen(4)))
    draws = A.sample_shifts(gen(0), 4000, [4])
    assert set(draws.unique().tolist()) == set(range(-4, 5))
    assert abs(draws.double().mean().item()) < 0.15  # uniform on [-4, 4]: mean 0, sd of the mean ~0.04
    assert torch.equal(A.random_shift(x, gen(0), 0), x)  # max_shift 0: identity
    with pytest.raises(ValueError, match="smaller"):
        A.random_shift(torch.zeros(2, 5), gen(0), 5)
    with pytest.raises(ValueError, match="mode"):
        A.random_shift(torch.zeros(2, 5), gen(0), 1, mode="reflect")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- flip
@pytest.mark.parametrize("shape", SHAPES)
def test_flip_matches_numpy_flip(shape: tuple[int, ...]) -> None:
    """Reference: np.flip on the last axis (and on the height for the vertical flag), per example;
    the gradient of sum(w * out) is w flipped back (checked against NumPy and by gradcheck)."""
    d = 1 if len(shape) < 4 else 2
    x = randx(shape, 0).requires_grad_(True)
    flags = A.sample_flips(gen(1), shape[0], 0.5, vertical=d == 2)
    out = A.flip(x, flags)
    xn = x.detach().numpy()
    ref = xn.copy()
    for b in range(shape[0]):
        if flags[b, 0]:
            ref[b] = np.flip(ref[b], axis=-1)
        if d == 2 and flags[b, 1]:
            ref[b] = np.flip(ref[b], axis=-2)
    np.testing.assert_array_equal(out.detach().numpy(), ref)
    w = randx(shape, 2)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    gref = w.numpy().copy()
    for b in range(shape[0]):  # a flip is its own inverse
        if flags[b, 0]:
            gref[b] = np.flip(gref[b], axis=-1)
        if d == 2 and flags[b, 1]:
            gref[b] = np.flip(gref[b], axis=-2)
    np.testing.assert_array_equal(g.numpy(), gref)
    assert torch.autograd.gradcheck(lambda a: A.flip(a, flags), (x,))


def test_random_flip_identity_determinism_frequency_and_errors() -> None:
    x = randx((8, 40), 0)
    assert torch.equal(A.random_flip(x, gen(0), p=0.0), x)  # p = 0: identity
    assert torch.equal(A.random_flip(x, gen(0), p=1.0), x.flip(-1))  # p = 1: every example reversed
    assert torch.equal(A.random_flip(x, gen(5)), A.flip(x, A.sample_flips(gen(5), 8, 0.5)))
    assert torch.equal(A.random_flip(x, gen(5)), A.random_flip(x, gen(5)))
    flags = A.sample_flips(gen(0), 4000, 0.3, vertical=True)
    assert abs(flags.double().mean().item() - 0.3) < 0.03  # Bernoulli(0.3): sd of the mean ~0.005
    img = randx((3, 1, 4, 4), 0)
    assert torch.equal(A.random_flip(img, gen(0), 1.0, vertical=True), img.flip(-1).flip(-2))
    with pytest.raises(ValueError, match="vertical"):
        A.random_flip(x, gen(0), vertical=True)
    with pytest.raises(ValueError, match="probability"):
        A.random_flip(x, gen(0), p=2.0)
