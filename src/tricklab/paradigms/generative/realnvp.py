"""RealNVP (Dinh, Sohl-Dickstein & Bengio, 2017): a normalizing flow of affine coupling layers with an exact
log-likelihood by the change of variables, ``log p_X(x) = log p_Z(f(x)) + log |det df/dx|`` (paper eq. 3).

Affine coupling with a binary mask b (paper eq. 9): ``y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x))``.
Its Jacobian is triangular, so ``log |det| = sum_j (1 - b_j) s_j(b * x)`` (eq. 6) and the inverse is
``x = b * y + (1 - b) * (y - t(b * y)) * exp(-s(b * y))`` (eq. 8); s and t may be any networks.

Functional core: :func:`coupling_forward` / :func:`coupling_inverse` (given s and t), the masks
(:func:`checkerboard_mask`, :func:`channel_mask`, :func:`alternating_mask`), :func:`squeeze` (the paper's
2x2 space-to-channel reshape, volume preserving), :func:`logit_preprocess` (the paper's section 4.1 logit of a
dequantized image, with its log-determinant) and :func:`dequantize`.

Shells: :class:`AffineCoupling`, :class:`Squeeze`, :class:`LogitTransform` and :class:`RealNVP`, a sequence of
such flows with a standard normal base. Every flow module maps ``x -> (y, logdet)`` with ``logdet`` (B,) and has
``inverse(y)``. Builders: :func:`realnvp_mlp` (flat vectors, alternating masks) and :func:`realnvp_image`
(checkerboard couplings, a squeeze, channel couplings, an unsqueeze, checkerboard couplings: the paper's
single-scale block without the factored-out multi-scale levels). The paper's batch normalization inside the flow
is left out on purpose: its log-determinant depends on batch statistics in training, and small CPU budgets train
stably without it (the scale is bounded by ``scale * tanh``, as in the paper's s network).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = [
    "AffineCoupling",
    "LogitTransform",
    "RealNVP",
    "Squeeze",
    "alternating_mask",
    "channel_mask",
    "checkerboard_mask",
    "coupling_forward",
    "coupling_inverse",
    "dequantize",
    "logit_preprocess",
    "realnvp_image",
    "realnvp_mlp",
    "squeeze",
    "unsqueeze",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------------------------ functional core
def coupling_forward(x: Tensor, mask: Tensor, s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Paper eq. 9 and eq. 6: ``y = b x + (1 - b)(x exp(s) + t)``, ``logdet = sum (1 - b) s`` per example.
    ``s``, ``t`` are computed from ``b * x`` by the caller; shapes like ``x`` (B, ...); mask broadcasts."""
    inv = 1.0 - mask
    y = mask * x + inv * (x * torch.exp(s) + t)
    return y, (inv * s).flatten(1).sum(1)


def coupling_inverse(y: Tensor, mask: Tensor, s: Tensor, t: Tensor) -> Tensor:
    """Paper eq. 8: ``x = b y + (1 - b)(y - t) exp(-s)``, with s, t computed from ``b * y`` (= ``b * x``)."""
    return mask * y + (1.0 - mask) * (y - t) * torch.exp(-s)


def checkerboard_mask(height: int, width: int, parity: int = 0) -> Tensor:
    """(1, 1, H, W) float mask, 1 where (i + j + parity) is even (the paper's figure 3, left)."""
    i = torch.arange(height).view(-1, 1)
    j = torch.arange(width).view(1, -1)
    return ((i + j + parity) % 2 == 0).float().view(1, 1, height, width)


