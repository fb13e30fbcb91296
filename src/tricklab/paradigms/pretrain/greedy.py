"""Greedy layer-wise pretraining of a deep sigmoid network (stacked autoencoders or RBMs), then fine-tuning.

Hinton, Osindero & Teh, "A fast learning algorithm for deep belief nets", Neural Computation 2006 (RBMs), and
Bengio, Lamblin, Popovici & Larochelle, "Greedy Layer-Wise Training of Deep Networks", NIPS 2006 (autoencoders):
layer l is trained without labels on the output of layers 1..l-1, which are frozen, then the stack initialises a
deep network that is fine-tuned end to end with labels. The denoising variant (Vincent et al., "Extracting and
Composing Robust Features with Denoising Autoencoders", ICML 2008) corrupts the layer's input by zeroing a random
fraction of it and reconstructs the clean input. Inputs should lie in [0, 1] (:func:`to_unit_interval`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.paradigms.pretrain.rbm import RBM

__all__ = ["deep_sigmoid_mlp", "greedy_pretrain", "to_unit_interval"]


def to_unit_interval(x: Tensor, reference: Tensor | None = None) -> Tensor:
    """Min-max scale each feature to [0, 1] with the min and max of ``reference`` (default ``x``), clamped."""
    ref = x if reference is None else reference
    lo, hi = ref.min(0).values, ref.max(0).values
    return ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


def deep_sigmoid_mlp(sizes: Sequence[int], num_classes: int, init: Sequence[nn.Linear] | None = None
                     ) -> nn.Sequential:
    """``Linear-Sigmoid`` blocks ``sizes[0] -> ... -> sizes[-1]``, then a linear head; ``init`` copies pretrained
    layers into the blocks."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        if init is not None:
            lin.load_state_dict(init[i].state_dict())
        layers += [lin, nn.Sigmoid()]
    layers.append(nn.Linear(sizes[-1], num_classes))
    return nn.Sequential(*layers)


def _train_autoencoder(h: Tensor, out: int, steps: int, batch: int, lr: float, noise: float,
                       g: torch.Generator) -> tuple[nn.Linear, list[float]]:
    enc, dec = nn.Linear(h.shape[1], out), nn.Linear(out, h.shape[1])
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=lr)
    losses = []
    for _ in range(steps):
        xb = h[torch.randint(0, len(h), (batch,), generator=g)]
        keep = (torch.rand(xb.shape, generator=g) >= noise).to(xb)  # masking noise (denoising autoencoder)
        recon = torch.sigmoid(dec(torch.sigmoid(enc(xb * keep))))
        loss = F.binary_cross_entropy(recon, xb)  # reconstruct the clean input; inputs in [0, 1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return enc, losses


def _train_rbm(h: Tensor, out: int, steps: int, batch: int, lr: float, g: torch.Generator
               ) -> tuple[nn.Linear, list[float]]:
    rbm = RBM(h.shape[1], out, generator=g)
    losses = [rbm.cd_step(h[torch.randint(0, len(h), (batch,), generator=g)], lr, g) for _ in range(steps)]
    lin = nn.Linear(h.shape[1], out)
    with torch.no_grad():
        lin.weight.copy_(rbm.weight.T)  # p(h | v) = sigmoid(v W + b_h): the same map as the Linear-Sigmoid block
        lin.bias.copy_(rbm.b_h)
    return lin, losses


def greedy_pretrain(x: Tensor, sizes: Sequence[int], *, method: str = "autoencoder", steps_per_layer: int = 500,
                    batch_size: int = 64, lr: float | None = None, noise: float = 0.0, seed: int = 0,
                    on_layer: Callable[[int, list[float]], None] | None = None) -> list[nn.Linear]:
    """Pretrain ``len(sizes)`` layers of widths ``sizes`` on ``x`` (N, D) in [0, 1], one at a time, each on the
    frozen output of the ones before. ``method``: "autoencoder" (``noise`` > 0: denoising) or "rbm" (CD-1).
    ``on_layer(l, losses)`` is called after each layer (progress). Returns the trained Linear layers."""
    if method not in ("autoencoder", "rbm"):
        raise ConfigError(f"method must be 'autoencoder' or 'rbm', got {method!r}")
    if not 0.0 <= noise < 1.0:
        raise ConfigError(f"noise (fraction of inputs zeroed) must be in [0, 1), got {noise!r}")
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise ConfigError("greedy_pretrain needs inputs in [0, 1]; scale them with to_unit_interval(x)")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the Linear layers' initialisation
    layers: list[nn.Linear] = []
    h = x.reshape(len(x), -1).float()
    for i, out in enumerate(sizes):
        if method == "autoencoder":
            lin, losses = _train_autoencoder(h, out, steps_per_layer, batch_size, lr or 1e-3, noise, g)
        else:
            lin, losses = _train_rbm(h, out, steps_per_layer, batch_size, lr or 0.05, g)
        for p in lin.parameters():
            p.requires_grad_(False)  # frozen while the layers above it train
        layers.append(lin)
        if on_layer is not None:
            on_layer(i, losses)
        with torch.no_grad():
            h = torch.sigmoid(lin(h))  # the next layer's input
    for lin in layers:
        for p in lin.parameters():
            p.requires_grad_(True)  # fine-tuning trains them all
    return layers
