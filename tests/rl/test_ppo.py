"""PPO: the loss against its formula in NumPy (values and gradients), the hand-written log-probs against
torch.distributions, a resumed run against an uninterrupted one (bit-identical on CPU), and bad configs.

References: eq. 7 and 9 of Schulman et al. 2017 written out in NumPy with the closed-form derivative of the
clipped surrogate; torch.distributions.Categorical / Normal for log-probs and entropies."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from tricklab.errors import ConfigError
from tricklab.rl.envs import env_spaces
from tricklab.rl.metrics import EPISODE_METRICS
from tricklab.rl.ppo import ActorCritic, PPOConfig, ppo_loss, run_ppo


def numpy_ppo_loss(new_logp, old_logp, adv, v, v_old, ret, ent, clip, vclip, cv, ce):
    r = np.exp(new_logp - old_logp)
    surr = np.maximum(-adv * r, -adv * np.clip(r, 1 - clip, 1 + clip))
    if vclip is None:
        vl = 0.5 * np.mean((v - ret) ** 2)
    else:
        vc = v_old + np.clip(v - v_old, -vclip, vclip)
        vl = 0.5 * np.mean(np.maximum((v - ret) ** 2, (vc - ret) ** 2))
    loss = surr.mean() + cv * vl - ce * ent.mean()
    # d surr_i / d new_logp_i: -A r where the unclipped term is the max (or both equal), else 0
    unclipped_active = (-adv * r) >= (-adv * np.clip(r, 1 - clip, 1 + clip))
    d_logp = np.where(unclipped_active, -adv * r, 0.0) / len(r)
    return loss, d_logp


@pytest.mark.parametrize("vclip", [None, 0.2])
def test_ppo_loss_matches_formula(vclip) -> None:
    g = torch.Generator().manual_seed(0)
    B = 64
    old = torch.randn(B, generator=g, dtype=torch.float64)
    new = (old + 0.4 * torch.randn(B, generator=g, dtype=torch.float64)).requires_grad_(True)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    v_old = torch.randn(B, generator=g, dtype=torch.float64)
    v = (v_old + 0.5 * torch.randn(B, generator=g, dtype=torch.float64)).requires_grad_(True)
    ret = torch.randn(B, generator=g, dtype=torch.float64)
    ent = torch.rand(B, generator=g, dtype=torch.float64)
    loss, _ = ppo_loss(new, old, adv, v, v_old, ret, ent, 0.2, vclip, 0.5, 0.01)
    ref, d_logp = numpy_ppo_loss(*(t.detach().numpy() for t in (new, old, adv, v, v_old, ret, ent)),
                                 0.2, vclip, 0.5, 0.01)
    assert abs(loss.item() - ref) < 1e-12
    gnew, gv = torch.autograd.grad(loss, [new, v])
    np.testing.assert_allclose(gnew.numpy(), d_logp, rtol=1e-10, atol=1e-14)
    # value gradient against finite differences of the NumPy loss (the loss is piecewise quadratic in v)
    eps = 1e-6
    args = [t.detach().numpy().copy() for t in (new, old, adv, v, v_old, ret, ent)]
    fd = np.zeros(B)
    for i in range(B):
        plus, minus = [a.copy() for a in args], [a.copy() for a in args]
        plus[3][i] += eps
        minus[3][i] -= eps
        up = numpy_ppo_loss(*plus, 0.2, vclip, 0.5, 0.01)[0]
        down = numpy_ppo_loss(*minus, 0.2, vclip, 0.5, 0.01)[0]
        fd[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(gv.numpy(), fd, rtol=1e-5, atol=1e-9)


def test_log_prob_and_entropy_match_torch_distributions() -> None:
    torch.manual_seed(0)
    _, discrete = env_spaces("CartPole-v1")
    net = ActorCritic(4, discrete, (8,), "tanh")
    obs = torch.randn(10, 4)
    params = net.dist_params(obs)
    ref = Categorical(logits=net.actor(obs))
    a = ref.sample()
    torch.testing.assert_close(net.log_prob(params, a), ref.log_prob(a))
    torch.testing.assert_close(net.entropy(params), ref.entropy())
    _, box = env_spaces("Pendulum-v1")
    cnet = ActorCritic(3, box, (8,), "tanh", log_std_init=-0.3)
    obs = torch.randn(10, 3)
    mean = cnet.dist_params(obs)
    nref = Normal(mean, cnet.log_std.exp().expand_as(mean))
    a = nref.sample()
    lp, lp_ref = cnet.log_prob(mean, a), nref.log_prob(a).sum(-1)
    torch.testing.assert_close(lp, lp_ref)
    torch.testing.assert_close(cnet.entropy(mean), nref.entropy().sum(-1))
    g1 = torch.autograd.grad(lp.sum(), cnet.log_std, retain_graph=True)[0]
    g2 = torch.autograd.grad(lp_ref.sum(), cnet.log_std)[0]
    torch.testing.assert_close(g1, g2)


class Interrupt(Exception):
    pass


def small_config(**kw) -> PPOConfig:
    base = dict(env_id="CartPole-v1", total_steps=2 * 64 * 7, num_envs=2, n_steps=64, epochs=2, minibatch_size=32,
                anneal_lr=True, norm_obs=True, norm_reward=True, value_clip=0.2, ent_coef=0.01, eval_every=256,
                eval_episodes=2, checkpoint_every=2, hidden=(16, 16))
    base.update(kw)
    return PPOConfig(**base)


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def test_resumed_run_equals_uninterrupted(tmp_path) -> None:
    cfg = small_config()
    full = run_ppo(cfg, seed=3, run_dir=tmp_path / "full")

    def stop_at_5(row):
        if row["iteration"] == 5:
            raise Interrupt  # after iteration 5: the newest checkpoint is iteration 4

    with pytest.raises(Interrupt):
        run_ppo(cfg, seed=3, run_dir=tmp_path / "cut", progress=stop_at_5)
    resumed = run_ppo(cfg, seed=3, run_dir=tmp_path / "cut", resume=True)
    assert json.dumps(without_seconds(resumed.history)) == json.dumps(without_seconds(full.history))
    for k in ("episode_return", "mean_eval_return", "train_return", "env_steps", "episodes"):
        assert resumed.metrics[k] == full.metrics[k], k
    from tricklab.train.checkpoint import load_latest
    a = load_latest(tmp_path / "full" / "checkpoints")[1]["state"]["agent"]
    b = load_latest(tmp_path / "cut" / "checkpoints")[1]["state"]["agent"]
    for name, tensor in a["net"].items():
        assert torch.equal(tensor, b["net"][name]), name
    np.testing.assert_array_equal(a["obs_norm"]["mean"], b["obs_norm"]["mean"])
    np.testing.assert_array_equal(a["rew_scale"]["returns"], b["rew_scale"]["returns"])


def test_resume_refuses_a_changed_config(tmp_path) -> None:
    cfg = small_config(total_steps=2 * 64 * 2)
    run_ppo(cfg, seed=0, run_dir=tmp_path)
    with pytest.raises(ConfigError, match="lr"):
        run_ppo(dataclasses.replace(cfg, lr=1e-3), seed=0, run_dir=tmp_path, resume=True)


@pytest.mark.parametrize("kw, field", [({"env_id": "NoSuchEnv-v0"}, "env_id"), ({"gamma": 1.5}, "gamma"),
                                       ({"minibatch_size": 10_000}, "minibatch_size"), ({"hidden": ()}, "hidden"),
                                       ({"activation": "gelu2"}, "activation"), ({"n_steps": 0}, "n_steps")])
def test_bad_config_is_refused(kw, field) -> None:
    with pytest.raises(ConfigError, match=field):
        PPOConfig(**kw)


def test_learns_cartpole_a_little() -> None:
    # a weak but falsifiable check that the pieces fit: 12k steps lift the return well above random (~22)
    res = run_ppo(PPOConfig(total_steps=12_288, num_envs=4, n_steps=256, eval_every=0, eval_episodes=5,
                            anneal_lr=True), seed=0)
    assert res.metrics["episode_return"] > 100, res.metrics
    assert set(res.metrics) == {m.key for m in EPISODE_METRICS}  # every declared metric, nothing undeclared
    assert res.history[-1]["step"] == res.metrics["env_steps"] == 12_288


def test_continuous_ppo_on_pendulum_runs_and_respects_bounds() -> None:
    from tricklab.rl.ppo import PPO
    agent = PPO(PPOConfig(env_id="Pendulum-v1", total_steps=256, num_envs=2, n_steps=64, minibatch_size=32, epochs=1,
                          hidden=(8,)), seed=0)
    rollout = agent.collect()
    assert rollout["env_actions"].min() >= -2.0 and rollout["env_actions"].max() <= 2.0
    info = agent.update(rollout)
    assert np.isfinite(info["policy_loss"]) and np.isfinite(info["value_loss"])
    assert agent.policy(rollout["raw_obs"][0]).shape == (2, 1)
