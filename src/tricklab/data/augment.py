"""Batch augmentations for 1-D signals and 2-D images, as pure functions on tensors.

Layout. Inputs are a batch ``(B, L)`` or ``(B, C, L)`` of 1-D signals (MNIST-1D is ``(B, 40)``) or
``(B, C, H, W)`` of images. The trailing ``spatial_dims`` dimensions are spatial; every dimension between the
batch and them is a channel dimension and is treated alike (one box, one shift, one flip per example across
all channels). ``spatial_dims=None`` infers it from ``x.ndim``: 2 or 3 -> 1 (a signal), 4 -> 2 (an image).
A channel-less image batch ``(B, H, W)`` is therefore read as ``(B, C, L)``: pass ``spatial_dims=2`` for it.

Randomness. Every function that draws takes an explicit ``torch.Generator`` and never reads the global RNG,
so a run is a function of its seeds; draws are made on the generator's device and moved to the data's. The
random functions are a *sampler* (``sample_*``: generator -> parameters) followed by a deterministic *core*
(``erase``, ``shift``, ``flip``, ``mixup``): tests and users can draw the parameters once and apply them
anywhere. Each function documents the order of its draws, which is part of its reproducibility contract.

Outputs are new tensors (inputs are never modified in place), differentiable with respect to ``x`` (and the
soft targets, for the mixers).

Contents: :func:`cutout` (DeVries & Taylor 2017), :func:`random_erasing` (Zhong et al. 2020),
:func:`mixup` / :func:`sample_mixup` (Zhang et al. 2018), :func:`cutmix` (Yun et al. 2019),
:func:`random_shift` and :func:`random_flip`, and :func:`one_hot_targets`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CUTOUT_FRACTION",
    "SHIFT_FRACTION",
    "Box",
    "box_mask",
    "cutmix",
    "cutmix_box",
    "cutout",
    "erase",
    "flip",
    "infer_spatial_dims",
    "mixup",
    "one_hot_targets",
    "random_erasing",
    "random_flip",
    "random_shift",
    "resolve_sizes",
    "sample_cutout_boxes",
    "sample_erasing_boxes",
    "sample_flips",
    "sample_mixup",
    "sample_shifts",
    "shift",
    "soft_targets",
]

#: A box as ((start, end), ...) per spatial dimension, half-open, already clipped to the borders.
Box = tuple[tuple[int, int], ...]

#: Default cutout side as a fraction of each spatial side: 10 of MNIST-1D's 40 positions, 7x7 of a 28x28
#: Fashion-MNIST image (DeVries & Taylor found 8..16 px best on 32x32 CIFAR, i.e. 0.25..0.5 of the side).
CUTOUT_FRACTION: float = 0.25
#: Default maximum shift as a fraction of each spatial side: 4 positions of 40, 3 pixels of 28.
SHIFT_FRACTION: float = 0.1


# ----------------------------------------------------------------------------------------------- checks
def _check_tensor(x: object, name: str = "x", floating: bool = False) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}; convert it with {name}.float()")
    return x


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), got "
            f"{type(generator).__name__}; augmentations never draw from the global RNG"
        )
    return generator


def _check_prob(p: object, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _check_spatial_shape(spatial_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(spatial_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"spatial_shape must be a non-empty sequence of positive ints, got {spatial_shape!r}")
    return shape


def infer_spatial_dims(x: Tensor, spatial_dims: int | None = None) -> int:
    """The number of trailing spatial dimensions of ``x``: 1 (signal) or 2 (image).

    ``None`` infers it from ``x.ndim``: 2 ``(B, L)`` or 3 ``(B, C, L)`` -> 1; 4 ``(B, C, H, W)`` -> 2.
    """
    _check_tensor(x)
    if spatial_dims is None:
        if x.ndim in (2, 3):
            return 1
        if x.ndim == 4:
            return 2
        raise ValueError(
            f"cannot infer the spatial dimensions of a tensor of shape {tuple(x.shape)}: expected (B, L), "
            f"(B, C, L) or (B, C, H, W); pass spatial_dims=1 or 2 explicitly"
        )
    if isinstance(spatial_dims, bool) or spatial_dims not in (1, 2):
        raise ValueError(f"spatial_dims must be 1 (signals) or 2 (images), got {spatial_dims!r}")
    if x.ndim < spatial_dims + 1:
        raise ValueError(
            f"x of shape {tuple(x.shape)} has no batch dimension in front of {spatial_dims} spatial dimension(s)"
        )
    return spatial_dims


def _per_example(t: Tensor, x: Tensor, spatial_dims: int) -> Tensor:
    """View a (B,) or (B, *spatial) tensor so it broadcasts against x (B, *channels, *spatial)."""
    channels = x.ndim - 1 - spatial_dims
    if t.ndim == 1:
        return t.view(t.shape[0], *([1] * (x.ndim - 1)))
    return t.view(t.shape[0], *([1] * channels), *t.shape[1:])


def resolve_sizes(
    size: int | float | Sequence[int] | None, spatial_shape: Sequence[int], default_fraction: float, name: str
) -> tuple[int, ...]:
    """Turn a size argument into one int per spatial dimension.

    ``None`` -> ``default_fraction`` of each side; a float in (0, 1) -> that fraction of each side; an int ->
    the same size on every side; a sequence -> one int per spatial dimension. Fractions round to the nearest
    int and give at least 1.
    """
    shape = _check_spatial_shape(spatial_shape)
    if size is None:
        size = default_fraction
    if isinstance(size, bool):
        raise TypeError(f"{name} must be an int, a fraction in (0, 1) or a sequence of ints, got {size!r}")
    if isinstance(size, float):
        if not 0.0 < size < 1.0:
            raise ValueError(
                f"{name}={size!r}: a float {name} is a fraction of each side and must be in (0, 1); "
                f"pass an int for an absolute size"
            )
        return tuple(max(1, round(size * s)) for s in shape)
    if isinstance(size, int):
        sizes: tuple[object, ...] = (size,) * len(shape)
    elif isinstance(size, Sequence) and not isinstance(size, str):
        sizes = tuple(size)
        if len(sizes) != len(shape):
            raise ValueError(f"{name} has {len(sizes)} entries but the data has {len(shape)} spatial dimension(s)")
    else:
        raise TypeError(f"{name} must be an int, a fraction in (0, 1) or a sequence of ints, got {size!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in sizes):
        raise ValueError(f"{name} entries must be non-negative ints, got {size!r}")
    return tuple(int(s) for s in sizes)  # type: ignore[call-overload]


# -------------------------------------------------------------------------------------------- targets
def one_hot_targets(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Class indices ``(B,)`` -> one-hot rows ``(B, num_classes)`` of a floating ``dtype`` (soft targets)."""
    _check_tensor(y, "y")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class indices, got dtype {y.dtype}")
    if y.ndim != 1:
        raise ValueError(f"y must be a 1-D tensor of class indices (B,), got shape {tuple(y.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype for soft targets, got {dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"class indices must be in [0, {num_classes}) for num_classes={num_classes}, got values in "
            f"[{int(y.min())}, {int(y.max())}]; check num_classes"
        )
    return F.one_hot(y.long(), num_classes).to(dtype)


