"""Running statistics against NumPy over everything seen; the reward scaler against its recursion written out."""

from __future__ import annotations

import numpy as np

from tricklab.rl.normalize import ObservationNormalizer, RewardScaler, RunningMeanStd


def test_running_mean_std_equals_numpy_over_all_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 4)) for n in (1, 7, 100, 3, 50)]
    rms = RunningMeanStd((4,))
    for b in batches:
        rms.update(b)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean, everything.mean(0), rtol=1e-12)
    np.testing.assert_allclose(rms.var, everything.var(0), rtol=1e-12)
    assert rms.count == len(everything)


def test_observation_normalizer_state_round_trip_and_clip() -> None:
    rng = np.random.default_rng(1)
    norm = ObservationNormalizer((3,), clip=5.0)
    data = rng.normal(0.0, 1.0, size=(200, 3))
    norm.update(data)
    x = np.array([[0.0, 100.0, -100.0]])
    out = norm(x)
    expected = np.clip((x - data.mean(0)) / np.sqrt(data.var(0) + 1e-8), -5, 5)
    np.testing.assert_allclose(out, expected.astype(np.float32), rtol=1e-6)
    other = ObservationNormalizer((3,), clip=5.0)
    other.load_state_dict(norm.state_dict())
    np.testing.assert_array_equal(other(x), out)
    assert ObservationNormalizer((3,), enabled=False)(x).dtype == np.float32


def test_reward_scaler_divides_by_std_of_discounted_return() -> None:
    rng = np.random.default_rng(2)
    gamma = 0.9
    scaler = RewardScaler(num_envs=2, gamma=gamma, clip=1e9)
    running = np.zeros(2)
    seen = []
    for _ in range(50):
        r = rng.normal(size=2)
        d = rng.random(2) < 0.1
        out = scaler(r, d)
        running = running * gamma + r
        seen.append(running.copy())
        np.testing.assert_allclose(out, (r / np.sqrt(np.var(np.concatenate(seen)) + 1e-8)).astype(np.float32),
                                   rtol=1e-5)
        running[d] = 0.0
