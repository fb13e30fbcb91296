"""The C51 projection against a NumPy transcription of Bellemare et al. 2017, Algorithm 1 (one atom at a time),
values and gradients (the projection is linear in the probabilities: its Jacobian is the reference's matrix)."""

from __future__ import annotations

import math

import numpy as np
import torch

from tricklab.rl.distributional import project_distribution, support


def numpy_projection(p: np.ndarray, r: float, discount: float, z: np.ndarray) -> np.ndarray:
    K = len(z)
    v_min, v_max = z[0], z[-1]
    dz = (v_max - v_min) / (K - 1)
    m = np.zeros(K)
    for j in range(K):
        tz = min(max(r + discount * z[j], v_min), v_max)
        b = (tz - v_min) / dz
        lo, up = math.floor(b), math.ceil(b)
        if lo == up:
            m[lo] += p[j]
        else:
            m[lo] += p[j] * (up - b)
            m[up] += p[j] * (b - lo)
    return m


def test_projection_matches_algorithm_1() -> None:
    g = torch.Generator().manual_seed(0)
    z = support(-10.0, 10.0, 51).double()
    B = 32
    probs = torch.softmax(torch.randn(B, 51, generator=g, dtype=torch.float64), -1)
    rewards = torch.randn(B, generator=g, dtype=torch.float64) * 5
    rewards[0] = 100.0  # everything clipped to v_max
    rewards[1] = 0.4  # atoms land exactly on the support when discount = 1 and r = 0.4 = dz
    discounts = torch.rand(B, generator=g, dtype=torch.float64)
    discounts[1] = 1.0
    discounts[2] = 0.0  # terminal: all mass at clip(r)
    ours = project_distribution(probs, rewards, discounts, z)
    for i in range(B):
        ref = numpy_projection(probs[i].numpy(), rewards[i].item(), discounts[i].item(), z.numpy())
        np.testing.assert_allclose(ours[i].numpy(), ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(ours.sum(-1), torch.ones(B, dtype=torch.float64))
    assert abs(ours[0, -1].item() - 1.0) < 1e-12


def test_projection_gradient_is_the_reference_matrix() -> None:
    z = support(0.0, 100.0, 11).double()
    p = torch.softmax(torch.randn(1, 11, dtype=torch.float64), -1).requires_grad_(True)
    r, d = torch.tensor([3.3], dtype=torch.float64), torch.tensor([0.97], dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda q: project_distribution(q, r, d, z)[0], p)[:, 0, :]
    # reference Jacobian: column j is the projection of a unit mass on atom j
    ref = np.stack([numpy_projection(np.eye(11)[j], 3.3, 0.97, z.numpy()) for j in range(11)], axis=1)
    np.testing.assert_allclose(jac.numpy(), ref, rtol=1e-12, atol=1e-14)
