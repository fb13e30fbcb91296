"""SAC: the tanh-squashed Gaussian log-prob against a change-of-variables computation, values and gradients;
a resumed run (replay buffer included) against an uninterrupted one; config errors.

References: log p_Y(y) = log p_U(u) - log |det dy/du| with the Jacobian of y = scale * tanh(u) + bias computed by
torch.autograd.functional.jacobian (no closed form used), and torch.distributions.TransformedDistribution with
TanhTransform and AffineTransform (torch built-in)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from tricklab.errors import ConfigError
from tricklab.rl.metrics import EPISODE_METRICS
from tricklab.rl.sac import SACConfig, log1m_tanh_sq, run_sac, squashed_gaussian_log_prob


def change_of_variables(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, scale: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    out = []
    for i in range(u.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: scale * torch.tanh(v) + bias, u[i], create_graph=True)
        base = Normal(mean[i], log_std[i].exp()).log_prob(u[i]).sum()
        out.append(base - torch.logdet(jac))
    return torch.stack(out)


def test_squashed_log_prob_matches_change_of_variables() -> None:
    g = torch.Generator().manual_seed(0)
    B, A = 16, 3
    mean = torch.randn(B, A, generator=g, dtype=torch.float64).requires_grad_(True)
    log_std = (torch.rand(B, A, generator=g, dtype=torch.float64) - 1.0).requires_grad_(True)
    scale = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    bias = torch.tensor([0.0, 1.0, -0.3], dtype=torch.float64)
    u = (mean + log_std.exp() * torch.randn(B, A, generator=g, dtype=torch.float64)).detach()
    ours = squashed_gaussian_log_prob(u, mean, log_std, scale)
    ref = change_of_variables(u, mean, log_std, scale, bias)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g_ours = torch.autograd.grad(ours.sum(), [mean, log_std])
    g_ref = torch.autograd.grad(ref.sum(), [mean, log_std])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # torch's own TransformedDistribution agrees on the squashed action y
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform(), AffineTransform(bias, scale)])
    y = scale * torch.tanh(u) + bias
    torch.testing.assert_close(ours, dist.log_prob(y).sum(-1), rtol=1e-8, atol=1e-8)


def test_log1m_tanh_sq_is_stable() -> None:
    u = torch.tensor([-30.0, -3.0, 0.0, 2.0, 30.0], dtype=torch.float64)
    naive = torch.log(1 - torch.tanh(u[1:4]) ** 2)
    torch.testing.assert_close(log1m_tanh_sq(u[1:4]), naive)
    # where tanh(u) rounds to 1 the naive form is -inf; the stable one follows log(4) - 2|u|
    assert torch.isfinite(log1m_tanh_sq(u)).all()
    assert log1m_tanh_sq(u)[-1].item() == pytest.approx(math.log(4) - 60, rel=1e-9)


class Interrupt(Exception):
    pass


def test_resumed_sac_run_equals_uninterrupted(tmp_path) -> None:
    cfg = SACConfig(total_steps=300, learning_starts=50, batch_size=32, hidden=(16, 16), eval_every=100,
                    eval_episodes=1, log_every=50, checkpoint_every=100)
    full = run_sac(cfg, seed=1, run_dir=tmp_path / "full")

    def stop(row):
        if row["step"] == 150:
            raise Interrupt  # the newest checkpoint is at step 100, with 100 transitions in the buffer

    with pytest.raises(Interrupt):
        run_sac(cfg, seed=1, run_dir=tmp_path / "cut", progress=stop)
    resumed = run_sac(cfg, seed=1, run_dir=tmp_path / "cut", resume=True)
    # JSON text compares NaN (no finished episode yet) equal to NaN
    strip = json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in full.history])
    assert json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]) == strip
    assert resumed.metrics["episode_return"] == full.metrics["episode_return"]
    assert set(full.metrics) == {m.key for m in EPISODE_METRICS}  # every declared metric, nothing undeclared
    from tricklab.train.checkpoint import load_latest
    a = load_latest(tmp_path / "full" / "checkpoints")[1]["state"]["agent"]
    b = load_latest(tmp_path / "cut" / "checkpoints")[1]["state"]["agent"]
    for key in ("actor", "critic", "target"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    assert torch.equal(a["log_alpha"], b["log_alpha"])
    np.testing.assert_array_equal(a["buffer"]["data"]["obs"], b["buffer"]["data"]["obs"])


def test_sac_config_errors() -> None:
    with pytest.raises(ConfigError, match="discrete"):
        SACConfig(env_id="CartPole-v1")
    with pytest.raises(ConfigError, match="tau"):
        SACConfig(tau=2.0)
    with pytest.raises(ConfigError, match="batch_size"):
        SACConfig(batch_size=0)


def test_sac_runs_on_mountain_car_continuous_within_bounds() -> None:
    from tricklab.rl.sac import SAC
    agent = SAC(SACConfig(env_id="MountainCarContinuous-v0", total_steps=120, learning_starts=20, batch_size=16,
                          hidden=(8, 8)), seed=0)
    for _ in range(60):
        agent.env_step()
        if agent.steps >= 20:
            assert np.isfinite(agent.update()["critic_loss"])
    acts = agent.buffer.data["actions"][: len(agent.buffer)]
    assert acts.min() >= -1.0 and acts.max() <= 1.0  # tanh squashing into the env's bounds
