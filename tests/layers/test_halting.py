"""Tests of tricklab.layers.halting (adaptive computation time, Graves 2016).

Reference: a slow per-position Python loop written from Graves's eqs. 6-14 (halt at the first n whose running sum
of h reaches 1 - eps, p^N = R = 1 - sum_{n<N} h^n, ponder = N + R, output = sum_n p^n s^n), run on plain scalars
for N, R and p and on float64 tensors for outputs and gradients.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tricklab.layers.halting import ACTCell, AdaptiveComputationTime, act_weights

DT = torch.float64


def _slow_halting(hs: list[float], threshold: float) -> tuple[int, float, list[float]]:
    """Graves's definition for one position: (N, R, p) from the per-step halting probabilities."""
    total = 0.0
    for n, h in enumerate(hs, start=1):
        if total + h >= threshold or n == len(hs):
            rem = 1.0 - total
            return n, rem, hs[: n - 1] + [rem] + [0.0] * (len(hs) - n)
        total += h
    raise AssertionError("unreachable")


@pytest.mark.parametrize("threshold", [0.99, 0.5, 1.0])
def test_act_weights_sum_to_one_and_match_slow_loop(threshold: float) -> None:
    """Reference: _slow_halting (Graves 2016, eqs. 8-11) per position."""
    g = torch.Generator().manual_seed(0)
    h = torch.rand(6, 4, 5, generator=g, dtype=DT) * 0.6      # (N_max, B, T): mixes early, late and capped halts
    h[:, 0, 0] = 0.01                                           # never reaches the threshold: capped at N_max
    h[0, 1, 1] = 0.999                                          # halts at the first step
    p, n_steps, rem = act_weights(h, threshold)
    torch.testing.assert_close(p.sum(0), torch.ones(4, 5, dtype=DT))
    for b in range(4):
        for t in range(5):
            n_ref, r_ref, p_ref = _slow_halting(h[:, b, t].tolist(), threshold)
            assert int(n_steps[b, t]) == n_ref
            assert float(rem[b, t]) == pytest.approx(r_ref, abs=1e-12)
            torch.testing.assert_close(p[:, b, t], torch.tensor(p_ref, dtype=DT))
    assert int(n_steps[0, 0]) == 6
    assert int(n_steps[1, 1]) == (1 if threshold <= 0.999 else 2)


def test_act_weights_gradient_matches_formula() -> None:
    """Reference: dR/dh^n = -1 for n < N and 0 otherwise (R = 1 - sum_{n<N} h^n); gradcheck on p."""
    h = torch.tensor([[0.3, 0.2], [0.4, 0.9], [0.5, 0.1]], dtype=DT, requires_grad=True)   # N = 3 and N = 2
    _, n_steps, rem = act_weights(h, 0.99)
    assert n_steps.tolist() == [3, 2]
    (g,) = torch.autograd.grad(rem.sum(), h)
    torch.testing.assert_close(g, torch.tensor([[-1.0, -1.0], [-1.0, 0.0], [0.0, 0.0]], dtype=DT))
    assert torch.autograd.gradcheck(lambda x: act_weights(x, 0.99)[0], (h,))


