"""GAE and n-step returns against slow reference loops.

Reference: the recursions written one scalar at a time per env in plain Python (float64 tensors of shape [] so
autograd gives the reference gradients of the same scalar loop)."""

from __future__ import annotations

import torch

from tricklab.rl.returns import gae, n_step_targets


def random_trajectory(T: int, N: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    term = torch.rand(T, N, generator=g) < 0.08
    trunc = (torch.rand(T, N, generator=g) < 0.05) & ~term
    return {"rewards": torch.randn(T, N, generator=g, dtype=torch.float64),
            "values": torch.randn(T, N, generator=g, dtype=torch.float64),
            "next_values": torch.randn(T, N, generator=g, dtype=torch.float64),
            "terminated": term, "dones": term | trunc}


def reference_gae(tr: dict[str, torch.Tensor], gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    T, N = tr["rewards"].shape
    adv = [[None] * N for _ in range(T)]
    for i in range(N):
        running = torch.zeros((), dtype=torch.float64)
        for t in reversed(range(T)):
            boot = 0.0 if bool(tr["terminated"][t, i]) else gamma * tr["next_values"][t, i]
            delta = tr["rewards"][t, i] + boot - tr["values"][t, i]
            carry = 0.0 if bool(tr["dones"][t, i]) else gamma * lam * running
            running = delta + carry
            adv[t][i] = running
    A = torch.stack([torch.stack(row) for row in adv])
    return A, A + tr["values"]


def test_gae_matches_reference_loop_values_and_gradients() -> None:
    tr = random_trajectory(T=40, N=3, seed=0)
    leaves = {k: tr[k].clone().requires_grad_(True) for k in ("rewards", "values", "next_values")}
    ours = gae(leaves["rewards"], leaves["values"], leaves["next_values"], tr["terminated"], tr["dones"], 0.97, 0.9)
    ref_leaves = {k: tr[k].clone().requires_grad_(True) for k in ("rewards", "values", "next_values")}
    ref = reference_gae({**tr, **ref_leaves}, 0.97, 0.9)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-12, atol=1e-12)
    w = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g_ours = torch.autograd.grad((ours[0] * w).sum() + ours[1].sum(), list(leaves.values()))
    g_ref = torch.autograd.grad((ref[0] * w).sum() + ref[1].sum(), list(ref_leaves.values()))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gae_special_cases() -> None:
    # lambda = 1, no episode end: A_t = sum_k gamma^k r_{t+k} + gamma^(T-t) V_T - V_t (Monte Carlo with bootstrap)
    T, gamma = 6, 0.9
    r = torch.arange(1.0, T + 1, dtype=torch.float64)[:, None]
    v = torch.zeros(T, 1, dtype=torch.float64)
    nv = torch.zeros(T, 1, dtype=torch.float64)
    nv[-1] = 10.0
    zeros = torch.zeros(T, 1, dtype=torch.bool)
    A, _ = gae(r, v, nv, zeros, zeros, gamma, 1.0)
    expected = [sum(gamma**k * r[t + k, 0].item() for k in range(T - t)) + gamma ** (T - t) * 10.0 for t in range(T)]
    torch.testing.assert_close(A[:, 0], torch.tensor(expected, dtype=torch.float64))
    # lambda = 0: the one-step TD error
    A0, _ = gae(r, v, nv, zeros, zeros, gamma, 0.0)
    torch.testing.assert_close(A0, r + gamma * nv - v)


def reference_n_step(tr: dict[str, torch.Tensor], gamma: float, n: int) -> torch.Tensor:
    T, N = tr["rewards"].shape
    rows = []
    for t in range(T):
        row = []
        for i in range(N):
            g, k = 0.0, 0
            while True:
                g = g + gamma**k * tr["rewards"][t + k, i]
                end = bool(tr["dones"][t + k, i])
                if end or k + 1 == n or t + k + 1 == T:
                    boot = 0.0 if bool(tr["terminated"][t + k, i]) else tr["next_values"][t + k, i]
                    row.append(g + gamma ** (k + 1) * boot)
                    break
                k += 1
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_n_step_targets_match_reference_loop() -> None:
    tr = random_trajectory(T=30, N=4, seed=3)
    for n in (1, 3, 5):
        r = tr["rewards"].clone().requires_grad_(True)
        nv = tr["next_values"].clone().requires_grad_(True)
        ours = n_step_targets(r, tr["terminated"], tr["dones"], nv, 0.95, n)
        r2 = tr["rewards"].clone().requires_grad_(True)
        nv2 = tr["next_values"].clone().requires_grad_(True)
        ref = reference_n_step({**tr, "rewards": r2, "next_values": nv2}, 0.95, n)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
        w = torch.linspace(-1, 1, 120, dtype=torch.float64).reshape(30, 4)
        grads = torch.autograd.grad((ours * w).sum(), [r, nv])
        for a, b in zip(grads, torch.autograd.grad((ref * w).sum(), [r2, nv2])):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