def soft_targets(
    y: Tensor, batch_size: int, num_classes: int | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Targets as soft rows ``(B, C)``: integer labels are one-hot encoded (``num_classes`` needed), floating
    ``(B, C)`` targets pass through unchanged (their ``C`` must equal ``num_classes`` when given)."""
    _check_tensor(y, "y")
    if not y.dtype.is_floating_point:
        if num_classes is None:
            raise ValueError("integer labels need num_classes to become soft targets; pass num_classes=<classes>")
        out = one_hot_targets(y, num_classes, dtype or torch.float32)
    else:
        if y.ndim != 2:
            raise ValueError(f"soft targets must have shape (B, C), got {tuple(y.shape)}")
        if num_classes is not None and y.shape[1] != num_classes:
            raise ValueError(f"soft targets have {y.shape[1]} classes but num_classes={num_classes}")
        out = y
    if out.shape[0] != batch_size:
        raise ValueError(f"targets have {out.shape[0]} rows but the inputs a batch of {batch_size}")
    return out


def _check_perm(perm: object, batch_size: int) -> Tensor:
    _check_tensor(perm, "perm")
    assert isinstance(perm, Tensor)
    if perm.dtype.is_floating_point or perm.dtype == torch.bool or perm.ndim != 1 or perm.shape[0] != batch_size:
        raise ValueError(
            f"perm must be an integer tensor of shape ({batch_size},) pairing each example with a partner "
            f"(e.g. torch.randperm({batch_size}, generator=g)), got dtype {perm.dtype} shape {tuple(perm.shape)}"
        )
    if batch_size and (int(perm.min()) < 0 or int(perm.max()) >= batch_size):
        raise ValueError(f"perm values must be indices in [0, {batch_size})")
    return perm.long()


def _check_lam(lam: object) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= float(lam) <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1] (the weight of the original example), got {lam!r}")
    return float(lam)


# ---------------------------------------------------------------------------------------------- boxes
def box_mask(starts: Tensor, ends: Tensor, spatial_shape: Sequence[int]) -> Tensor:
    """Boolean mask ``(B, *spatial_shape)``, True inside the half-open box ``[starts, ends)`` of each example.

    ``starts`` / ``ends`` are integer tensors ``(B, d)``; it is the outer AND of the per-dimension intervals.
    """
    shape = _check_spatial_shape(spatial_shape)
    if starts.shape != ends.shape or starts.ndim != 2 or starts.shape[1] != len(shape):
        raise ValueError(
            f"starts and ends must both have shape (B, {len(shape)}), got {tuple(starts.shape)} and {tuple(ends.shape)}"
        )
    batch = starts.shape[0]
    mask: Tensor | None = None
    for k, size in enumerate(shape):
        pos = torch.arange(size, device=starts.device)
        inside = (pos >= starts[:, k, None]) & (pos < ends[:, k, None])  # (B, S_k)
        view = [batch] + [1] * len(shape)
        view[k + 1] = size
        inside = inside.view(view)
        mask = inside if mask is None else mask & inside
    assert mask is not None
    return mask


def _centred_boxes(centres: Tensor, sides: Tensor, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Boxes of ``sides`` centred on ``centres`` (both (B, d)), clipped at the borders: the part outside is
    simply lost (DeVries & Taylor 2017; Yun et al. 2019), so a clipped box is smaller."""
    limit = torch.tensor(shape, dtype=torch.long, device=centres.device)
    lo = centres - sides // 2
    starts = torch.minimum(lo.clamp(min=0), limit)
    ends = torch.minimum((lo + sides).clamp(min=0), limit)
    return starts, ends


def erase(
    x: Tensor, starts: Tensor, ends: Tensor, value: float | Tensor = 0.0, spatial_dims: int | None = None
) -> Tensor:
    """A copy of ``x`` with each example's box ``[starts, ends)`` (``(B, d)``) set to ``value``: a number, or
    a tensor of ``x``'s shape whose entries are used inside the boxes. Gradients are zero inside the boxes."""
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    spatial = tuple(x.shape[x.ndim - d :])
    if starts.shape[0] != x.shape[0]:
        raise ValueError(f"{starts.shape[0]} boxes for a batch of {x.shape[0]}")
    mask = _per_example(box_mask(starts.to(x.device), ends.to(x.device), spatial), x, d)
    if isinstance(value, Tensor):
        if value.shape != x.shape:
            raise ValueError(f"a tensor fill value must have x's shape {tuple(x.shape)}, got {tuple(value.shape)}")
        return torch.where(mask, value.to(device=x.device, dtype=x.dtype), x)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"value must be a number or a tensor of x's shape, got {type(value).__name__}")
    return x.masked_fill(mask, value)


