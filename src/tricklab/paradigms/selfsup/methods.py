"""Self-supervised pretraining of a backbone without labels: SimCLR, MoCo v2 and BYOL.

Each method is an nn.Module around an ``encoder`` (any module mapping inputs to (B, feature_dim) features) with a
``loss(view1, view2)`` method; after pretraining, ``encoder`` is the backbone (see :mod:`.probe`).

* SimCLR (Chen, Kornblith, Norouzi & Hinton, ICML 2020): projection head ``g`` (Linear-ReLU-Linear) on the
  features, NT-Xent over the 2N views (eq. 1, :func:`tricklab.losses.nt_xent`).
* MoCo v2 (He et al., CVPR 2020; Chen, Fan, Girshick & He, arXiv:2003.04297): a query encoder and a momentum key
  encoder ``theta_k <- m theta_k + (1 - m) theta_q`` (MoCo eq. 2), a FIFO queue of K past keys as negatives and
  InfoNCE ``-log exp(q.k+/tau) / (exp(q.k+/tau) + sum_queue exp(q.k/tau))`` (eq. 1), with v2's MLP head. Keys are
  computed without gradient and enqueued after the loss, replacing the oldest.
* BYOL (Grill et al., NeurIPS 2020): an online network (encoder, projector, predictor ``q``) and a target network
  (encoder, projector) that is an EMA of the online one, ``xi <- tau xi + (1 - tau) theta`` (sec. 3.1), with
  ``tau`` raised from tau_base to 1 by ``1 - (1 - tau_base)(cos(pi k / K) + 1) / 2``. The loss is the normalised
  MSE ``2 - 2 <q(z), z'> / (|q(z)| |z'|)`` (eq. 2), symmetrised over the two views (eq. 3); the target gets no
  gradient.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.errors import ConfigError
from tricklab.losses import nt_xent

__all__ = ["BYOL", "MoCo", "SimCLR", "byol_loss", "byol_tau", "enqueue_", "mlp_head", "moco_logits",
           "momentum_update_"]


def mlp_head(in_dim: int, hidden: int, out_dim: int, batch_norm: bool = True) -> nn.Sequential:
    """Linear - (BatchNorm) - ReLU - Linear: SimCLR's projection head g, MoCo v2's and BYOL's projector/predictor."""
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(), nn.Linear(hidden, out_dim)]
    return nn.Sequential(*layers)


