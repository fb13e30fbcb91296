"""Training throughput (environment steps per second) of our PPO and SAC against stable-baselines3's, side by side.

Same environment, same network, same hyperparameters (both use SB3's defaults: PPO on CartPole-v1 with 64-64 tanh
actor and critic, n_steps 2048, 10 epochs of minibatch 64; SAC on Pendulum-v1 with 256-256 ReLU nets, batch 256,
one gradient step per env step after 100 random steps). What is timed is training only: collecting and updating,
no evaluation, objects built before the clock starts. One thread (``torch.set_num_threads(1)``).

Each repeat runs both contenders back to back, the order flipped every repeat so both see the same machine load;
the table gives medians over repeats of steps/s (wall clock and process CPU time), the median of the per-repeat
ratios ours/SB3 (> 1: ours is faster), and the noise between identical runs: the median over pairs of repeats of
|log(t_i / t_j)| for the same contender, as a percentage. A ratio earns a verdict only where it differs from 1 by
more than that noise.

    python benchmarks/rl_throughput.py [--repeats 5] [--ppo-steps 4096] [--sac-steps 600] [--threads 1]

Writes ``benchmarks/results/rl_throughput.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "rl_throughput.json"


def ours_ppo(steps: int, seed: int) -> Callable[[], int]:
    from tricklab.rl.ppo import PPO, PPOConfig
    agent = PPO(PPOConfig(env_id="CartPole-v1", total_steps=steps), seed)

    def run() -> int:
        while agent.iteration < agent.num_iterations:
            agent.update(agent.collect())
        return agent.steps
    return run


def sb3_ppo(steps: int, seed: int) -> Callable[[], int]:
    from stable_baselines3 import PPO
    model = PPO("MlpPolicy", "CartPole-v1", seed=seed, device="cpu", verbose=0)

    def run() -> int:
        model.learn(total_timesteps=steps)
        return int(model.num_timesteps)
    return run


def ours_sac(steps: int, seed: int) -> Callable[[], int]:
    from tricklab.rl.sac import SAC, SACConfig
    agent = SAC(SACConfig(env_id="Pendulum-v1", total_steps=steps), seed)

    def run() -> int:
        while agent.steps < steps:
            agent.env_step()
            if agent.steps >= agent.config.learning_starts:
                agent.update()
        return agent.steps
    return run


def sb3_sac(steps: int, seed: int) -> Callable[[], int]:
    from stable_baselines3 import SAC
    model = SAC("MlpPolicy", "Pendulum-v1", seed=seed, device="cpu", verbose=0)

    def run() -> int:
        model.learn(total_timesteps=steps)
        return int(model.num_timesteps)
    return run


def timed(make: Callable[[int, int], Callable[[], int]], steps: int, seed: int) -> dict[str, float]:
    run = make(steps, seed)
    w0, c0 = time.perf_counter(), time.process_time()
    done = run()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"steps": done, "wall": wall, "cpu": cpu}


def noise(times: list[float]) -> float:
    """Median |log(t_i / t_j)| over pairs of repeats, in percent (the spread between identical runs)."""
    pairs = [abs(math.log(a / b)) for a, b in itertools.combinations(times, 2)]
    return 100 * (math.exp(statistics.median(pairs)) - 1) if pairs else float("nan")


def compare(name: str, ours: Callable, theirs: Callable, steps: int, repeats: int) -> dict[str, Any]:
    timed(ours, min(steps, 256), 0), timed(theirs, min(steps, 256), 0)  # warm-up: imports, first allocations
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "sb3": []}
    for r in range(repeats):
        order = [("ours", ours), ("sb3", theirs)] if r % 2 == 0 else [("sb3", theirs), ("ours", ours)]
        for who, make in order:
            runs[who].append(timed(make, steps, seed=r))
    out: dict[str, Any] = {"benchmark": name, "steps_per_run": steps, "repeats": repeats, "runs": runs}
    for clock in ("wall", "cpu"):
        sps = {who: [x["steps"] / x[clock] for x in rs] for who, rs in runs.items()}
        ratios = [o / s for o, s in zip(sps["ours"], sps["sb3"])]
        n_ours, n_sb3 = noise([x[clock] for x in runs["ours"]]), noise([x[clock] for x in runs["sb3"]])
        ratio = statistics.median(ratios)
        limit = max(n_ours, n_sb3) / 100
        verdict = ("ours faster" if ratio > 1 + limit else "ours slower" if ratio < 1 / (1 + limit)
                   else "within noise")
        out[clock] = {"ours_steps_per_s": statistics.median(sps["ours"]),
                      "sb3_steps_per_s": statistics.median(sps["sb3"]), "ratio_ours_over_sb3": ratio,
                      "ratios": ratios, "noise_pct_ours": n_ours, "noise_pct_sb3": n_sb3, "verdict": verdict}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ppo-steps", type=int, default=4096)
    p.add_argument("--sac-steps", type=int, default=600)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import gymnasium
    import stable_baselines3

    results = [compare("PPO CartPole-v1", ours_ppo, sb3_ppo, args.ppo_steps, args.repeats),
               compare("SAC Pendulum-v1", ours_sac, sb3_sac, args.sac_steps, args.repeats)]
    print(f"{'benchmark':<18} {'clock':<5} {'ours steps/s':>13} {'SB3 steps/s':>12} {'ours/SB3':>9} "
          f"{'noise ours':>11} {'noise SB3':>10}  verdict")
    for res in results:
        for clock in ("wall", "cpu"):
            d = res[clock]
            print(f"{res['benchmark']:<18} {clock:<5} {d['ours_steps_per_s']:>13.1f} {d['sb3_steps_per_s']:>12.1f} "
                  f"{d['ratio_ours_over_sb3']:>9.2f} {d['noise_pct_ours']:>10.1f}% {d['noise_pct_sb3']:>9.1f}%  "
                  f"{d['verdict']}")
    from tricklab.train.reproducibility import _cpu_model
    payload = {"machine": {"cpu": _cpu_model(), "python": platform.python_version(), "torch": torch.__version__,
                           "threads": args.threads, "stable_baselines3": stable_baselines3.__version__,
                           "gymnasium": gymnasium.__version__},
               "note": "the machine was shared with other work while this ran; compare the ratios, not the seconds",
               "command": "python benchmarks/rl_throughput.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
               "results": results}
    from tricklab.io import atomic_write_text
    atomic_write_text(RESULTS, json.dumps(payload, indent=1))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
