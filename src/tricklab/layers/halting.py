"""Adaptive computation time (Graves 2016): let a network decide how many update steps each input gets.

At every ponder step n = 1, 2, ... a state update s^n = S(s^{n-1}) is followed by a halting unit
h^n = sigmoid(w . s^n + b) in (0, 1). Steps stop at

    N = min{ n' : sum_{n=1}^{n'} h^n >= 1 - eps }   (capped at max_steps),
    R = 1 - sum_{n=1}^{N-1} h^n                      (the remainder),
    p^n = h^n for n < N,  p^N = R,                   (halting distribution: sums to 1)

and the output is the mean state y = sum_n p^n s^n (Graves 2016, eqs. 6-13). The ponder cost rho = N + R
(eq. 14) is added to the loss times a time penalty tau; N is piecewise constant, so its gradient flows through R.

Pure core: :func:`act_weights` (halting probabilities -> p, N, R). Modules: :class:`AdaptiveComputationTime`
(position-wise pondering over any step module, as in Universal Transformers) and :class:`ACTCell` (Graves's
recurrent form: a cell fed the input plus a first-step flag at every ponder step).

References:
    Graves 2016, "Adaptive Computation Time for Recurrent Neural Networks", arXiv:1603.08983.
    Dehghani et al. 2019, "Universal Transformers", ICLR (position-wise ACT over a shared block).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from tricklab.layers.spec import LayerSpec


def _check_act_args(threshold: float, max_steps: int) -> None:
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold (1 - eps) must be in (0, 1], got {threshold}; Graves uses 1 - 0.01")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps <= 0:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")


def act_weights(halt_probs: Tensor, threshold: float = 0.99) -> tuple[Tensor, Tensor, Tensor]:
    """Halting distribution from the halting probabilities of every step.

    Args:
        halt_probs: (N_max, ...) h^n for n = 1..N_max, values in [0, 1]. The last step always halts (the
            max_steps cap).
        threshold: 1 - eps.

    Returns:
        p (N_max, ...): p^n = h^n for n < N, R for n = N, 0 after (sums to 1 over dim 0);
        n_steps (...): N (int64, 1-based);
        remainder (...): R = 1 - sum_{n<N} h^n (differentiable in the h^n before N).
    """
    if not isinstance(halt_probs, Tensor) or not halt_probs.is_floating_point() or halt_probs.dim() < 1:
        raise TypeError("act_weights: halt_probs must be a floating-point Tensor of shape (N_max, ...)")
    _check_act_args(threshold, 1)
    n_max = halt_probs.shape[0]
    cum = halt_probs.cumsum(0)                                              # sum_{m <= n} h^m
    reached = cum >= threshold
    last = torch.zeros_like(reached)
    last[-1] = True
    reached = reached | last                                                # forced halt at max_steps
    first = reached.to(torch.uint8).argmax(0)                               # 0-based N - 1 (first True)
    steps = torch.arange(n_max, device=halt_probs.device).view(-1, *([1] * (halt_probs.dim() - 1)))
    before = steps < first
    remainder = 1.0 - (halt_probs * before).sum(0)
    p = torch.where(before, halt_probs, torch.where(steps == first, remainder, torch.zeros_like(halt_probs)))
    return p, first + 1, remainder


def _ponder(step: Callable[[int, Tensor], Tensor], s0: Tensor, halting: nn.Linear, threshold: float,
            max_steps: int, early_exit: bool) -> tuple[Tensor, Tensor]:
    """Run up to max_steps updates; returns (sum_n p^n s^n, N + R). States are (..., D), halting on the last dim."""
    states, hs = [], []
    s, cum = s0, None
    for n in range(max_steps):
        s = step(n, s)
        h = torch.sigmoid(halting(s)).squeeze(-1)                            # (...,)
        states.append(s)
        hs.append(h)
        cum = h if cum is None else cum + h
        # every position has halted: later steps would all get p = 0, so skip them. Not under torch.compile, where
        # the data-dependent exit would break the graph; running the remaining steps gives the same result.
        if (early_exit and n + 1 < max_steps and not torch.compiler.is_compiling()
                and bool((cum.detach() >= threshold).all())):
            break
    p, n_steps, rem = act_weights(torch.stack(hs), threshold)
    y = (p.unsqueeze(-1) * torch.stack(states)).sum(0)
    return y, n_steps.to(rem.dtype) + rem


class AdaptiveComputationTime(nn.Module):
    """Position-wise ACT around a step module: s^0 = x, s^n = step_fn(s^{n-1}), y = sum_n p^n s^n.

    ``step_fn`` maps (..., d_model) -> (..., d_model) (e.g. a Transformer block or an MLP) and is applied again
    at every ponder step; each position (every index but the last dim) halts on its own. The halting unit is a
    ``Linear(d_model, 1)`` whose bias starts at ``halt_bias_init`` (positive by default, so that training starts
    with few steps). ``forward(x) -> (y same shape as x, ponder cost N + R of shape x.shape[:-1])``;
    add ``tau * ponder.mean()`` to the loss.
    """

    def __init__(self, step_fn: nn.Module, threshold: float = 0.99, max_steps: int = 10, *, d_model: int,
                 halt_bias_init: float = 1.0, early_exit: bool = True) -> None:
        super().__init__()
        if not isinstance(step_fn, nn.Module):
            raise TypeError(f"step_fn must be an nn.Module mapping (..., d_model) -> (..., d_model), got "
                            f"{type(step_fn).__name__}")
        _check_act_args(threshold, max_steps)
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model <= 0:
            raise ValueError(f"d_model must be a positive int, got {d_model!r}")
        self.step_fn, self.threshold, self.max_steps, self.early_exit = step_fn, float(threshold), max_steps, early_exit
        self.d_model = d_model
        self.halting = nn.Linear(d_model, 1)
        nn.init.constant_(self.halting.bias, halt_bias_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.dim() < 1 or x.shape[-1] != self.d_model:
            raise ValueError(f"expected x of shape (..., {self.d_model}), got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")

        def step(n: int, s: Tensor) -> Tensor:
            out = self.step_fn(s)
            if not isinstance(out, Tensor) or out.shape != s.shape:
                raise ValueError(f"step_fn must return a Tensor of the input's shape {tuple(s.shape)}")
            return out

        return _ponder(step, x, self.halting, self.threshold, self.max_steps, self.early_exit)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, max_steps={self.max_steps}"


class ACTCell(nn.Module):
    """Graves's ACT around a recurrent cell, for one time step.

    At ponder step n the cell gets [x_t, delta_{n,1}] (the input plus a flag that is 1 on the first step only,
    eq. 7) and the previous ponder state: s^1 = cell([x_t, 1], h_{t-1}), s^n = cell([x_t, 0], s^{n-1}). Build the
    cell with ``input_size + 1`` inputs, e.g. ``ACTCell(nn.GRUCell(input_size + 1, hidden), hidden)``; cells with
    tuple states (LSTMCell) are not supported. ``forward(x_t (B, I), h (B, hidden)) -> (h_t (B, hidden), ponder
    (B,))``; an output layer applied to h_t gives Graves's mean output (it is linear).
    """

    def __init__(self, cell: nn.Module, hidden_size: int, threshold: float = 0.99, max_steps: int = 10, *,
                 halt_bias_init: float = 1.0, early_exit: bool = True) -> None:
        super().__init__()
        if not isinstance(cell, nn.Module):
            raise TypeError(f"cell must be an nn.Module (e.g. nn.GRUCell), got {type(cell).__name__}")
        _check_act_args(threshold, max_steps)
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size <= 0:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        self.cell, self.hidden_size = cell, hidden_size
        self.threshold, self.max_steps, self.early_exit = float(threshold), max_steps, early_exit
        self.halting = nn.Linear(hidden_size, 1)
        nn.init.constant_(self.halting.bias, halt_bias_init)

    def forward(self, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or not isinstance(h, Tensor) or x.dim() != 2 or h.dim() != 2:
            raise ValueError("ACTCell: expected x (B, input_size) and h (B, hidden_size) tensors")
        if h.shape != (x.shape[0], self.hidden_size):
            raise ValueError(f"ACTCell: h must be (B, {self.hidden_size}) with B = {x.shape[0]}, got {tuple(h.shape)}")
        cin = getattr(self.cell, "input_size", None)
        if cin is not None and cin != x.shape[1] + 1:
            raise ValueError(f"ACTCell: the cell takes {cin} inputs but x has {x.shape[1]} features; build the cell "
                             f"with input_size = {x.shape[1]} + 1 (the first-step flag)")
        ones, zeros = x.new_ones(x.shape[0], 1), x.new_zeros(x.shape[0], 1)
        first, later = torch.cat([x, ones], dim=-1), torch.cat([x, zeros], dim=-1)

        def step(n: int, s: Tensor) -> Tensor:
            return self.cell(first if n == 0 else later, s)

        return _ponder(step, h, self.halting, self.threshold, self.max_steps, self.early_exit)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, threshold={self.threshold}, max_steps={self.max_steps}"


def _build_act() -> nn.Module:
    # halting bias -1 (h ~ 0.27 at init) so that several ponder steps run and every parameter gets a gradient
    return AdaptiveComputationTime(nn.Sequential(nn.Linear(8, 8), nn.Tanh()), max_steps=4, d_model=8,
                                   halt_bias_init=-1.0)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("adaptive_computation_time", "halting", _build_act,
              lambda g: (torch.randn(2, 5, 8, generator=g),),
              "position-wise adaptive computation time with ponder cost (Graves 2016)"),
    LayerSpec("act_cell", "halting",
              lambda: ACTCell(nn.GRUCell(5, 8), 8, max_steps=4, halt_bias_init=-1.0),
              lambda g: (torch.randn(3, 4, generator=g), torch.randn(3, 8, generator=g)),
              "Graves's ACT around a recurrent cell, one time step", grad_inputs=(0, 1)),
)