@torch.no_grad()
def momentum_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place, for every parameter pair: ``target <- m target + (1 - m) online`` (MoCo eq. 2 / BYOL's EMA);
    buffers (BatchNorm statistics) are copied."""
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
    tp, op = list(target.parameters()), list(online.parameters())
    if len(tp) != len(op):
        raise ConfigError(f"target has {len(tp)} parameters, online has {len(op)}: they must be copies")
    if tp:
        torch._foreach_lerp_(tp, [p.detach() for p in op], 1.0 - momentum)  # t + (1-m)(o - t)
    for tb, ob in zip(target.buffers(), online.buffers()):
        tb.copy_(ob)


def _frozen_copy(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class SimCLR(nn.Module):
    """Encoder f and projection head g; ``loss(x1, x2) = NT-Xent(g(f(x1)), g(f(x2)))``."""

    def __init__(self, encoder: nn.Module, feature_dim: int, proj_dim: int = 64, hidden: int = 128,
                 temperature: float = 0.5) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = mlp_head(feature_dim, hidden, proj_dim)
        self.temperature = float(temperature)

    def loss(self, x1: Tensor, x2: Tensor) -> Tensor:
        z = self.projector(self.encoder(torch.cat([x1, x2])))  # one pass: BatchNorm sees both views
        z1, z2 = z.chunk(2)
        return nt_xent(z1, z2, temperature=self.temperature)


def moco_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """(B, 1 + K) logits: ``q.k+`` then ``q.queue_j``, over tau; the positive is class 0 (MoCo algorithm 1).
    ``q``, ``k`` (B, D) and ``queue`` (K, D) are L2-normalised by the caller."""
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ queue.T  # (B, K)
    return torch.cat([pos, neg], dim=1) / temperature


@torch.no_grad()
def enqueue_(queue: Tensor, ptr: int, keys: Tensor) -> int:
    """Write ``keys`` (B, D) into the ring buffer ``queue`` (K, D) from position ``ptr``, wrapping around, so the
    oldest keys are replaced first (FIFO). Returns the new pointer ``(ptr + B) mod K``."""
    size = queue.shape[0]
    if keys.shape[0] > size:
        raise ConfigError(f"a batch of {keys.shape[0]} keys does not fit a queue of {size}; use queue_size >= batch")
    idx = (ptr + torch.arange(keys.shape[0])) % size
    queue[idx] = keys.to(queue)
    return int((ptr + keys.shape[0]) % size)


class MoCo(nn.Module):
    """MoCo v2: query encoder + MLP head, momentum key encoder + head, a queue of ``queue_size`` negatives."""

    def __init__(self, encoder: nn.Module, feature_dim: int, proj_dim: int = 64, hidden: int = 128,
                 queue_size: int = 1024, momentum: float = 0.99, temperature: float = 0.2) -> None:
        super().__init__()
        if not (isinstance(queue_size, int) and queue_size >= 1):
            raise ConfigError(f"MoCo queue_size must be a positive integer, got {queue_size!r}")
        self.encoder = encoder
        self.projector = mlp_head(feature_dim, hidden, proj_dim)
        self.key_encoder = _frozen_copy(self.encoder)
        self.key_projector = _frozen_copy(self.projector)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        # random unit vectors until real keys fill it, as in the reference implementation
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def keys(self, x: Tensor) -> Tensor:
        """Normalised keys (B, D) from the momentum encoder, with no gradient."""
        return F.normalize(self.key_projector(self.key_encoder(x)), dim=1)

    def loss(self, xq: Tensor, xk: Tensor) -> Tensor:
        q = F.normalize(self.projector(self.encoder(xq)), dim=1)
        with torch.no_grad():
            momentum_update_(nn.ModuleList([self.key_encoder, self.key_projector]),
                             nn.ModuleList([self.encoder, self.projector]), self.momentum)
            k = self.keys(xk)
        logits = moco_logits(q, k, self.queue.clone(), self.temperature)  # the queue before this batch's keys
        loss = F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
        self.queue_ptr.fill_(enqueue_(self.queue, int(self.queue_ptr), k))
        return loss


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """BYOL eq. 2 per example, averaged: ``2 - 2 cos(p, z)``; ``z`` is treated as a constant (stop-gradient)."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


def byol_tau(step: int, total_steps: int, tau_base: float = 0.99) -> float:
    """BYOL's target decay at step k of K: ``1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` (sec. 3.2)."""
    k = min(max(step, 0), total_steps)
    return 1 - (1 - tau_base) * (math.cos(math.pi * k / max(total_steps, 1)) + 1) / 2


class BYOL(nn.Module):
    """Online encoder, projector, predictor; target encoder and projector (EMA copies, no gradient)."""

    def __init__(self, encoder: nn.Module, feature_dim: int, proj_dim: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = mlp_head(feature_dim, hidden, proj_dim)
        self.predictor = mlp_head(proj_dim, hidden, proj_dim)
        self.target_encoder = _frozen_copy(self.encoder)
        self.target_projector = _frozen_copy(self.projector)

    def loss(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Symmetrised loss (eq. 3): each view's online prediction against the other view's target projection."""
        x = torch.cat([x1, x2])
        p1, p2 = self.predictor(self.projector(self.encoder(x))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(self.target_encoder(x)).chunk(2)
        return byol_loss(p1, z2) + byol_loss(p2, z1)

    @torch.no_grad()
    def update_target_(self, tau: float) -> None:
        """``xi <- tau xi + (1 - tau) theta`` after an optimizer step."""
        momentum_update_(nn.ModuleList([self.target_encoder, self.target_projector]),
                         nn.ModuleList([self.encoder, self.projector]), tau)
