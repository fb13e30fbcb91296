"""Dropout-family regularizers: torch's dropout and spatial dropout, plus DropBlock, Shakeout and DropPath.

Torch already ships standard dropout (Srivastava et al. 2014, JMLR) as :class:`torch.nn.Dropout` and spatial
(channel-wise) dropout (Tompson et al. 2015, CVPR, "Efficient object localization using convolutional
networks") as :class:`torch.nn.Dropout1d` / :class:`torch.nn.Dropout2d`; they are exposed unchanged in
:data:`LAYER_SPECS`. Written here, each as a pure function plus a thin ``nn.Module``:

* :func:`drop_block` / :class:`DropBlock` - DropBlock (Ghiasi, Lin & Le 2018, NeurIPS): drop contiguous
  ``block_size``-wide regions of a feature map, because neighbouring activations of a convolution are correlated
  and dropping single units removes almost no information.
* :func:`shakeout_linear` / :class:`ShakeoutLinear` - Shakeout (Kang, Li & Tao 2016, AAAI): per input unit,
  either enhance or reverse its contribution, which induces an L1 + L2 penalty instead of dropout's L2 one.
* :func:`drop_path` / :class:`DropPath` - stochastic depth (Huang et al. 2016, ECCV): drop a whole residual
  branch per example.

Every stochastic function takes ``training`` (identity, or the plain layer, when False) and an optional
``torch.Generator`` for reproducible masks; the modules use the global RNG, as ``nn.Dropout`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.layers.spec import LayerSpec

__all__ = [
    "LAYER_SPECS",
    "DropBlock",
    "DropPath",
    "ShakeoutLinear",
    "drop_block",
    "drop_block_gamma",
    "drop_block_mask",
    "drop_path",
    "shakeout_linear",
]


# --------------------------------------------------------------------------------------------- validation
def _check_tensor(name: str, x: object) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} expects a floating-point tensor, got dtype {x.dtype}; cast with x.float()")


def _check_prob(name: str, value: object, *, what: str = "drop probability") -> float:
    """A probability in [0, 1): 1 would drop everything and make the 1 / (1 - p) rescaling infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float {what} in [0, 1), got {type(value).__name__} {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0 or math.isnan(value):
        raise ValueError(f"{name} must be a {what} in [0, 1), got {value!r}")
    return value


def _check_block_size(block_size: object) -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int (the side of a dropped square), got {block_size!r}")
    return block_size


# ---------------------------------------------------------------------------------------------- DropBlock
def drop_block_gamma(drop_prob: float, block_size: int, feature_size: Sequence[int]) -> float:
    """Seed rate gamma of DropBlock (Ghiasi et al. 2018, eq. 1), generalised to d-D and non-square maps.

    Paper (square d = 2 maps): gamma = (1 - keep_prob) / block_size^2 * feat_size^2 / (feat_size - block_size
    + 1)^2. Each seed drops block_size^d units and seeds live only in the (S - b + 1)^d valid positions, so the
    expected number of dropped units, overlaps counted twice, is drop_prob * prod(S). Here, per spatial axis k,
    b_k = min(block_size, S_k) (a block never exceeds the map) and

        gamma = drop_prob * prod_k S_k / (b_k * (S_k - b_k + 1)).

    Since b (S - b + 1) >= S for 1 <= b <= S, gamma <= drop_prob < 1.
    """
    drop_prob = _check_prob("drop_block_gamma drop_prob", drop_prob)
    block_size = _check_block_size(block_size)
    gamma = drop_prob
    for s in feature_size:
        if s < 1:
            raise ValueError(f"feature_size must be positive, got {tuple(feature_size)}")
        b = min(block_size, s)
        gamma *= s / (b * (s - b + 1))
    return gamma


def _expand_seeds(seeds: Tensor, sizes: Sequence[int]) -> Tensor:
    """Dropped-unit indicator from seed indicators: a seed at index s covers s .. s + b - 1 on every axis.

    seeds: (B, C, *(S_k - b_k + 1)), 0/1 floats. Zero-padding by b_k - 1 on both sides of axis k and taking a
    stride-1 max pool of width b_k gives out[y] = max(seeds[y - b_k + 1 .. y]), i.e. 1 iff some block covers y;
    the output has the feature map's size S_k = (S_k - b_k + 1) + 2 (b_k - 1) - b_k + 1.
    """
    pad: list[int] = []
    for b in reversed(sizes):  # F.pad lists the last axis first
        pad += [b - 1, b - 1]
    padded = F.pad(seeds, pad)
    if len(sizes) == 1:
        return F.max_pool1d(padded, kernel_size=sizes[0], stride=1)
    return F.max_pool2d(padded, kernel_size=tuple(sizes), stride=1)


def drop_block_mask(
    shape: Sequence[int],
    drop_prob: float,
    block_size: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Keep mask of DropBlock (1 = keep, 0 = dropped) for activations of ``shape`` (B, C, L) or (B, C, H, W).

    Algorithm 1 of Ghiasi et al. 2018, steps 2-3: sample seeds M ~ Bernoulli(gamma) independently per example,
    channel and valid position (top-left corners of blocks that fit entirely in the map), then zero the
    block_size-wide square (segment in 1-D) of every seed. Uniforms are drawn in float32 (float64 for float64
    masks) with ``generator`` so masks are reproducible.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (3, 4):
        raise ValueError(f"drop_block_mask: shape must be (B, C, L) or (B, C, H, W), got {shape}")
    block_size = _check_block_size(block_size)
    spatial = shape[2:]
    sizes = [min(block_size, s) for s in spatial]
    gamma = drop_block_gamma(drop_prob, block_size, spatial)
    seed_shape = (*shape[:2], *(s - b + 1 for s, b in zip(spatial, sizes)))
    rand_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    # generator=None is not passed on: torch.compile cannot trace rand(..., generator=None) on symbolic shapes
    extra = {} if generator is None else {"generator": generator}
    u = torch.rand(seed_shape, device=device, dtype=rand_dtype, **extra)
    seeds = (u < gamma).to(rand_dtype)
    return (1.0 - _expand_seeds(seeds, sizes)).to(dtype)


def drop_block(
    x: Tensor, drop_prob: float, block_size: int, training: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """DropBlock (Ghiasi, Lin & Le 2018, Algorithm 1) on (B, C, L) or (B, C, H, W) activations.

    Returns ``x * M * count(M) / count_ones(M)``, with M from :func:`drop_block_mask` (an independent mask per
    example and channel) and the counts over the whole tensor (step 5: the kept units are rescaled so the total
    activation is preserved). Identity when ``training`` is False or ``drop_prob`` is 0.

    Expectation: every (example, channel) map has the same distribution, so the map-averaged output is an
    unbiased estimate of a map-constant input; per position, units near the border are covered by fewer valid
    seeds and are dropped less often than interior ones (as in the paper, whose seeds stay in the valid region).
    """
    _check_tensor("drop_block", x)
    if x.dim() not in (3, 4):
        raise ValueError(f"drop_block expects (B, C, L) or (B, C, H, W) activations, got shape {tuple(x.shape)}")
    drop_prob = _check_prob("drop_block drop_prob", drop_prob)
    block_size = _check_block_size(block_size)
    if not training or drop_prob == 0.0:
        return x
    mask = drop_block_mask(x.shape, drop_prob, block_size, generator=generator, device=x.device, dtype=x.dtype)
    # count / count_ones; clamp so an all-dropped tensor (possible on tiny maps) gives zeros, not NaN
    scale = mask.numel() / mask.sum().clamp_min(1.0)
    return x * mask * scale


class DropBlock(nn.Module):
    """DropBlock layer (Ghiasi et al. 2018) for 2-D (``dim=2``: (B, C, H, W)) or 1-D (``dim=1``: (B, C, L)) maps.

    ``drop_prob`` is a plain attribute that may be changed at any time (validated on assignment): the paper
    increases it linearly during training, see :class:`tricklab.techniques.dropblock_schedule.DropBlockSchedule`.
    Under ``torch.compile`` a new value of ``drop_prob`` triggers a recompile (it is a Python constant).
    """

    def __init__(self, drop_prob: float = 0.1, block_size: int = 7, dim: int = 2) -> None:
        super().__init__()
        if dim not in (1, 2):
            raise ValueError(f"DropBlock dim must be 1 (B, C, L) or 2 (B, C, H, W), got {dim!r}")
        self.dim = dim
        self.block_size = _check_block_size(block_size)
        self.drop_prob = drop_prob  # validated by __setattr__ below

    def __setattr__(self, name: str, value: object) -> None:
        if name == "drop_prob":
            value = _check_prob("DropBlock.drop_prob", value)
        super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != self.dim + 2:
            layout = "(B, C, L)" if self.dim == 1 else "(B, C, H, W)"
            hint = f"; build DropBlock(dim={x.dim() - 2}) for this input" if x.dim() in (3, 4) else ""
            raise ValueError(f"DropBlock(dim={self.dim}) expects {layout} input, got shape {tuple(x.shape)}{hint}")
        return drop_block(x, self.drop_prob, self.block_size, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}, dim={self.dim}"


# ----------------------------------------------------------------------------------------------- Shakeout
def shakeout_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    tau: float,
    c: float,
    training: bool = True,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Shakeout on the inputs of a linear layer (Kang, Li & Tao 2016, AAAI, eq. 5 and Fig. 1).

    For each example and input unit j draw r_j ~ Bernoulli(1 - tau) (or take ``mask``, shape (..., in), 0/1)
    and use, for every output i, the effective weight

        w~_ij = (w_ij + c tau s_ij) / (1 - tau)   if r_j = 1   ("enhance": alpha (w + beta(w)), alpha = 1/(1-tau),
        w~_ij = -c s_ij                           if r_j = 0    "reverse"; beta(w) = c tau sgn(w))

    with s = sgn(W). Equivalently u_i = sum_j x_j (r~_j w_ij + c (r~_j - 1) s_ij) + b_i with r~_j = r_j / (1 - tau),
    computed as two matmuls: u = (x r~) W^T + c (x (r~ - 1)) sgn(W)^T + b. E[r~_j] = 1, so E[u] = x W^T + b: the
    expectation is the plain linear layer, which is what evaluation (``training=False``) returns. c = 0 is
    inverted dropout on the inputs. sgn has zero derivative, so dW comes from the first term only.

    Shapes: x (..., in), weight (out, in), bias (out,) or None -> (..., out).
    """
    _check_tensor("shakeout_linear", x)
    if not isinstance(weight, Tensor) or weight.dim() != 2:
        raise ValueError(f"shakeout_linear weight must be a 2-D (out, in) tensor, got "
                         f"{tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}")
    if x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"shakeout_linear: x has {x.shape[-1] if x.dim() else 0} features in its last dim but "
                         f"weight expects {weight.shape[1]} (weight is (out, in) = {tuple(weight.shape)})")
    tau = _check_prob("shakeout tau", tau, what="probability of the reverse branch")
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c >= 0.0 or math.isinf(c):
        raise ValueError(f"shakeout c must be a finite float >= 0, got {c!r}")
    if not training:
        return F.linear(x, weight, bias)
    if mask is None:
        keep_prob = torch.full(x.shape, 1.0 - tau, dtype=x.dtype, device=x.device)
        mask = torch.bernoulli(keep_prob, generator=generator)  # r: (..., in)
    elif mask.shape != x.shape:
        raise ValueError(f"shakeout mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    r_tilde = mask.to(x.dtype) / (1.0 - tau)  # (..., in)
    out = F.linear(x * r_tilde, weight, bias)  # sum_j x_j r~_j w_ij + b_i
    if c != 0.0:
        out = out + c * F.linear(x * (r_tilde - 1.0), torch.sign(weight))  # + c sum_j x_j (r~_j - 1) s_ij
    return out


class ShakeoutLinear(nn.Linear):
    """``nn.Linear`` trained with Shakeout on its inputs (Kang et al. 2016); a plain linear layer in eval mode.

    Args:
        in_features, out_features, bias: as for ``nn.Linear`` (same initialisation).
        tau: probability of the "reverse" branch (the dropout rate when c = 0), in [0, 1).
        c: strength of the sign term (>= 0); larger c means a stronger L1-like pull of weights towards 0.
    """

    def __init__(self, in_features: int, out_features: int, tau: float = 0.5, c: float = 1.0,
                 bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.tau = _check_prob("ShakeoutLinear tau", tau, what="probability of the reverse branch")
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not c >= 0.0 or math.isinf(c):
            raise ValueError(f"ShakeoutLinear c must be a finite float >= 0, got {c!r}")
        self.c = float(c)

    def forward(self, x: Tensor) -> Tensor:
        return shakeout_linear(x, self.weight, self.bias, self.tau, self.c, self.training)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}, c={self.c}"


# ------------------------------------------------------------------------------------- DropPath (depth)
def drop_path(x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None) -> Tensor:
    """Stochastic depth on a residual branch (Huang et al. 2016): zero the whole branch of an example w.p. p.

    x: (B, ...) - the branch output f(x) of a block computing x + f(x). One b ~ Bernoulli(1 - p) per example,
    broadcast over the other dims, and the kept branches are scaled by 1 / (1 - p) so E[out] = x; the paper
    instead scales by the survival probability at test time, which is the same model up to that constant.
    Identity when ``training`` is False or p = 0. p = 1 is refused: the branch would never be trained while
    evaluation (identity) would still use it; remove the block instead.
    """
    _check_tensor("drop_path", x)
    if isinstance(p, (int, float)) and not isinstance(p, bool) and float(p) == 1.0:
        raise ValueError("drop_path p = 1 would drop the branch on every step (and 1 / (1 - p) is infinite); "
                         "use p < 1, or remove the residual branch from the model")
    p = _check_prob("drop_path p", p)
    if not training or p == 0.0:
        return x
    if x.dim() == 0:
        raise ValueError("drop_path expects a batch (B, ...), got a 0-d tensor")
    keep = torch.full((x.shape[0],) + (1,) * (x.dim() - 1), 1.0 - p, dtype=x.dtype, device=x.device)
    keep = torch.bernoulli(keep, generator=generator)  # (B, 1, ..., 1)
    return x * (keep / (1.0 - p))


class DropPath(nn.Module):
    """Stochastic depth / DropPath (Huang et al. 2016): wrap the output of a residual branch with it."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if isinstance(p, (int, float)) and not isinstance(p, bool) and float(p) == 1.0:
            raise ValueError("DropPath p = 1 would never train the branch; use p < 1 or remove the branch")
        self.p = _check_prob("DropPath p", p)

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ------------------------------------------------------------------------------------------------- specs
def _seq(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 3, 16, generator=g),)


def _img(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 3, 8, 8, generator=g),)


def _vec(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(5, 6, generator=g),)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("dropout", "dropout", lambda: nn.Dropout(0.5), _vec,
              "torch.nn.Dropout: zero units w.p. p, scale the rest by 1/(1-p) (Srivastava et al. 2014)."),
    LayerSpec("dropout1d", "dropout", lambda: nn.Dropout1d(0.5), _seq,
              "torch.nn.Dropout1d: spatial dropout, whole (B, C, L) channels (Tompson et al. 2015)."),
    LayerSpec("dropout2d", "dropout", lambda: nn.Dropout2d(0.5), _img,
              "torch.nn.Dropout2d: spatial dropout, whole (B, C, H, W) feature maps (Tompson et al. 2015)."),
    LayerSpec("drop_block", "dropout", lambda: DropBlock(0.2, block_size=3, dim=2), _img,
              "DropBlock on (B, C, H, W): drop contiguous square regions (Ghiasi et al. 2018)."),
    LayerSpec("drop_block1d", "dropout", lambda: DropBlock(0.2, block_size=3, dim=1), _seq,
              "DropBlock on (B, C, L): drop contiguous segments (Ghiasi et al. 2018, in 1-D)."),
    LayerSpec("shakeout_linear", "dropout", lambda: ShakeoutLinear(6, 4, tau=0.3, c=0.5), _vec,
              "Linear layer with Shakeout on its inputs: enhance or reverse each unit (Kang et al. 2016)."),
    LayerSpec("drop_path", "dropout", lambda: DropPath(0.3), _seq,
              "Stochastic depth: drop a residual branch per example, scale by 1/(1-p) (Huang et al. 2016)."),
)
