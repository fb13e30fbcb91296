"""Secure aggregation by pairwise additive masks (Bonawitz et al., 2017, the masking core without key agreement
or dropout recovery).

Each client i quantises its vector to fixed point, q_i = round(x_i * 2^frac_bits) mod M (M = 2^62), and sends
    y_i = q_i + sum_{j > i} m_ij - sum_{j < i} m_ji   (mod M),
with m_ij uniform on Z_M from a seed that only clients i and j share. Each y_i alone is uniform on Z_M, so the
server learns nothing about x_i, while the masks cancel in the sum: sum_i y_i = sum_i q_i (mod M). Here the pair
seeds come from one seeded generator (a simulation stand-in for the Diffie-Hellman agreement of the paper), and
every client must report (the paper's secret-shared recovery of dropped clients is not implemented).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MODULUS", "quantize", "dequantize", "mask_updates", "masked_sum"]

MODULUS = 2**62


def quantize(x: Tensor, frac_bits: int = 24) -> Tensor:
    """Fixed point in Z_M (int64): negative values wrap to M - |q|."""
    q = torch.round(x.double() * 2.0**frac_bits).to(torch.int64)
    return torch.remainder(q, MODULUS)


def dequantize(q: Tensor, frac_bits: int = 24) -> Tensor:
    """Inverse of :func:`quantize` for sums whose true magnitude is below M / 2 (float64)."""
    signed = torch.where(q >= MODULUS // 2, q - MODULUS, q)
    return signed.double() / 2.0**frac_bits


def _pair_masks(n_clients: int, size: int, seed: int) -> dict[tuple[int, int], Tensor]:
    masks = {}
    for i in range(n_clients):
        for j in range(i + 1, n_clients):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i * 1009 + j)
            masks[(i, j)] = torch.randint(0, MODULUS, (size,), generator=g, dtype=torch.int64)
    return masks


def mask_updates(vectors: list[Tensor], seed: int, frac_bits: int = 24) -> list[Tensor]:
    """What each client sends: its quantised flat vector plus the pairwise masks (mod M)."""
    n, size = len(vectors), vectors[0].numel()
    masks = _pair_masks(n, size, seed)
    out = []
    for i, v in enumerate(vectors):
        y = quantize(v.flatten(), frac_bits)
        for j in range(n):
            if j > i:
                y = torch.remainder(y + masks[(i, j)], MODULUS)  # both < 2^62, so the sum fits in int64
            elif j < i:
                y = torch.remainder(y - masks[(j, i)], MODULUS)
        out.append(y)
    return out


def masked_sum(masked: list[Tensor], frac_bits: int = 24) -> Tensor:
    """The server's step: add the masked vectors mod M and decode the sum (the masks cancel)."""
    total = torch.zeros_like(masked[0])
    for y in masked:
        total = torch.remainder(total + y, MODULUS)
    return dequantize(total, frac_bits)
