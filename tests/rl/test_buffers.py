"""Replay buffers: sum tree sampling frequencies (chi-square), priority updates against a NumPy recomputation,
importance weights against the formula, the n-step accumulator against the n-step return of the same stream, and
state round trips.

References: scipy.stats.chisquare for the frequencies; prefix sums with np.cumsum / np.searchsorted for the tree;
Schaul et al. 2016's w_i = (N P(i))^-beta / max_k w_k written out; tricklab.rl.returns.n_step_targets (itself
checked against a slow loop in test_returns.py) for the n-step sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from tricklab.rl.buffers import NStepAccumulator, PrioritizedReplayBuffer, ReplayBuffer, SumTree
from tricklab.rl.returns import n_step_targets


def test_sum_tree_prefix_sums_and_find_match_numpy() -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(100)  # not a power of two: 128 leaves, 28 unused
    p = rng.random(100)
    p[[3, 50]] = 0.0  # empty leaves must never be found
    tree.update(np.arange(100), p)
    assert tree.total == pytest.approx(p.sum(), rel=1e-12)
    v = rng.random(10_000) * p.sum()
    expected = np.searchsorted(np.cumsum(p), v, side="right")
    np.testing.assert_array_equal(tree.find(v), expected)
    assert not np.isin(tree.find(v), [3, 50]).any()


def test_priority_updates_keep_every_internal_node_exact() -> None:
    rng = np.random.default_rng(1)
    tree = SumTree(64)
    tree.update(np.arange(64), rng.random(64))
    for _ in range(200):
        idx = rng.integers(0, 64, size=8)  # duplicates included: the last write wins
        vals = rng.random(8) * 10
        tree.update(idx, vals)
    leaves = tree.tree[64:128]
    level = leaves
    node_start = 64
    while node_start > 1:  # every parent equals the sum of its two children
        parents = level.reshape(-1, 2).sum(1)
        np.testing.assert_allclose(tree.tree[node_start // 2: node_start], parents, rtol=1e-12)
        level, node_start = parents, node_start // 2
    # duplicates: the last value written for an index is the one kept
    tree.update(np.array([5, 5]), np.array([1.0, 7.0]))
    assert tree.get(np.array([5]))[0] == 7.0


@pytest.mark.parametrize("stratified", [False, True])
def test_prioritized_sampling_frequencies_chi_square(stratified: bool) -> None:
    rng = np.random.default_rng(2)
    n = 20
    buf = PrioritizedReplayBuffer(32, alpha=0.7)
    buf.add(np.zeros((n, 2)), np.zeros(n, dtype=np.int64), np.zeros(n), np.zeros((n, 2)), np.zeros(n))
    td = rng.random(n) * 3
    buf.update_priorities(np.arange(n), td)
    expected_p = (np.abs(td) + buf.eps) ** 0.7
    expected_p /= expected_p.sum()
    counts = np.zeros(n)
    draws = 0
    for _ in range(400):
        out = buf.sample(50, rng, stratified=stratified)
        counts += np.bincount(out["indices"], minlength=n)
        draws += 50
    _, p_value = chisquare(counts, expected_p * draws)
    assert p_value > 1e-3, (p_value, counts / draws, expected_p)
    # the test can fail: the same counts against uniform frequencies are rejected
    _, p_uniform = chisquare(counts, np.full(n, draws / n))
    assert p_uniform < 1e-6


def test_importance_weights_match_formula() -> None:
    rng = np.random.default_rng(3)
    buf = PrioritizedReplayBuffer(16, alpha=0.6)
    buf.add(np.zeros((10, 1)), np.zeros(10, dtype=np.int64), np.zeros(10), np.zeros((10, 1)), np.zeros(10))
    td = rng.random(10) * 3 + 0.1
    assert td.max() > 1.0  # above the initial max priority of 1, so the running max must follow it
    buf.update_priorities(np.arange(10), td)
    out = buf.sample(64, rng, beta=0.4)
    p = (td + buf.eps) ** 0.6
    P = p / p.sum()
    w = (10 * P) ** -0.4
    np.testing.assert_allclose(out["weights"].numpy(), (w / w.max())[out["indices"]], rtol=1e-5)
    # new transitions get the largest priority seen so far
    buf.add(np.ones((1, 1)), np.zeros(1, dtype=np.int64), np.zeros(1), np.zeros((1, 1)), np.zeros(1))
    assert buf.tree.get(np.array([10]))[0] == pytest.approx(((td + buf.eps).max()) ** 0.6)


def test_replay_buffer_ring_and_state_round_trip() -> None:
    buf = ReplayBuffer(5)
    for i in range(7):
        buf.add(np.full((1, 2), i), np.array([i]), np.array([float(i)]), np.full((1, 2), i + 1), np.array([0.9]))
    assert len(buf) == 5 and buf.pos == 2
    assert sorted(buf.data["rewards"].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    other = ReplayBuffer(5)
    other.load_state_dict(buf.state_dict())
    a = buf.sample(8, np.random.default_rng(0))
    b = other.sample(8, np.random.default_rng(0))
    for k in ("obs", "actions", "rewards", "next_obs", "discounts"):
        assert torch.equal(a[k], b[k])
    pbuf = PrioritizedReplayBuffer(8)
    pbuf.add(np.zeros((3, 1)), np.zeros(3, dtype=np.int64), np.zeros(3), np.zeros((3, 1)), np.zeros(3))
    pbuf.update_priorities(np.arange(3), np.array([0.5, 2.0, 1.0]))
    q = PrioritizedReplayBuffer(8)
    q.load_state_dict(pbuf.state_dict())
    np.testing.assert_array_equal(q.tree.tree, pbuf.tree.tree)
    assert q.max_priority == pbuf.max_priority


def test_n_step_accumulator_matches_n_step_returns() -> None:
    # one env, a stream with a termination and a truncation; the accumulator's (reward sum, discount) pairs must
    # reproduce G_t^(n) = sum + discount * V(s') for an arbitrary V
    rng = np.random.default_rng(4)
    T, n, gamma = 40, 3, 0.9
    rewards = rng.normal(size=T)
    term = np.zeros(T, dtype=bool)
    trunc = np.zeros(T, dtype=bool)
    term[11], trunc[25] = True, True
    obs = np.arange(T + 1, dtype=np.float64)  # observation = time index; V(s) = sin(s)
    acc = NStepAccumulator(1, n, gamma)
    got: dict[int, float] = {}
    for t in range(T):
        out = acc.push(obs[t][None, None], np.array([0]), rewards[t:t + 1], obs[t + 1][None, None], term[t:t + 1],
                       trunc[t:t + 1])
        if out is not None:
            for o, r, nxt, d in zip(out["obs"][:, 0], out["rewards"], out["next_obs"][:, 0], out["discounts"]):
                got[int(o)] = float(r) + float(d) * np.sin(nxt)
    boot = torch.as_tensor(np.sin(obs[1:]))[:, None]
    expected = n_step_targets(torch.as_tensor(rewards)[:, None], torch.as_tensor(term)[:, None],
                              torch.as_tensor(term | trunc)[:, None], boot, gamma, n)[:, 0].numpy()
    # the last n-1 steps are still pending (their windows are not complete yet)
    assert sorted(got) == list(range(T - n + 1))
    np.testing.assert_allclose([got[t] for t in sorted(got)], expected[: T - n + 1], rtol=1e-5, atol=1e-5)
    state = acc.state_dict()
    other = NStepAccumulator(1, n, gamma)
    other.load_state_dict(state)
    assert len(other.pending[0]) == n - 1
