"""``run_federated``: FedAvg / FedProx (optionally with DP-SGD clients and masked aggregation) or centralized
training on MNIST-1D, shaped for the lab's task kinds (PARADIGMS.md).

The 4000 training signals are split over ``clients`` clients (IID, or Dirichlet(``alpha``) label skew); each round a
seeded fraction ``participation`` of them trains ``local_epochs`` of SGD from the global model, and the server
averages the results weighted by client size (through :func:`secure_weighted_average` with
``secure_aggregation``). ``centralized`` trains the same MLP with the same SGD on all the data for
``rounds * local_epochs`` epochs: the reference federated training is compared with. With ``dp_epsilon`` every
client runs DP-SGD with the noise multiplier that spends exactly that epsilon (delta ``dp_delta``) on its own data
over all its local steps (example-level privacy per client, RDP accountant).

Engines (``engine``): "flower" (the default) runs the rounds on Flower (:mod:`.flower`: Flower's FedAvg / FedProx
strategies, SecAgg+ for ``secure_aggregation``, and with ``dp_level="client"`` Flower's client-level DP) in its
simulation engine; "reference" runs the loop below over the same clients, the tested reference. ``centralized``
always runs the loop below.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from tricklab.paradigms.common import ParadigmResult, Progress, mlp, mnist1d_arrays, write_json
from tricklab.paradigms.federated.config import FEDERATED_ALGORITHMS, FEDERATED_ENGINES, FEDERATED_METRICS, \
    FederatedConfig
from tricklab.paradigms.federated.dp import dp_epsilon, noise_for_epsilon
from tricklab.paradigms.federated.fedavg import DPSettings, client_update, secure_weighted_average, \
    weighted_average
from tricklab.paradigms.federated.partition import dirichlet_split, iid_split

__all__ = ["FEDERATED_ALGORITHMS", "FEDERATED_ENGINES", "FEDERATED_METRICS", "FederatedConfig", "run_federated"]

@torch.no_grad()
def _evaluate(model: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor,
              y: torch.Tensor) -> tuple[float, float]:
    z = functional_call(model, params, (x,))
    return float((z.argmax(-1) == y).double().mean()), float(F.cross_entropy(z, y))


def run_federated(config: FederatedConfig, *, seed: int, run_dir: Path | None = None,
                  progress: Progress | None = None) -> ParadigmResult:
    """Train for ``config.rounds`` rounds (seed ``seed``: model init, client sampling, local batches); report the
    global model's test accuracy and loss, the accuracy curve over rounds and the epsilon spent."""
    torch.set_num_threads(config.threads)
    x, y, xt, yt = mnist1d_arrays()
    central = config.algorithm == "centralized"
    if central:
        shards = [torch.arange(len(x))]
    elif config.split == "iid":
        shards = iid_split(len(x), config.clients, seed=seed)
    else:
        shards = dirichlet_split(y, config.clients, config.alpha, seed=seed, min_size=config.batch_size // 4 or 1)
    if config.engine == "flower" and not central:
        return _run_on_flower(config, seed, shards, y, run_dir, progress)
    torch.manual_seed(seed)
    model = mlp([40, config.hidden, config.hidden, 10])
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    mu = config.mu if config.algorithm == "fedprox" else 0.0
    per_round = max(1, round(config.participation * len(shards)))
    dp: list[DPSettings | None] = [None] * len(shards)
    eps_spent = 0.0
    sigmas: dict[tuple[float, int], float] = {}
    if config.dp_epsilon is not None:
        for k, s in enumerate(shards):
            q = min(1.0, config.batch_size / len(s))
            # a client takes part in about rounds * participation rounds; account for all of its local steps
            local = config.local_epochs * -(-len(s) // config.batch_size)
            steps = round(config.rounds * per_round / len(shards)) * local
            if (q, steps) not in sigmas:  # equal-size clients share one bisection
                sigmas[(q, steps)] = noise_for_epsilon(config.dp_epsilon, q, max(steps, 1), config.dp_delta)
            sigma = sigmas[(q, steps)]
            dp[k] = DPSettings(config.dp_clip, sigma, q)
            eps_spent = max(eps_spent, dp_epsilon(q, sigma, max(steps, 1), config.dp_delta))
    history: list[dict[str, Any]] = []
    train_seconds, t0 = 0.0, time.perf_counter()
    for rnd in range(1, config.rounds + 1):
        t1 = time.perf_counter()
        chosen = sorted(torch.randperm(len(shards), generator=gen)[:per_round].tolist())
        updates, weights = [], []
        for k in chosen:
            idx = shards[k]
            # each client's batches and noise: a stream of its own per (seed, round, client), the one the Flower
            # engine's clients draw from, so both engines train on the same batches
            local_gen = torch.Generator().manual_seed(seed * 1_000_003 + rnd * 10_007 + k)
            p, _ = client_update(model, params, x[idx], y[idx], epochs=config.local_epochs,
                                 batch_size=config.batch_size, lr=config.lr, mu=mu, gen=local_gen, dp=dp[k])
            updates.append(p)
            weights.append(float(len(idx)))
        if config.secure_aggregation and len(updates) > 1:
            params = secure_weighted_average(updates, weights, seed=seed * 100_003 + rnd)
        else:
            params = weighted_average(updates, weights)
        train_seconds += time.perf_counter() - t1
        acc, loss = _evaluate(model, params, xt, yt)
        row = {"step": rnd, "seconds": time.perf_counter() - t0, "accuracy": acc, "loss": loss}
        history.append(row)
        if progress is not None:
            progress(dict(row))
    metrics = {"accuracy": history[-1]["accuracy"], "loss": history[-1]["loss"],
               "best_accuracy": max(r["accuracy"] for r in history), "epsilon": eps_spent,
               "train_seconds": train_seconds}
    extras = {"config": asdict(config), "seed": seed, "engine": "reference" if not central else "own loop",
              "client_sizes": [len(s) for s in shards],
              "client_label_counts": [torch.bincount(y[s], minlength=10).tolist() for s in shards],
              "noise_multipliers": [d.sigma for d in dp if d is not None]}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result


def _run_on_flower(config: FederatedConfig, seed: int, shards: list[torch.Tensor], y: torch.Tensor,
                   run_dir: Path | None, progress: Progress | None) -> ParadigmResult:
    """The same experiment on Flower's simulation engine (tricklab.paradigms.federated.flower)."""
    from tricklab.paradigms.federated.flower import client_level_noise, epsilon_spent, run_flower_simulation

    t0 = time.perf_counter()
    history = run_flower_simulation(config, seed, progress)
    metrics = {"accuracy": history[-1]["accuracy"], "loss": history[-1]["loss"],
               "best_accuracy": max(r["accuracy"] for r in history),
               "epsilon": epsilon_spent(config, [len(s) for s in shards]),
               "train_seconds": time.perf_counter() - t0}
    extras = {"config": asdict(config), "seed": seed, "engine": "flower (run_simulation, Ray backend)",
              "client_sizes": [len(s) for s in shards],
              "client_label_counts": [torch.bincount(y[s], minlength=10).tolist() for s in shards],
              "dp": None if config.dp_epsilon is None else (
                  "client-level (Flower's DifferentialPrivacyClientSideFixedClipping)" if config.dp_level == "client"
                  else "sample-level (DP-SGD in each client)"),
              "noise_multiplier": (client_level_noise(config.dp_epsilon, config.rounds, config.dp_delta)
                                   if config.dp_epsilon is not None and config.dp_level == "client" else None)}
    result = ParadigmResult(metrics, history, extras)
    if run_dir is not None:
        write_json(Path(run_dir) / "result.json", asdict(result))
    return result
