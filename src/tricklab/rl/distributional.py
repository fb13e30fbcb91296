"""Distributional RL: the categorical (C51) projection of Bellemare et al. 2017, Algorithm 1.

The return distribution is a categorical over a fixed support z_j = v_min + j * dz, j = 0..K-1,
dz = (v_max - v_min) / (K - 1). The target distribution of r + gamma^n Z(s', a*) has atoms r + gamma^n z_j that
fall between support points; each atom's mass is split between its two neighbours in proportion to closeness:

    Tz_j = clip(r + discount * z_j, v_min, v_max),   b_j = (Tz_j - v_min) / dz,   l = floor(b_j), u = ceil(b_j)
    m_l += p_j (u - b_j),   m_u += p_j (b_j - l)     (and m_l += p_j when l = u, i.e. b_j is an integer)

``discount`` is gamma^n (1 - terminated), so a terminal transition puts all mass at clip(r).
"""

from __future__ import annotations

import torch


def support(v_min: float, v_max: float, atoms: int) -> torch.Tensor:
    if atoms < 2 or not v_max > v_min:
        raise ValueError(f"need atoms >= 2 and v_max > v_min, got atoms={atoms}, v_min={v_min}, v_max={v_max}")
    return torch.linspace(v_min, v_max, atoms)


def project_distribution(next_probs: torch.Tensor, rewards: torch.Tensor, discounts: torch.Tensor,
                         z: torch.Tensor) -> torch.Tensor:
    """Project r + discount * Z onto the support ``z``.

    next_probs [B, K] (rows sum to 1), rewards [B], discounts [B], z [K] -> target probabilities [B, K].
    Linear in ``next_probs``, so gradients flow through it if anyone needs them (the learner does not)."""
    B, K = next_probs.shape
    v_min, v_max = float(z[0]), float(z[-1])
    dz = (v_max - v_min) / (K - 1)
    tz = (rewards[:, None] + discounts[:, None] * z[None, :]).clamp(v_min, v_max)
    b = (tz - v_min) / dz
    lower = b.floor().long().clamp(0, K - 1)
    upper = b.ceil().long().clamp(0, K - 1)
    # when b is an integer, l == u and both weights (u - b) and (b - l) are 0: give the whole mass to l
    w_lower = (upper.to(b.dtype) - b) + (lower == upper).to(b.dtype)
    w_upper = b - lower.to(b.dtype)
    out = torch.zeros(B, K, dtype=next_probs.dtype)
    out = out.scatter_add(1, lower, next_probs * w_lower)
    out = out.scatter_add(1, upper, next_probs * w_upper)
    return out