def channel_mask(channels: int, parity: int = 0) -> Tensor:
    """(1, C, 1, 1) float mask, 1 on the first half of the channels (parity 0) or the second (parity 1)."""
    if channels < 2 or channels % 2:
        raise ConfigError(f"a channel mask needs an even number of channels >= 2, got {channels}")
    m = (torch.arange(channels) < channels // 2).float()
    return (m if parity == 0 else 1.0 - m).view(1, channels, 1, 1)


def alternating_mask(dim: int, parity: int = 0) -> Tensor:
    """(dim,) float mask for flat vectors: 1 on even indices (parity 0) or odd ones (parity 1)."""
    return ((torch.arange(dim) + parity) % 2 == 0).float()


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes 4 channels (paper section 3.6)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ConfigError(f"squeeze needs an even height and width, got {h}x{w}")
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """The inverse of :func:`squeeze`: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    b, c4, h, w = x.shape
    c = c4 // 4
    return x.view(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


def dequantize(x: Tensor, levels: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization: x holding k / (levels - 1) -> (k + U) / levels in [0, 1) with U ~ U[0, 1).

    A density model of the result gives a lower bound on the discrete log-likelihood:
    ``log P(k) >= E_U[log p(u)] - D log(levels)`` (Theis et al. 2016, section 3.1).
    """
    k = torch.round(x * (levels - 1))
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (k + u) / levels


def logit_preprocess(u: Tensor, alpha: float = 0.05) -> tuple[Tensor, Tensor]:
    """``y = logit(alpha + (1 - 2 alpha) u)`` for u in [0, 1] and its per-example log-determinant
    ``sum log((1 - 2 alpha) / (p (1 - p)))`` with p = alpha + (1 - 2 alpha) u (paper section 4.1, with the
    margin taken symmetrically so 0 and 1 map to finite values)."""
    p = alpha + (1.0 - 2.0 * alpha) * u
    y = torch.log(p) - torch.log1p(-p)
    logdet = (math.log(1.0 - 2.0 * alpha) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    return y, logdet


# ------------------------------------------------------------------------------------------------ module shells
class AffineCoupling(nn.Module):
    """One affine coupling layer. ``net`` maps the masked input (and, for images, the mask as an extra
    channel) to 2x the input's channels (images) or features (vectors): raw s and t. ``s = scale * tanh(raw)``
    with a learned per-channel scale (zero-initialised last layers make the layer start as the identity)."""

    def __init__(self, mask: Tensor, net: nn.Module, image: bool) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.net = net
        self.image = image
        channels = mask.shape[1] if image else mask.shape[-1]
        self.scale = nn.Parameter(torch.ones(channels))

    def _s_t(self, x_masked: Tensor) -> tuple[Tensor, Tensor]:
        if self.image:
            # the mask as an extra channel tells the convolutions which pixels are given (constant for channel masks)
            b, _, h, w = x_masked.shape
            inp = torch.cat([x_masked, self.mask.expand(b, -1, h, w)[:, :1]], dim=1)
            raw_s, t = self.net(inp).chunk(2, dim=1)
            s = self.scale.view(1, -1, 1, 1) * torch.tanh(raw_s)
        else:
            raw_s, t = self.net(x_masked).chunk(2, dim=-1)
            s = self.scale * torch.tanh(raw_s)
        return s, t

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s, t = self._s_t(self.mask * x)
        return coupling_forward(x, self.mask, s, t)

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._s_t(self.mask * y)
        return coupling_inverse(y, self.mask, s, t)


class Squeeze(nn.Module):
    """:func:`squeeze` (or :func:`unsqueeze` with ``reverse=True``) as a flow with log-determinant 0."""

    def __init__(self, reverse: bool = False) -> None:
        super().__init__()
        self.reverse = reverse

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = unsqueeze(x) if self.reverse else squeeze(x)
        return y, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return squeeze(y) if self.reverse else unsqueeze(y)


class LogitTransform(nn.Module):
    """:func:`logit_preprocess` as the first flow layer (inputs in [0, 1])."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0.0 < alpha < 0.5:
            raise ConfigError(f"alpha must be in (0, 0.5), got {alpha!r}")
        self.alpha = alpha

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        return logit_preprocess(u, self.alpha)

    def inverse(self, y: Tensor) -> Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)


class RealNVP(nn.Module):
    """A sequence of flows with a standard normal base: ``forward(x) -> (z, logdet)``,
    ``log_prob(x) = log N(z; 0, I) + logdet`` (B,) in nats, ``inverse(z)``, ``sample(n)``."""

    def __init__(self, flows: list[nn.Module], event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.flows = nn.ModuleList(flows)
        self.event_shape = tuple(event_shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for flow in self.flows:
            x, ld = flow(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor) -> Tensor:
        for flow in reversed(self.flows):
            z = flow.inverse(z)
        return z

    def log_prob(self, x: Tensor) -> Tensor:
        z, logdet = self(x)
        return -0.5 * (z.pow(2) + _LOG_2PI).flatten(1).sum(1) + logdet

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        p = next(self.parameters())
        z = torch.randn((n, *self.event_shape), generator=generator, dtype=p.dtype, device=p.device)
        return self.inverse(z)


def _zero_last(seq: nn.Sequential) -> nn.Sequential:
    last = [m for m in seq if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return seq


def realnvp_mlp(dim: int, hidden: int = 64, couplings: int = 4) -> RealNVP:
    """A RealNVP on flat vectors of ``dim``: ``couplings`` layers with alternating masks, MLP s/t networks."""
    if dim < 2 or couplings < 1 or hidden < 1:
        raise ConfigError(f"realnvp_mlp needs dim >= 2, couplings >= 1, hidden >= 1; got {dim}, {couplings}, {hidden}")
    flows: list[nn.Module] = []
    for i in range(couplings):
        net = _zero_last(nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                       nn.Linear(hidden, 2 * dim)))
        flows.append(AffineCoupling(alternating_mask(dim, i % 2), net, image=False))
    return RealNVP(flows, (dim,))


def _conv_net(c_in: int, c_out: int, hidden: int) -> nn.Sequential:
    return _zero_last(nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(),
                                    nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
                                    nn.Conv2d(hidden, 2 * c_out, 3, padding=1)))


def realnvp_image(channels: int = 1, size: int = 28, hidden: int = 32, blocks: int = 3,
                  logit: bool = True, alpha: float = 0.05) -> RealNVP:
    """RealNVP for (channels, size, size) images in [0, 1]: [logit] -> ``blocks`` checkerboard couplings ->
    squeeze -> ``blocks`` channel couplings -> unsqueeze -> ``blocks`` checkerboard couplings (alternating
    parities). s/t networks: conv3x3 - ReLU - conv1x1 - ReLU - conv3x3, ``hidden`` channels."""
    if size % 2 or size < 2:
        raise ConfigError(f"size must be even (one squeeze halves it), got {size}")
    if blocks < 1 or hidden < 1 or channels < 1:
        raise ConfigError(f"blocks, hidden and channels must be >= 1, got {blocks}, {hidden}, {channels}")
    flows: list[nn.Module] = [LogitTransform(alpha)] if logit else []
    for i in range(blocks):
        flows.append(AffineCoupling(checkerboard_mask(size, size, i % 2), _conv_net(channels + 1, channels, hidden),
                                    image=True))
    flows.append(Squeeze())
    for i in range(blocks):
        flows.append(AffineCoupling(channel_mask(4 * channels, i % 2), _conv_net(4 * channels + 1, 4 * channels,
                                                                                 hidden), image=True))
    flows.append(Squeeze(reverse=True))
    for i in range(blocks):
        flows.append(AffineCoupling(checkerboard_mask(size, size, (i + 1) % 2),
                                    _conv_net(channels + 1, channels, hidden), image=True))
    return RealNVP(flows, (channels, size, size))