# --------------------------------------------------------------------------------------------- cutout
def sample_cutout_boxes(
    generator: torch.Generator,
    batch_size: int,
    spatial_shape: Sequence[int],
    size: int | float | Sequence[int] | None = None,
    p: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Cutout boxes (DeVries & Taylor 2017): per example a box of side ``size`` (see :func:`resolve_sizes`;
    default :data:`CUTOUT_FRACTION` of each side) centred uniformly on any position, clipped at the borders;
    with probability ``1 - p`` an example gets an empty box.

    Draws, in order: one centre per spatial dimension (``randint(0, S_k, (B,))``), then ``rand(B)`` for ``p``.
    Returns ``(starts, ends)``, int64 ``(B, d)`` on the generator's device.
    """
    _check_generator(generator)
    batch = _check_batch_size(batch_size)
    shape = _check_spatial_shape(spatial_shape)
    sizes = resolve_sizes(size, shape, CUTOUT_FRACTION, "size")
    if any(s < 1 for s in sizes):
        raise ValueError(f"cutout size must be at least 1 on every side, got {sizes}")
    p = _check_prob(p, "p")
    dev = generator.device
    centres = torch.stack([torch.randint(0, s, (batch,), generator=generator, device=dev) for s in shape], dim=1)
    apply = torch.rand(batch, generator=generator, device=dev) < p
    sides = torch.tensor(sizes, dtype=torch.long, device=dev) * apply[:, None]
    return _centred_boxes(centres, sides, shape)


def cutout(
    x: Tensor,
    generator: torch.Generator,
    size: int | float | Sequence[int] | None = None,
    *,
    p: float = 1.0,
    fill: float = 0.0,
    spatial_dims: int | None = None,
) -> Tensor:
    """Cutout: set a box of side ``size`` at a uniformly drawn centre of each example to ``fill`` (0).

    ``x`` is ``(B, L)``, ``(B, C, L)`` or ``(B, C, H, W)`` (see the module docstring); the box spans all
    channels. ``size=None`` is :data:`CUTOUT_FRACTION` (0.25) of each side: 10 of 40, 7x7 of 28x28.
    """
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    starts, ends = sample_cutout_boxes(generator, x.shape[0], tuple(x.shape[x.ndim - d :]), size, p)
    return erase(x, starts, ends, fill, d)


# ------------------------------------------------------------------------------------- random erasing
def sample_erasing_boxes(
    generator: torch.Generator,
    batch_size: int,
    spatial_shape: Sequence[int],
    *,
    p: float = 0.5,
    scale: Sequence[float] = (0.02, 0.4),
    ratio: float = 0.3,
    max_tries: int = 10,
) -> tuple[Tensor, Tensor]:
    """Random-erasing boxes (Zhong et al. 2020, Alg. 1): with probability ``p`` an example gets a box of area
    ``S_e = s * S``, ``s ~ U(scale)``, and aspect ratio ``r_e = H_e / W_e`` in ``[ratio, 1/ratio]``:
    ``H_e = round(sqrt(S_e r_e))``, ``W_e = round(sqrt(S_e / r_e))``; 1-D: length ``round(s L)``. A box that
    does not fit is redrawn (up to ``max_tries`` times, drawn at once; none fitting leaves the example
    alone); the top-left corner is then uniform over the positions where it fits, which is what the paper's
    rejection of out-of-bounds corners amounts to.

    ``r_e`` is drawn log-uniformly, so ``r`` and ``1/r`` are equally likely (the paper draws it uniformly
    on ``[r1, 1/r1]``, which favours tall boxes). Draws, in order: ``rand(B)`` for ``p``; ``rand(B, T)`` for
    ``s``; (2-D) ``rand(B, T)`` for ``r_e``; ``rand(B, d)`` for the corner. Returns int64 ``(B, d)``
    ``(starts, ends)``; an example left alone has an empty box.
    """
    _check_generator(generator)
    batch = _check_batch_size(batch_size)
    shape = _check_spatial_shape(spatial_shape)
    if len(shape) not in (1, 2):
        raise ValueError(f"random erasing supports 1 or 2 spatial dimensions, got {len(shape)}")
    p = _check_prob(p, "p")
    sc = tuple(scale)
    if len(sc) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sc) or not (
        0.0 < sc[0] <= sc[1] <= 1.0
    ):
        raise ValueError(f"scale must be (s_l, s_h) with 0 < s_l <= s_h <= 1 (area fractions), got {scale!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be r_1 in (0, 1]; aspect ratios are drawn in [r_1, 1/r_1], got {ratio!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be a positive int, got {max_tries!r}")
    dev = generator.device
    apply = torch.rand(batch, generator=generator, device=dev) < p
    frac = sc[0] + (sc[1] - sc[0]) * torch.rand(batch, max_tries, generator=generator, device=dev, dtype=torch.float64)
    if len(shape) == 1:
        sides = torch.round(frac * shape[0]).long().unsqueeze(-1)  # (B, T, 1)
    else:
        lo, hi = math.log(ratio), -math.log(ratio)
        u_r = torch.rand(batch, max_tries, generator=generator, device=dev, dtype=torch.float64)
        r = torch.exp(lo + (hi - lo) * u_r)  # log-uniform on [r_1, 1/r_1]
        area = frac * (shape[0] * shape[1])
        sides = torch.stack([torch.round(torch.sqrt(area * r)), torch.round(torch.sqrt(area / r))], dim=-1).long()
    limit = torch.tensor(shape, dtype=torch.long, device=dev)
    fits = ((sides >= 1) & (sides <= limit)).all(dim=-1)  # (B, T)
    first = fits.int().argmax(dim=1)  # index of the first fitting try (argmax returns the first maximum)
    found = fits.any(dim=1) & apply
    chosen = sides[torch.arange(batch, device=dev), first] * found[:, None]  # (B, d); 0 = no box
    u = torch.rand(batch, len(shape), generator=generator, device=dev, dtype=torch.float64)
    # uniform integer corner in [0, S - side]: floor(u (S - side + 1)), u < 1
    starts = torch.floor(u * (limit - chosen + 1)).long().clamp(max=limit - chosen)
    return starts, starts + chosen


def random_erasing(
    x: Tensor,
    generator: torch.Generator,
    p: float = 0.5,
    *,
    scale: Sequence[float] = (0.02, 0.4),
    ratio: float = 0.3,
    fill: float | Literal["random"] = "random",
    spatial_dims: int | None = None,
) -> Tensor:
    """Random erasing: with probability ``p`` replace a random box of each example (area fraction in
    ``scale``, aspect ratio in ``[ratio, 1/ratio]``; see :func:`sample_erasing_boxes`) by ``fill``.

    ``fill="random"`` uses standard-normal values per entry (the paper's best variant, random values, for
    standardized inputs), drawn after the boxes with ``randn(x.shape)``; a number fills a constant.
    Defaults are the paper's: ``p=0.5, s_l=0.02, s_h=0.4, r_1=0.3``.
    """
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    if not (fill == "random" or (isinstance(fill, (int, float)) and not isinstance(fill, bool))):
        raise ValueError(f"fill must be a number or 'random', got {fill!r}")
    starts, ends = sample_erasing_boxes(
        generator, x.shape[0], tuple(x.shape[x.ndim - d :]), p=p, scale=scale, ratio=ratio
    )
    if fill == "random":
        _check_tensor(x, floating=True)
        noise = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return erase(x, starts, ends, noise, d)
    return erase(x, starts, ends, float(fill), d)


# ---------------------------------------------------------------------------------------------- mixup
def sample_mixup(generator: torch.Generator, alpha: float) -> float:
    """``lam ~ Beta(alpha, alpha)`` (Zhang et al. 2018), drawn with ``generator``.

    Uses torch's own Beta sampler: ``torch.distributions.Beta`` samples the first coordinate of a
    ``Dirichlet([alpha, alpha])``, which is ``torch._sample_dirichlet`` (the only form taking a generator).
    """
    _check_generator(generator)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0 or math.isinf(alpha):
        raise ValueError(f"alpha must be a positive finite number (Beta(alpha, alpha)), got {alpha!r}")
    conc = torch.full((2,), float(alpha), dtype=torch.float64, device=generator.device)
    return float(torch._sample_dirichlet(conc, generator=generator)[0])


def mixup(
    x: Tensor, y: Tensor, lam: float, perm: Tensor, num_classes: int | None = None
) -> tuple[Tensor, Tensor]:
    """Mixup: ``x~ = lam x + (1 - lam) x[perm]``, ``y~ = lam y + (1 - lam) y[perm]`` (Zhang et al. 2018, eq. 1).

    ``x``: any floating ``(B, ...)``. ``y``: integer labels ``(B,)`` (one-hot encoded with ``num_classes``)
    or soft targets ``(B, C)``. ``perm``: ``(B,)`` partner indices, usually ``torch.randperm(B)``.
    Returns ``(x~, y~)`` with ``y~`` soft ``(B, C)`` of ``x``'s dtype.
    """
    _check_tensor(x, floating=True)
    batch = x.shape[0] if x.ndim else 0
    if x.ndim < 1 or batch < 1:
        raise ValueError(f"x must be a non-empty batch (B, ...), got shape {tuple(x.shape)}")
    lam = _check_lam(lam)
    perm = _check_perm(perm, batch).to(x.device)
    ys = soft_targets(y, batch, num_classes, x.dtype).to(x.device)
    return lam * x + (1.0 - lam) * x[perm], lam * ys + (1.0 - lam) * ys[perm]


# --------------------------------------------------------------------------------------------- cutmix
def cutmix_box(generator: torch.Generator, spatial_shape: Sequence[int], lam: float) -> Box:
    """The CutMix box (Yun et al. 2019, eq. 2): sides ``r_k = round(S_k (1 - lam)^(1/d))`` (``sqrt`` in 2-D,
    so the unclipped area is ``(1 - lam)`` of the whole), centred uniformly (``randint(0, S_k)`` per dimension,
    in order), clipped at the borders. Returns ``((start, end), ...)`` per spatial dimension."""
    _check_generator(generator)
    shape = _check_spatial_shape(spatial_shape)
    lam = _check_lam(lam)
    d = len(shape)
    side_ratio = (1.0 - lam) ** (1.0 / d)
    sides = torch.tensor([[round(s * side_ratio) for s in shape]], dtype=torch.long, device=generator.device)
    centres = torch.stack(
        [torch.randint(0, s, (1,), generator=generator, device=generator.device) for s in shape], dim=1
    )
    starts, ends = _centred_boxes(centres, sides, shape)
    return tuple((int(a), int(b)) for a, b in zip(starts[0].tolist(), ends[0].tolist()))


def cutmix(
    x: Tensor,
    y: Tensor,
    lam: float,
    perm: Tensor,
    generator: torch.Generator,
    *,
    num_classes: int | None = None,
    spatial_dims: int | None = None,
) -> tuple[Tensor, Tensor, Box]:
    """CutMix: paste the box of :func:`cutmix_box` from ``x[perm]`` into ``x`` (one box for the batch), and mix
    the targets by the area actually pasted after clipping: ``lam' = 1 - |box| / |x|``,
    ``y~ = lam' y + (1 - lam') y[perm]`` (Yun et al. 2019, eq. 1).

    ``x``: ``(B, L)``, ``(B, C, L)`` or ``(B, C, H, W)`` (see the module docstring); ``y``: integer labels
    ``(B,)`` with ``num_classes``, or soft ``(B, C)``. Returns ``(x~, y~, box)``.
    """
    _check_tensor(x, floating=True)
    d = infer_spatial_dims(x, spatial_dims)
    batch = x.shape[0]
    spatial = tuple(x.shape[x.ndim - d :])
    perm = _check_perm(perm, batch).to(x.device)
    ys = soft_targets(y, batch, num_classes, x.dtype).to(x.device)
    box = cutmix_box(generator, spatial, lam)
    starts = torch.tensor([[b[0] for b in box]], dtype=torch.long, device=x.device)
    ends = torch.tensor([[b[1] for b in box]], dtype=torch.long, device=x.device)
    mask = _per_example(box_mask(starts, ends, spatial), x, d)  # (1, 1.., *spatial)
    pasted = math.prod(b - a for a, b in box)
    lam_area = 1.0 - pasted / math.prod(spatial)
    x_mixed = torch.where(mask, x[perm], x)
    return x_mixed, lam_area * ys + (1.0 - lam_area) * ys[perm], box


# ---------------------------------------------------------------------------------------------- shift
def sample_shifts(generator: torch.Generator, batch_size: int, max_shift: Sequence[int]) -> Tensor:
    """Per-example integer shifts ``(B, d)``, uniform on ``[-m_k, m_k]`` per dimension (one ``randint`` per
    dimension, in order)."""
    _check_generator(generator)
    batch = _check_batch_size(batch_size)
    ms = tuple(max_shift)
    if not ms or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in ms):
        raise ValueError(f"max_shift must be non-negative ints, one per spatial dimension, got {max_shift!r}")
    cols = [torch.randint(-m, m + 1, (batch,), generator=generator, device=generator.device) for m in ms]
    return torch.stack(cols, dim=1)


def shift(
    x: Tensor, shifts: Tensor, *, mode: Literal["zeros", "circular"] = "zeros", spatial_dims: int | None = None
) -> Tensor:
    """Shift each example by ``shifts[b]`` (``(B, d)``) positions along its spatial dimensions, like
    ``np.roll``: ``out[i] = x[i - s]``. ``mode="circular"`` wraps around; ``"zeros"`` fills the uncovered
    positions with 0 (a zero-padded shift, i.e. pad-and-crop)."""
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    if mode not in ("zeros", "circular"):
        raise ValueError(f"mode must be 'zeros' or 'circular', got {mode!r}")
    if not isinstance(shifts, Tensor) or shifts.dtype.is_floating_point or shifts.shape != (x.shape[0], d):
        raise ValueError(f"shifts must be an integer tensor of shape ({x.shape[0]}, {d})")
    shifts = shifts.to(x.device).long()
    out = x
    batch = x.shape[0]
    # separable: a d-dimensional shift is d one-dimensional ones, each a gather along its dimension
    for k in range(d):
        dim = x.ndim - d + k
        size = x.shape[dim]
        src = torch.arange(size, device=x.device)[None, :] - shifts[:, k, None]  # (B, S): source index of i
        view = [batch] + [1] * (x.ndim - 1)
        view[dim] = size
        if mode == "circular":
            out = out.gather(dim, (src % size).view(view).expand(x.shape))
        else:
            valid = ((src >= 0) & (src < size)).view(view)
            out = out.gather(dim, src.clamp(0, size - 1).view(view).expand(x.shape)).masked_fill(~valid, 0)
    return out


def random_shift(
    x: Tensor,
    generator: torch.Generator,
    max_shift: int | float | Sequence[int] | None = None,
    *,
    mode: Literal["zeros", "circular"] = "zeros",
    spatial_dims: int | None = None,
) -> Tensor:
    """Shift each example by a uniform integer in ``[-max_shift, max_shift]`` per spatial dimension.

    ``max_shift=None`` is :data:`SHIFT_FRACTION` (0.1) of each side (4 of 40, 3 of 28); a float in (0, 1) is
    a fraction of each side; it must be smaller than the side.
    """
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    spatial = tuple(x.shape[x.ndim - d :])
    ms = resolve_sizes(max_shift, spatial, SHIFT_FRACTION, "max_shift")
    if any(m >= s for m, s in zip(ms, spatial)):
        raise ValueError(f"max_shift {ms} must be smaller than the spatial size {spatial}")
    return shift(x, sample_shifts(generator, x.shape[0], ms), mode=mode, spatial_dims=d)


# ----------------------------------------------------------------------------------------------- flip
def sample_flips(generator: torch.Generator, batch_size: int, p: float = 0.5, vertical: bool = False) -> Tensor:
    """Per-example flip decisions ``(B, 1)`` (horizontal) or ``(B, 2)`` (horizontal, vertical), each True with
    probability ``p`` (``rand(B)`` per column, in order)."""
    _check_generator(generator)
    batch = _check_batch_size(batch_size)
    p = _check_prob(p, "p")
    cols = [torch.rand(batch, generator=generator, device=generator.device) < p for _ in range(2 if vertical else 1)]
    return torch.stack(cols, dim=1)


def flip(x: Tensor, flags: Tensor, *, spatial_dims: int | None = None) -> Tensor:
    """Flip the examples whose ``flags[b, 0]`` is True along the last dimension (horizontal; a 1-D signal is
    reversed) and, with a second column (2-D only), those with ``flags[b, 1]`` along the height."""
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    if not isinstance(flags, Tensor) or flags.dtype != torch.bool or flags.ndim != 2 or flags.shape[0] != x.shape[0]:
        raise ValueError(f"flags must be a bool tensor of shape ({x.shape[0]}, 1 or 2)")
    if flags.shape[1] not in (1, 2) or (flags.shape[1] == 2 and d != 2):
        raise ValueError("a vertical flip (a second flags column) needs 2 spatial dimensions (images)")
    flags = flags.to(x.device)
    out = torch.where(_per_example(flags[:, 0], x, d), x.flip(-1), x)
    if flags.shape[1] == 2:
        out = torch.where(_per_example(flags[:, 1], x, d), out.flip(-2), out)
    return out


def random_flip(
    x: Tensor, generator: torch.Generator, p: float = 0.5, *, vertical: bool = False, spatial_dims: int | None = None
) -> Tensor:
    """Flip each example horizontally (1-D: reverse it) with probability ``p``; with ``vertical=True`` (images
    only) also flip it upside down, independently, with probability ``p``."""
    _check_tensor(x)
    d = infer_spatial_dims(x, spatial_dims)
    if vertical and d != 2:
        raise ValueError("vertical=True needs images (2 spatial dimensions); a 1-D signal has only one direction")
    return flip(x, sample_flips(generator, x.shape[0], p, vertical), spatial_dims=d)
