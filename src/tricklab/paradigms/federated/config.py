"""The federated experiment's settings (:class:`FederatedConfig`) and declared metrics, shared by the reference
round loop (:mod:`.run`) and the Flower engine (:mod:`.flower`)."""

from __future__ import annotations

from dataclasses import dataclass

from tricklab.evaluate.declared import MetricSpec
from tricklab.paradigms.common import check, pos_int, pos_num

__all__ = ["FEDERATED_ALGORITHMS", "FEDERATED_ENGINES", "FEDERATED_METRICS", "FederatedConfig"]

FEDERATED_ALGORITHMS: tuple[str, ...] = ("fedavg", "fedprox", "centralized")
# "flower": Flower's apps and strategies (tricklab.paradigms.federated.flower, simulation in one process);
# "reference": our own round loop over the functional core, kept as the tested reference
FEDERATED_ENGINES: tuple[str, ...] = ("flower", "reference")

FEDERATED_METRICS: list[MetricSpec] = [
    MetricSpec("accuracy", "test accuracy of the global model", True),
    MetricSpec("loss", "test cross-entropy", False),
    MetricSpec("best_accuracy", "best test accuracy over rounds", True, verdict=False),
    MetricSpec("epsilon", "epsilon spent per client (0: no DP)", False, verdict=False, fmt=".3f"),
    MetricSpec("train_seconds", "training time", False, unit="s", verdict=False, fmt=".1f"),
]


@dataclass
class FederatedConfig:
    """Federated training on MNIST-1D; defaults: 10 clients, full participation, 30 rounds of 1 local epoch."""

    algorithm: str = "fedavg"
    split: str = "iid"
    alpha: float = 0.1
    clients: int = 10
    participation: float = 1.0
    rounds: int = 30
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    mu: float = 0.01
    hidden: int = 100
    secure_aggregation: bool = False
    dp_epsilon: float | None = None
    dp_delta: float = 1e-5
    dp_clip: float = 1.0
    dp_level: str = "sample"
    engine: str = "flower"
    threads: int = 1

    def __post_init__(self) -> None:
        check(self.algorithm in FEDERATED_ALGORITHMS, "algorithm", f"one of {FEDERATED_ALGORITHMS}", self.algorithm)
        check(self.split in ("iid", "dirichlet"), "split", "'iid' or 'dirichlet'", self.split)
        check(self.engine in FEDERATED_ENGINES, "engine", f"one of {FEDERATED_ENGINES}", self.engine)
        check(self.dp_level in ("sample", "client"), "dp_level",
              "'sample' (DP-SGD on each client's examples) or 'client' (Flower's client-level DP)", self.dp_level)
        check(not (self.dp_level == "client" and self.dp_epsilon is not None and self.engine != "flower"),
              "dp_level", "'sample' with engine 'reference' (client-level DP is Flower's wrapper)", self.dp_level)
        for name in ("clients", "rounds", "local_epochs", "batch_size", "hidden", "threads"):
            check(pos_int(getattr(self, name)), name, "a positive int", getattr(self, name))
        check(self.clients <= 400, "clients", "<= 400 (at least 10 training examples each)", self.clients)
        for name in ("alpha", "lr", "dp_clip"):
            check(pos_num(getattr(self, name)), name, "a positive number", getattr(self, name))
        check(isinstance(self.participation, (int, float)) and 0 < self.participation <= 1, "participation",
              "in (0, 1]", self.participation)
        check(isinstance(self.mu, (int, float)) and self.mu >= 0, "mu", ">= 0 (FedProx's proximal weight)", self.mu)
        check(self.dp_epsilon is None or pos_num(self.dp_epsilon), "dp_epsilon", "None or a positive number",
              self.dp_epsilon)
        check(0 < self.dp_delta < 1, "dp_delta", "in (0, 1)", self.dp_delta)
        check(not (self.algorithm == "centralized" and self.dp_epsilon is not None), "dp_epsilon",
              "None for algorithm 'centralized' (DP is applied on the clients)", self.dp_epsilon)
