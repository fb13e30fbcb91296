"""Learning from preferences: the Bradley-Terry loss against its formula (values and gradients), the synthetic
labellers, segment sampling rules, and a reward model that learns to order segments.

References: eq. 1-2 of Christiano et al. 2017 written out in NumPy with exp and log (no sigmoid helper), and the
closed-form gradient d loss / d R^1 = sigmoid(R^1 - R^2) - mu."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.rl.envs import env_spaces
from tricklab.rl.metrics import PREFERENCE_METRICS
from tricklab.rl.ppo import PPOConfig
from tricklab.rl.preferences import (PreferenceConfig, RewardModel, bradley_terry_loss, run_preferences,
                                     sample_segments, synthetic_labels)


def test_bradley_terry_loss_matches_formula() -> None:
    g = torch.Generator().manual_seed(0)
    r1 = (torch.randn(32, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    r2 = (torch.randn(32, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    mu = torch.tensor(np.random.default_rng(0).choice([0.0, 0.5, 1.0], size=32))
    loss = bradley_terry_loss(r1, r2, mu)
    a, b, m = r1.detach().numpy(), r2.detach().numpy(), mu.numpy()
    p1 = np.exp(a) / (np.exp(a) + np.exp(b))
    p2 = np.exp(b) / (np.exp(a) + np.exp(b))
    assert loss.item() == pytest.approx(np.mean(-m * np.log(p1) - (1 - m) * np.log(p2)), rel=1e-12)
    g1, g2 = torch.autograd.grad(loss, [r1, r2])
    np.testing.assert_allclose(g1.numpy(), (p1 - m) / 32, rtol=1e-10)
    np.testing.assert_allclose(g2.numpy(), -(p1 - m) / 32, rtol=1e-10)


def test_synthetic_labels() -> None:
    rng = np.random.default_rng(0)
    t1, t2 = np.array([3.0, 1.0, 2.0]), np.array([1.0, 3.0, 2.0])
    np.testing.assert_array_equal(synthetic_labels(t1, t2, 0.0, rng), [1.0, 0.0, 0.5])
    big1, big2 = np.ones(20_000), np.zeros(20_000)
    noisy = synthetic_labels(big1, big2, 0.2, rng)
    # a random answer is wrong half the time: error rate noise / 2
    assert np.mean(noisy == 0.0) == pytest.approx(0.1, abs=0.01)


def fake_rollout() -> dict:
    T, N = 12, 2
    obs = np.arange(T * N * 4, dtype=np.float64).reshape(T, N, 4)
    term = np.zeros((T, N), dtype=bool)
    trunc = np.zeros((T, N), dtype=bool)
    term[4, 0] = True   # env 0: an episode ends by termination at t = 4
    trunc[6, 1] = True  # env 1: a time-limit cut at t = 6
    return {"raw_obs": obs, "env_actions": np.zeros((T, N), dtype=np.int64), "true_rewards": np.ones((T, N)),
            "terminated": term, "dones": term | trunc}


def test_segments_stop_at_terminations_and_avoid_truncations() -> None:
    seg = sample_segments(fake_rollout(), count=200, length=5, rng=np.random.default_rng(1))
    assert len(seg["returns"]) > 50
    np.testing.assert_array_equal(seg["returns"], seg["mask"].sum(1))  # reward 1 per step that happened
    for obs, mask in zip(seg["obs"], seg["mask"]):
        steps = int(mask.sum())
        first = obs[0, 0]
        t0, env = int(first // 8), int(first % 8) // 4
        if steps < 5:  # cut short: only by env 0's termination at t = 4
            assert env == 0 and t0 + steps - 1 == 4
        # never crosses env 1's truncation at t = 6, nor the end of the rollout
        assert not (env == 1 and t0 <= 6 < t0 + steps)
        assert t0 + steps <= 12
        assert (mask[:steps] == 1).all() and (mask[steps:] == 0).all()


def test_reward_model_learns_to_order_segments() -> None:
    # true reward: 1 where the pole angle obs[2] is small; segments of random states
    torch.manual_seed(0)
    rng = np.random.default_rng(2)
    _, space = env_spaces("CartPole-v1")
    model = RewardModel(4, space, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    obs = rng.normal(size=(200, 2, 10, 4)).astype(np.float32)
    true = (np.abs(obs[..., 2]) < 0.5).sum(-1).astype(np.float64)
    mu = torch.from_numpy(synthetic_labels(true[:, 0], true[:, 1], 0.0, rng))
    x, a, mask = torch.from_numpy(obs), torch.zeros(200, 2, 10, dtype=torch.long), torch.ones(200, 2, 10)
    for _ in range(150):
        R = model.segment_returns(x, a, mask)
        loss = bradley_terry_loss(R[:, 0], R[:, 1], mu)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = rng.normal(size=(200, 2, 10, 4)).astype(np.float32)
    t_true = (np.abs(test[..., 2]) < 0.5).sum(-1)
    with torch.no_grad():
        R = model.segment_returns(torch.from_numpy(test), torch.zeros(200, 2, 10, dtype=torch.long),
                                  torch.ones(200, 2, 10)).numpy()
    decided = t_true[:, 0] != t_true[:, 1]
    agree = ((R[:, 0] > R[:, 1]) == (t_true[:, 0] > t_true[:, 1]))[decided].mean()
    assert agree > 0.85, agree


def test_preference_run_and_config_errors(tmp_path) -> None:
    cfg = PreferenceConfig(ppo=PPOConfig(total_steps=2 * 128 * 3, num_envs=2, n_steps=128, minibatch_size=64,
                                         epochs=2, eval_every=0, eval_episodes=2, norm_reward=True),
                           total_labels=60, initial_labels=40, labels_per_iteration=10, reward_steps=20,
                           segment_length=10)
    res = run_preferences(cfg, seed=0)
    assert res.metrics["labels"] == 60 and np.isfinite(res.metrics["episode_return"])
    assert set(res.metrics) == {m.key for m in PREFERENCE_METRICS}
    with pytest.raises(ConfigError, match="labeller"):
        PreferenceConfig(labeller="human")
    with pytest.raises(ConfigError, match="initial_labels"):
        PreferenceConfig(total_labels=10, initial_labels=20)
    with pytest.raises(ConfigError, match="segment_length"):
        PreferenceConfig(ppo=PPOConfig(n_steps=16, minibatch_size=16), segment_length=25)


class Interrupt(Exception):
    pass


def test_resumed_preference_run_equals_uninterrupted(tmp_path) -> None:
    # reference: the same run without interruption; the checkpoint holds PPO, the reward model, its labelled pairs
    # and the evaluation schedule
    cfg = PreferenceConfig(ppo=PPOConfig(total_steps=2 * 64 * 4, num_envs=2, n_steps=64, minibatch_size=64,
                                         epochs=1, eval_every=256, eval_episodes=1, norm_reward=True),
                           total_labels=40, initial_labels=20, labels_per_iteration=10, reward_steps=5,
                           segment_length=8, heldout_pairs=10, checkpoint_every=1)
    full = run_preferences(cfg, seed=4, run_dir=tmp_path / "full")

    def stop(row):
        if row["iteration"] == 2:
            raise Interrupt  # the checkpoint of iteration 2 is written before progress is called

    with pytest.raises(Interrupt):
        run_preferences(cfg, seed=4, run_dir=tmp_path / "cut", progress=stop)
    seen: list[int] = []
    resumed = run_preferences(cfg, seed=4, run_dir=tmp_path / "cut", resume=True,
                              progress=lambda row: seen.append(row["iteration"]))
    assert seen == [3, 4]  # it continued from the checkpoint, it did not start over
    # JSON text compares NaN (no finished episode yet) equal to NaN
    strip = json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in full.history])
    assert json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]) == strip
    assert json.dumps({k: v for k, v in resumed.metrics.items() if "seconds" not in k}) == \
        json.dumps({k: v for k, v in full.metrics.items() if "seconds" not in k})
