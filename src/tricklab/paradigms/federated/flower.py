"""Federated training on Flower (flwr 1.42): our MNIST-1D clients as a Flower ``ClientApp``, Flower's own FedAvg /
FedProx strategies, its SecAgg+ workflow and its client-level DP wrapper in a ``ServerApp``.

Engine choices (docs/paradigms/flower.md):

* Flower 1.42's SecAgg+ workflow (``flwr.server.workflow.SecAggPlusWorkflow``) runs on the compat API: a
  ``LegacyContext`` driven by ``DefaultWorkflow``, with the strategies of ``flwr.server.strategy`` and a
  ``NumPyClient``. So that FedAvg, FedProx, DP and SecAgg+ compose in one app, the whole app uses that API.
* One process: ``run_simulation`` (Flower's simulation engine on Ray; ``flwr[simulation]`` pins ray==2.55.1, the
  lab's Ray version). Separate processes: ``flower-superlink`` + ``flower-supernode`` per client + ``flwr run`` of
  the app in :mod:`tricklab.paradigms.federated.flower_app` (see :func:`app_dir`); the ServerApp then writes its
  result JSON to the run-config path ``result-path``.
* The client's local training is our functional core :func:`client_update` (SGD; FedProx's proximal term
  (mu / 2) ||w - w_t||^2 with the ``proximal_mu`` Flower's FedProx strategy sends; DP-SGD for sample-level DP).
* Client-level DP (McMahan et al., 2018; Flower's ``DifferentialPrivacyClientSideFixedClipping`` + the
  ``fixedclipping_mod``): each client's update w_k - w_t is clipped to norm C on the client, the server averages with
  equal weights and adds N(0, (z C / m)^2) to the mean of m clients. With no sampling amplification each round is a
  Gaussian mechanism of sensitivity C / m on the mean, i.e. RDP alpha / (2 z^2) per round; z is chosen with our RDP
  accountant for the target epsilon over all rounds.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from tricklab.errors import ConfigError
from tricklab.paradigms.common import mlp, mnist1d_arrays
from tricklab.paradigms.federated.config import FederatedConfig
from tricklab.paradigms.federated.dp import dp_epsilon, noise_for_epsilon
from tricklab.paradigms.federated.fedavg import DPSettings, client_update
from tricklab.paradigms.federated.partition import dirichlet_split, iid_split

if TYPE_CHECKING:  # only for annotations: flwr is an optional extra
    from flwr.app import Context
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp


__all__ = ["FLOWER_INSTALL_HINT", "client_level_noise", "make_client_app", "make_server_app", "run_flower_simulation",
           "app_dir", "config_to_run_config", "config_from_run_config"]

FLOWER_INSTALL_HINT = ("the Flower engine needs flwr: pip install 'tricklab[federated]' "
                       "(flwr[simulation]==1.42.0, which pins ray==2.55.1)")

# FederatedConfig fields passed to the deployed apps through Flower's run config (scalars only; None as "")
_RUN_CONFIG_FIELDS = ("algorithm", "split", "alpha", "clients", "participation", "rounds", "local_epochs",
                      "batch_size", "lr", "mu", "hidden", "secure_aggregation", "dp_epsilon", "dp_delta", "dp_clip",
                      "dp_level", "threads")


def _require_flwr() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(FLOWER_INSTALL_HINT) from e


def config_to_run_config(config: FederatedConfig, seed: int) -> dict[str, Any]:
    """The config as Flower run-config scalars (``dp_epsilon`` None becomes 0.0)."""
    out: dict[str, Any] = {k: getattr(config, k) for k in _RUN_CONFIG_FIELDS}
    out["dp_epsilon"] = float(config.dp_epsilon or 0.0)
    out["seed"] = seed
    return {k.replace("_", "-"): v for k, v in out.items()}


def config_from_run_config(run_config: dict[str, Any]) -> tuple[FederatedConfig, int]:
    """Inverse of :func:`config_to_run_config` (TOML may give ints where floats were meant)."""
    rc = {k.replace("-", "_"): v for k, v in run_config.items()}
    kw: dict[str, Any] = {k: rc[k] for k in _RUN_CONFIG_FIELDS if k in rc}
    for k in ("alpha", "participation", "lr", "mu", "dp_epsilon", "dp_delta", "dp_clip"):
        if k in kw:
            kw[k] = float(kw[k])
    kw["dp_epsilon"] = kw.get("dp_epsilon") or None
    kw["secure_aggregation"] = bool(kw.get("secure_aggregation", False))
    return FederatedConfig(**kw), int(rc.get("seed", 0))


def client_level_noise(epsilon: float, rounds: int, delta: float) -> float:
    """Noise multiplier z of client-level DP (Gaussian mechanism per round, no sampling amplification) that spends
    at most ``epsilon`` at ``delta`` over ``rounds`` rounds (our RDP accountant with q = 1)."""
    return noise_for_epsilon(epsilon, 1.0, rounds, delta)


def _per_round(config: FederatedConfig) -> int:
    return max(1, round(config.participation * config.clients))


@functools.lru_cache(maxsize=2)
def _shards(split: str, alpha: float, clients: int, seed: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Client index sets of the 4000 MNIST-1D training signals; cached per process (a Flower client object is
    rebuilt for every message, the data must not be)."""
    _, y, _, _ = mnist1d_arrays()
    if split == "iid":
        return tuple(iid_split(len(y), clients, seed=seed))
    return tuple(dirichlet_split(y, clients, alpha, seed=seed, min_size=batch_size // 4 or 1))


def _model(config: FederatedConfig, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return mlp([40, config.hidden, config.hidden, 10])


def _to_numpy(params: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return [v.detach().numpy().copy() for v in params.values()]


def _from_numpy(model: torch.nn.Module, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(a, dtype=np.float32).copy())
            for (k, _), a in zip(model.named_parameters(), arrays, strict=True)}


def _sample_dp(config: FederatedConfig, n: int) -> DPSettings | None:
    """Sample-level DP-SGD on a client of ``n`` examples: the noise multiplier that spends ``dp_epsilon`` over
    all the client's local steps in all rounds it takes part in (as :func:`run_federated` accounts it)."""
    if config.dp_epsilon is None or config.dp_level != "sample":
        return None
    q = min(1.0, config.batch_size / n)
    steps = max(1, round(config.rounds * _per_round(config) / config.clients)
                * config.local_epochs * -(-n // config.batch_size))
    return DPSettings(config.dp_clip, _sigma(config.dp_epsilon, q, steps, config.dp_delta), q)


@functools.lru_cache(maxsize=8)
def _sigma(eps: float, q: float, steps: int, delta: float) -> float:
    return noise_for_epsilon(eps, q, steps, delta)


def make_client_app(config: FederatedConfig, seed: int) -> ClientApp:
    """A ``ClientApp`` whose client ``partition-id`` (node config) trains on its shard with :func:`client_update`;
    mods: ``secaggplus_mod`` with secure aggregation, ``fixedclipping_mod`` with client-level DP (innermost:
    the update is clipped before it is masked)."""
    _require_flwr()
    from flwr.client import NumPyClient
    from flwr.client.mod import fixedclipping_mod, secaggplus_mod
    from flwr.clientapp import ClientApp

    class MNIST1DClient(NumPyClient):
        def __init__(self, pid: int) -> None:
            torch.set_num_threads(config.threads)
            x, y, _, _ = mnist1d_arrays()
            idx = _shards(config.split, config.alpha, config.clients, seed, config.batch_size)[pid]
            self.pid, self.x, self.y = pid, x[idx], y[idx]
            self.model = _model(config, seed)

        def fit(self, parameters: list[np.ndarray], fit_config: dict[str, Any]
                ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
            rnd = int(fit_config.get("round", 0))
            # local batches: a stream of its own per (seed, round, client), independent of message order
            gen = torch.Generator().manual_seed(seed * 1_000_003 + rnd * 10_007 + self.pid)
            mu = float(fit_config.get("proximal_mu", 0.0))
            p, steps = client_update(self.model, _from_numpy(self.model, parameters), self.x, self.y,
                                     epochs=config.local_epochs, batch_size=config.batch_size, lr=config.lr, mu=mu,
                                     gen=gen, dp=_sample_dp(config, len(self.x)))
            # client-level DP averages with equal weights (the mechanism's sensitivity is C / m then)
            weight = 1 if (config.dp_epsilon is not None and config.dp_level == "client") else len(self.x)
            return _to_numpy(p), weight, {"steps": steps}

    def client_fn(context: Context) -> Any:
        pid = int(context.node_config["partition-id"])
        if not 0 <= pid < config.clients:
            raise ConfigError(f"node config partition-id must be in 0..{config.clients - 1}, got {pid}")
        return MNIST1DClient(pid).to_client()

    mods = []
    if config.secure_aggregation:
        mods.append(secaggplus_mod)
    if config.dp_epsilon is not None and config.dp_level == "client":
        mods.append(fixedclipping_mod)
    return ClientApp(client_fn=client_fn, mods=mods)


def _server_main(grid: Grid, context: Context, config: FederatedConfig, seed: int,
                 on_round: Callable[[dict[str, Any]], None]) -> None:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg, FedProx
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    torch.set_num_threads(config.threads)
    model = _model(config, seed)
    init = {k: v.detach().clone() for k, v in model.named_parameters()}
    _, _, xt, yt = mnist1d_arrays()
    t0 = time.perf_counter()

    def evaluate_fn(rnd: int, arrays: list[np.ndarray], _cfg: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        with torch.no_grad():
            z = functional_call(model, _from_numpy(model, arrays), (xt,))
        acc, loss = float((z.argmax(-1) == yt).double().mean()), float(F.cross_entropy(z, yt))
        if rnd > 0:  # round 0 is the initial model
            on_round({"step": rnd, "seconds": time.perf_counter() - t0, "accuracy": acc, "loss": loss})
        return loss, {"accuracy": acc}

    m = _per_round(config)
    common = dict(fraction_fit=config.participation, fraction_evaluate=0.0, min_fit_clients=m,
                  min_evaluate_clients=0, min_available_clients=config.clients, evaluate_fn=evaluate_fn,
                  on_fit_config_fn=lambda rnd: {"round": rnd},
                  initial_parameters=ndarrays_to_parameters(_to_numpy(init)))
    strategy: Any
    if config.algorithm == "fedprox":
        strategy = FedProx(proximal_mu=config.mu, **common)
    else:
        strategy = FedAvg(**common)
    if config.dp_epsilon is not None and config.dp_level == "client":
        z = client_level_noise(config.dp_epsilon, config.rounds, config.dp_delta)
        strategy = DifferentialPrivacyClientSideFixedClipping(strategy, noise_multiplier=z,
                                                              clipping_norm=config.dp_clip, num_sampled_clients=m)
    fit_workflow = None
    if config.secure_aggregation:
        # every selected client holds a share of every other's key; any half of them can unmask
        fit_workflow = SecAggPlusWorkflow(num_shares=1.0, reconstruction_threshold=0.5,
                                          clipping_range=8.0, quantization_range=2**22)
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=config.rounds), strategy=strategy)
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)


def make_server_app(config: FederatedConfig, seed: int, on_round: Callable[[dict[str, Any]], None]) -> ServerApp:
    """A ``ServerApp`` running ``config.rounds`` rounds of Flower's FedAvg / FedProx (+ DP wrapper, + SecAgg+) from
    the seeded initial model, evaluating the global model on the MNIST-1D test set after every round
    (``on_round`` gets {step, seconds, accuracy, loss})."""
    _require_flwr()
    from flwr.server import ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _server_main(grid, context, config, seed, on_round)

    return app


def epsilon_spent(config: FederatedConfig, shard_sizes: list[int]) -> float:
    """Epsilon each client has spent (0 without DP): sample-level over its DP-SGD steps, client-level over the
    rounds (Gaussian mechanism, no amplification)."""
    if config.dp_epsilon is None:
        return 0.0
    if config.dp_level == "client":
        return dp_epsilon(1.0, client_level_noise(config.dp_epsilon, config.rounds, config.dp_delta), config.rounds,
                          config.dp_delta)
    out = 0.0
    for n in shard_sizes:
        dp = _sample_dp(config, n)
        assert dp is not None
        steps = max(1, round(config.rounds * _per_round(config) / config.clients)
                    * config.local_epochs * -(-n // config.batch_size))
        out = max(out, dp_epsilon(dp.sample_rate, dp.sigma, steps, config.dp_delta))
    return out


def run_flower_simulation(config: FederatedConfig, seed: int,
                          progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run the apps in one process with Flower's simulation engine (Ray backend, one CPU per client actor);
    returns the per-round rows."""
    _require_flwr()
    from flwr.simulation import run_simulation

    rows: list[dict[str, Any]] = []

    def on_round(row: dict[str, Any]) -> None:
        rows.append(row)
        if progress is not None:
            progress(dict(row))

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": 1, "include_dashboard": False, "log_to_driver": False}}
    run_simulation(server_app=make_server_app(config, seed, on_round), client_app=make_client_app(config, seed),
                   num_supernodes=config.clients, backend_config=backend)
    if len(rows) != config.rounds:
        raise RuntimeError(f"the Flower simulation finished {len(rows)} of {config.rounds} rounds; see its log above")
    return rows


def app_dir(dest: Path) -> Path:
    """Write a minimal Flower app folder (pyproject.toml naming the apps of
    :mod:`tricklab.paradigms.federated.flower_app`) for ``flwr run``; the app's code is tricklab itself, which the
    SuperLink's and SuperNodes' Python must import."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    defaults = config_to_run_config(FederatedConfig(), 0)
    defaults["result-path"] = ""
    lines = [f"{k} = {json.dumps(v)}" for k, v in defaults.items()]
    (dest / "pyproject.toml").write_text(
        "[build-system]\nrequires = [\"hatchling\"]\nbuild-backend = \"hatchling.build\"\n\n"
        "[project]\nname = \"tricklab-federated\"\nversion = \"1.0.0\"\ndescription = \"\"\nlicense = \"Apache-2.0\"\n"
        "dependencies = []\n\n[tool.hatch.build.targets.wheel]\npackages = [\".\"]\n\n"
        "[tool.flwr.app]\npublisher = \"tricklab\"\n\n[tool.flwr.app.components]\n"
        "serverapp = \"tricklab.paradigms.federated.flower_app:server_app\"\n"
        "clientapp = \"tricklab.paradigms.federated.flower_app:client_app\"\n\n"
        "[tool.flwr.app.config]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return dest
