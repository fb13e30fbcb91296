"""Federated averaging (McMahan et al., 2017) and FedProx (Li et al., 2020), as a functional core.

A round: the server sends w_t to the selected clients S_t; client k runs ``epochs`` of minibatch SGD on its n_k
examples from w_t on
    h_k(w) = F_k(w) + (mu / 2) ||w - w_t||^2           (FedProx eq. 2; mu = 0 is FedAvg's local objective);
the server sets w_{t+1} = sum_{k in S_t} (n_k / n_S) w_k (FedAvg, Algorithm 1). With ``dp`` each local step is a
DP-SGD step (per-example clipping and Gaussian noise, Poisson-sampled batches: the accountant's setting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad

from tricklab.paradigms.federated.dp import clip_and_noise, per_sample_grads
from tricklab.paradigms.federated.secagg import mask_updates, masked_sum

__all__ = ["DPSettings", "client_update", "weighted_average", "secure_weighted_average"]

Params = dict[str, Tensor]


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD on a client: per-example clip norm, noise multiplier sigma, Poisson sampling rate per step."""

    clip: float
    sigma: float
    sample_rate: float


def _local_loss(model: nn.Module, p: Params, x: Tensor, y: Tensor, anchor: Params | None, mu: float) -> Tensor:
    loss = F.cross_entropy(functional_call(model, p, (x,)), y)
    if anchor is not None and mu > 0:
        loss = loss + 0.5 * mu * sum((p[k] - anchor[k]).pow(2).sum() for k in p)
    return loss


def client_update(model: nn.Module, global_params: Params, x: Tensor, y: Tensor, *, epochs: int, batch_size: int,
                  lr: float, mu: float = 0.0, gen: torch.Generator | None = None,
                  dp: DPSettings | None = None) -> tuple[Params, int]:
    """Local training from ``global_params``; returns (the client's new parameters, steps taken).

    Without ``dp``: ``epochs`` passes over a fresh permutation in batches of ``batch_size`` (plain SGD, step
    ``lr``). With ``dp``: the same number of steps (epochs * ceil(n / batch_size)), each on a Poisson sample of
    rate ``dp.sample_rate``, the proximal term added to the privatised gradient (it does not touch the data)."""
    anchor = {k: v.detach() for k, v in global_params.items()}
    p = dict(anchor)
    n = len(x)
    steps_per_epoch = -(-n // batch_size)
    steps = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(steps_per_epoch):
            if dp is None:
                idx = perm[s * batch_size : (s + 1) * batch_size]
                g = grad(lambda q: _local_loss(model, q, x[idx], y[idx], anchor, mu))(p)
            else:
                take = torch.rand(n, generator=gen) < dp.sample_rate
                idx = torch.nonzero(take).flatten()
                if len(idx):
                    g = clip_and_noise(per_sample_grads(model, p, x[idx], y[idx]), dp.clip, dp.sigma,
                                       dp.sample_rate * n, gen)
                else:  # an empty Poisson batch still releases pure noise
                    g = clip_and_noise({k: torch.zeros(1, *v.shape, dtype=v.dtype) for k, v in p.items()},
                                       dp.clip, dp.sigma, dp.sample_rate * n, gen)
                if mu > 0:
                    g = {k: g[k] + mu * (p[k] - anchor[k]) for k in p}
            p = {k: (v - lr * g[k]).detach() for k, v in p.items()}
            steps += 1
    return p, steps


def weighted_average(updates: list[Params], weights: list[float]) -> Params:
    """sum_k (w_k / sum w) params_k, the FedAvg server step."""
    total = float(sum(weights))
    return {k: sum(u[k] * (w / total) for u, w in zip(updates, weights)) for k in updates[0]}


def secure_weighted_average(updates: list[Params], weights: list[float], seed: int, frac_bits: int = 24) -> Params:
    """The same average, with the server only seeing pairwise-masked fixed-point vectors of w_k * params_k
    (:mod:`.secagg`); equal to :func:`weighted_average` up to the 2^-frac_bits quantisation."""
    keys = list(updates[0])
    flat = [torch.cat([u[k].flatten().double() * w for k in keys]) for u, w in zip(updates, weights)]
    total = masked_sum(mask_updates(flat, seed, frac_bits), frac_bits) / float(sum(weights))
    out, i = {}, 0
    for k in keys:
        ref = updates[0][k]
        out[k] = total[i : i + ref.numel()].view_as(ref).to(ref.dtype)
        i += ref.numel()
    return out
