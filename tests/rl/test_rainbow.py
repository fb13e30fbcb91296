"""Rainbow: double/plain DQN targets against their formulas, dueling aggregation, each component switchable (the
network and buffer change as configured), and a resumed run (replay buffer with priorities and pending n-step
transitions included) equal to an uninterrupted one.

References: y = r + discount * Q_targ(s', argmax_a Q(s', a)) (van Hasselt et al. 2016) and
y = r + discount * max_a Q_targ(s', a) written out per sample in NumPy; Wang et al. 2016 eq. 9 for dueling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.rl.metrics import EPISODE_METRICS
from tricklab.rl.buffers import PrioritizedReplayBuffer, ReplayBuffer
from tricklab.rl.noisy import NoisyLinear
from tricklab.rl.rainbow import QNetwork, Rainbow, RainbowConfig, dqn_targets, run_rainbow


def test_dqn_targets_match_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    online, target = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    r, d = torch.randn(16, generator=g), torch.rand(16, generator=g)
    y_double = dqn_targets(online, target, r, d, double=True)
    y_max = dqn_targets(online, target, r, d, double=False)
    for i in range(16):
        a = int(np.argmax(online[i].numpy()))
        assert y_double[i].item() == pytest.approx(r[i].item() + d[i].item() * target[i, a].item(), rel=1e-6)
        assert y_max[i].item() == pytest.approx(r[i].item() + d[i].item() * target[i].max().item(), rel=1e-6)


def test_dueling_aggregation() -> None:
    torch.manual_seed(0)
    net = QNetwork(4, 3, (8, 8), dueling=True, atoms=5, noisy=False, sigma0=0.5)
    x = torch.randn(6, 4)
    h = net.torso(x)
    v, a = net.val(h).view(-1, 1, 5), net.adv(h).view(-1, 3, 5)
    torch.testing.assert_close(net(x), v + a - a.mean(1, keepdim=True))
    grads = torch.autograd.grad(net(x).sum(), list(net.parameters()), allow_unused=True)
    assert all(gr is not None for gr in grads)


@pytest.mark.parametrize("changes", [{}, {"double": False}, {"dueling": False}, {"prioritized": False},
                                     {"n_step": 1}, {"distributional": False}, {"noisy": False}])
def test_each_component_switches(changes) -> None:
    cfg = RainbowConfig(total_steps=300, learning_starts=64, batch_size=32, hidden=(16, 16), eval_every=0,
                        eval_episodes=1, **changes)
    agent = Rainbow(cfg, seed=0)
    assert any(isinstance(m, NoisyLinear) for m in agent.net.modules()) == cfg.noisy
    assert (agent.net.val is not None) == cfg.dueling
    assert isinstance(agent.buffer, PrioritizedReplayBuffer if cfg.prioritized else ReplayBuffer)
    assert agent.net.atoms == (cfg.atoms if cfg.distributional else 1)
    assert agent.nstep.n == cfg.n_step
    for _ in range(100):
        agent.env_step()
    before = [p.detach().clone() for p in agent.net.parameters()]
    info = agent.update()
    assert np.isfinite(info["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.net.parameters()))


class Interrupt(Exception):
    pass


def test_resumed_rainbow_run_equals_uninterrupted(tmp_path) -> None:
    cfg = RainbowConfig(total_steps=400, learning_starts=64, batch_size=32, hidden=(16, 16), eval_every=200,
                        eval_episodes=1, log_every=50, checkpoint_every=150, target_update=20)
    full = run_rainbow(cfg, seed=2, run_dir=tmp_path / "full")

    def stop(row):
        if row["step"] == 200:
            raise Interrupt  # the newest checkpoint is at step 150

    with pytest.raises(Interrupt):
        run_rainbow(cfg, seed=2, run_dir=tmp_path / "cut", progress=stop)
    resumed = run_rainbow(cfg, seed=2, run_dir=tmp_path / "cut", resume=True)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert json.dumps([{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]) == json.dumps(strip)
    assert set(full.metrics) == {m.key for m in EPISODE_METRICS}  # every declared metric, nothing undeclared
    # the CPU-time counter is carried through the checkpoint, so the resumed run's total covers all its steps
    assert 0 < resumed.extras["train_cpu_seconds"] and 0 < full.extras["train_cpu_seconds"]
    from tricklab.train.checkpoint import load_latest
    a = load_latest(tmp_path / "full" / "checkpoints")[1]["state"]["agent"]
    b = load_latest(tmp_path / "cut" / "checkpoints")[1]["state"]["agent"]
    for name, t in a["net"].items():
        assert torch.equal(t, b["net"][name]), name
    np.testing.assert_array_equal(a["buffer"]["tree"]["tree"], b["buffer"]["tree"]["tree"])


def test_rainbow_config_errors() -> None:
    with pytest.raises(ConfigError, match="discrete"):
        RainbowConfig(env_id="Pendulum-v1")
    with pytest.raises(ConfigError, match="v_max"):
        RainbowConfig(v_min=10.0, v_max=0.0)
    with pytest.raises(ConfigError, match="alpha"):
        RainbowConfig(alpha=1.5)
