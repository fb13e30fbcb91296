"""Advantage and return estimators: GAE(gamma, lambda) and n-step returns.

GAE (Schulman et al. 2016, eq. 16), with episode ends split into their two kinds:

    delta_t = r_t + gamma * (1 - term_t) * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lambda * (1 - done_t) * A_{t+1},      done_t = term_t or trunc_t
    R_t     = A_t + V(s_t)                                             (the value target)

``term_t`` (the MDP ended: no future reward) zeroes the bootstrap; a time-limit truncation does not, it
bootstraps from V of the true last observation, but still stops the sum from running into the next episode.
``next_values[t]`` is V(s_{t+1}) of the transition taken at t: for steps that did not end an episode it is the
next row's value; where an episode was truncated it is V(final observation).

n-step return (Sutton & Barto 7.1; used by Rainbow):

    G_t^(n) = sum_{k=0}^{m-1} gamma^k r_{t+k} + gamma^m (1 - term) * V(s_{t+m}),
    m = n, or fewer when the episode ends first.
"""

from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        dones: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and value targets, all tensors [T, N] (time, env); one backward pass over T.

    ``terminated`` and ``dones`` are 0/1 (or bool); ``dones`` includes truncations. Returns (A, R)."""
    if not (rewards.shape == values.shape == next_values.shape == terminated.shape == dones.shape):
        raise ValueError(f"gae needs equal shapes [T, N], got rewards {tuple(rewards.shape)}, values "
                         f"{tuple(values.shape)}, next_values {tuple(next_values.shape)}, terminated "
                         f"{tuple(terminated.shape)}, dones {tuple(dones.shape)}")
    not_term = 1.0 - terminated.to(values.dtype)
    not_done = 1.0 - dones.to(values.dtype)
    deltas = rewards + gamma * not_term * next_values - values
    adv = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in range(values.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * not_done[t] * running
        adv[t] = running
    return adv, adv + values


def n_step_targets(rewards: torch.Tensor, terminated: torch.Tensor, dones: torch.Tensor,
                   bootstrap: torch.Tensor, gamma: float, n: int) -> torch.Tensor:
    """G_t^(n) for every t of a [T, N] trajectory; ``bootstrap[t]`` = V(s_{t+1}) (the true next state).

    Windows stop at an episode end (``dones``, which includes truncations) and at the end of the data; a
    window cut by the data's end bootstraps from the last available next state, as a replay buffer would."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    T = rewards.shape[0]
    term = terminated.to(rewards.dtype)
    done = dones.to(rewards.dtype)
    out = torch.empty_like(rewards)
    for t in range(T):
        g = torch.zeros_like(rewards[0])
        disc = torch.ones_like(rewards[0])
        alive = torch.ones_like(rewards[0])
        last = torch.zeros_like(rewards[0])
        for k in range(min(n, T - t)):
            g = g + alive * disc * rewards[t + k]
            # where the window is still open, remember the bootstrap of its latest step
            last = torch.where(alive.bool(), (1.0 - term[t + k]) * bootstrap[t + k], last)
            disc = torch.where(alive.bool(), disc * gamma, disc)
            alive = alive * (1.0 - done[t + k])
        out[t] = g + disc * last
    return out