def _slow_act(step, halting: nn.Linear, s0: torch.Tensor, threshold: float, max_steps: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position loop: run this position's own steps until it halts, weight the states, ponder = N + R."""
    ys, rhos = [], []
    for idx in range(s0.shape[0]):
        s, total, y = s0[idx:idx + 1], 0.0, 0.0
        for n in range(1, max_steps + 1):
            s = step(n - 1, s, idx)
            h = torch.sigmoid(halting(s))[0, 0]
            if float((total + h).detach()) >= threshold or n == max_steps:
                rem = 1.0 - total
                y = y + rem * s[0]
                rhos.append(n + rem)
                break
            y = y + h * s[0]
            total = total + h
        ys.append(y)
    return torch.stack(ys), torch.stack([torch.as_tensor(r, dtype=s0.dtype) for r in rhos])


@pytest.mark.parametrize("early_exit", [True, False])
def test_adaptive_computation_time_matches_slow_loop(early_exit: bool) -> None:
    """Reference: _slow_act (each position pondered on its own); outputs, ponder cost and gradients."""
    torch.manual_seed(1)
    D = 6
    act = AdaptiveComputationTime(nn.Sequential(nn.Linear(D, D), nn.Tanh()), threshold=0.99, max_steps=5, d_model=D,
                                  halt_bias_init=-1.0, early_exit=early_exit).to(DT)
    x = torch.randn(3, 4, D, dtype=DT, requires_grad=True)
    y, rho = act(x)
    assert y.shape == x.shape and rho.shape == (3, 4)
    flat = x.reshape(-1, D)
    y_ref, rho_ref = _slow_act(lambda n, s, i: act.step_fn(s), act.halting, flat, 0.99, 5)
    torch.testing.assert_close(y.reshape(-1, D), y_ref)
    torch.testing.assert_close(rho.reshape(-1), rho_ref)
    n_steps = rho.floor()
    assert n_steps.min() >= 1 and n_steps.max() <= 5 and len(set(n_steps.flatten().tolist())) > 1
    ps = [x, act.halting.weight, act.step_fn[0].weight]
    w = torch.randn(y.shape, dtype=DT, generator=torch.Generator().manual_seed(2))
    loss, loss_ref = (y * w).sum() + 0.1 * rho.sum(), (y_ref * w.reshape(-1, D)).sum() + 0.1 * rho_ref.sum()
    for a, b in zip(torch.autograd.grad(loss, ps), torch.autograd.grad(loss_ref, ps)):
        torch.testing.assert_close(a, b)


def test_act_cell_matches_slow_loop_with_first_step_flag() -> None:
    """Reference: _slow_act around nn.GRUCell fed [x, 1] on the first ponder step and [x, 0] after (Graves eq. 7)."""
    torch.manual_seed(3)
    n_in, Hd = 4, 5
    cell = ACTCell(nn.GRUCell(n_in + 1, Hd), Hd, max_steps=6, halt_bias_init=-1.5).to(DT)
    x = torch.randn(3, n_in, dtype=DT, requires_grad=True)
    h0 = torch.randn(3, Hd, dtype=DT, requires_grad=True)
    y, rho = cell(x, h0)

    def step(n: int, s: torch.Tensor, idx: int) -> torch.Tensor:
        flag = torch.full((1, 1), 1.0 if n == 0 else 0.0, dtype=DT)
        return cell.cell(torch.cat([x[idx:idx + 1], flag], -1), s)

    y_ref, rho_ref = _slow_act(step, cell.halting, h0, 0.99, 6)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(rho, rho_ref)
    ps = [x, h0, cell.cell.weight_ih, cell.halting.bias]
    for a, b in zip(torch.autograd.grad(y.sum() + rho.sum(), ps), torch.autograd.grad(y_ref.sum() + rho_ref.sum(), ps)):
        torch.testing.assert_close(a, b)


def test_act_max_steps_cap_and_ponder_bounds() -> None:
    """Reference: with h ~ 0 everywhere N = max_steps and R = 1 - sum_{n<N} h^n, so rho = max_steps + R."""
    D = 4
    act = AdaptiveComputationTime(nn.Identity(), max_steps=3, d_model=D, halt_bias_init=-30.0)
    with torch.no_grad():
        act.halting.weight.zero_()
    y, rho = act(torch.ones(2, D))
    torch.testing.assert_close(y, torch.ones(2, D))             # identity steps: any weighting gives x back
    h = torch.sigmoid(torch.tensor(-30.0))
    torch.testing.assert_close(rho, torch.full((2,), 3 + 1 - 2 * float(h)))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="threshold"):
        AdaptiveComputationTime(nn.Identity(), threshold=1.5, d_model=4)
    with pytest.raises(ValueError, match="max_steps"):
        AdaptiveComputationTime(nn.Identity(), max_steps=0, d_model=4)
    with pytest.raises(TypeError, match="nn.Module"):
        AdaptiveComputationTime(lambda s: s, d_model=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        AdaptiveComputationTime(nn.Identity(), d_model=4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="input_size = 4 \\+ 1"):
        ACTCell(nn.GRUCell(4, 5), 5)(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(TypeError, match="floating-point"):
        act_weights(torch.ones(3, 2, dtype=torch.int64))
