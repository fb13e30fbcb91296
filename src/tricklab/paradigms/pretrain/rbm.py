"""Bernoulli restricted Boltzmann machines trained with contrastive divergence (CD-k).

Hinton, "Training Products of Experts by Minimizing Contrastive Divergence", Neural Computation 2002, and
"A Practical Guide to Training Restricted Boltzmann Machines" (UTML TR 2010-003): binary visible v (n_v) and
hidden h (n_h) units, energy ``E(v, h) = -b_v.v - b_h.h - v^T W h``, so

    p(h_j = 1 | v) = sigmoid(b_h + v W)_j,        p(v_i = 1 | h) = sigmoid(b_v + h W^T)_i.

CD-k on a batch v0 (B, n_v): ``p_h0 = p(h | v0)``; k Gibbs steps ``h ~ p(h | v)``, ``v_k ~ p(v | h)`` (binary
samples by comparing the probabilities with uniform draws u: ``1[u < p]``), ``p_hk = p(h | v_k)``. The updates
(the guide's sec. 3-4: data statistics with hidden probabilities, model statistics at step k) are

    dW = (v0^T p_h0 - v_k^T p_hk) / B,   db_v = mean(v0 - v_k),   db_h = mean(p_h0 - p_hk),

applied as ``theta <- theta + lr * d theta``. :func:`cd_statistics` takes the uniform draws as arguments, so the
same update can be recomputed from the equations elsewhere (the tests do it in NumPy).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tricklab.errors import ConfigError

__all__ = ["RBM", "cd_statistics"]


def cd_statistics(w: Tensor, b_v: Tensor, b_h: Tensor, v0: Tensor, uniforms: list[tuple[Tensor, Tensor]]
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """CD-k with k = len(uniforms); each entry is (u_h (B, n_h), u_v (B, n_v)) for one Gibbs step.
    Returns (dW, db_v, db_h, v_k)."""
    if not uniforms:
        raise ConfigError("CD-k needs k >= 1 Gibbs steps")
    p_h0 = torch.sigmoid(b_h + v0 @ w)  # (B, n_h)
    p_h, v = p_h0, v0
    for u_h, u_v in uniforms:
        h = (u_h < p_h).to(v0.dtype)  # sample the hidden units
        v = (u_v < torch.sigmoid(b_v + h @ w.T)).to(v0.dtype)  # sample the visible units
        p_h = torch.sigmoid(b_h + v @ w)
    n = v0.shape[0]
    dw = (v0.T @ p_h0 - v.T @ p_h) / n
    return dw, (v0 - v).mean(0), (p_h0 - p_h).mean(0), v


class RBM(nn.Module):
    """A Bernoulli-Bernoulli RBM; ``forward(v)`` gives the hidden probabilities (the features for the next layer)."""

    def __init__(self, n_visible: int, n_hidden: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        # the guide's sec. 8: small random weights N(0, 0.01^2), zero biases
        self.weight = nn.Parameter(torch.randn(n_visible, n_hidden, generator=g) * 0.01, requires_grad=False)
        self.b_v = nn.Parameter(torch.zeros(n_visible), requires_grad=False)
        self.b_h = nn.Parameter(torch.zeros(n_hidden), requires_grad=False)

    def forward(self, v: Tensor) -> Tensor:
        return torch.sigmoid(self.b_h + v @ self.weight)

    def reconstruct(self, v: Tensor) -> Tensor:
        """Mean-field reconstruction ``p(v | p(h | v))``."""
        return torch.sigmoid(self.b_v + self(v) @ self.weight.T)

    @torch.no_grad()
    def cd_step(self, v0: Tensor, lr: float, generator: torch.Generator, k: int = 1) -> float:
        """One CD-k update on the batch v0 (values in [0, 1]); returns the mean squared reconstruction error."""
        uniforms = [(torch.rand(v0.shape[0], self.b_h.shape[0], generator=generator).to(v0),
                     torch.rand(v0.shape, generator=generator).to(v0)) for _ in range(k)]
        dw, db_v, db_h, _ = cd_statistics(self.weight, self.b_v, self.b_h, v0, uniforms)
        self.weight.add_(lr * dw)
        self.b_v.add_(lr * db_v)
        self.b_h.add_(lr * db_h)
        return float(((v0 - self.reconstruct(v0)) ** 2).mean())
