"""Federated learning on Flower: the Flower engine (Flower's FedAvg / FedProx strategies, SecAgg+ workflow,
client-level DP wrapper, our clients) against the reference round loop of run_federated (engine="reference": the
same clients, batches and averaging in our own loop, itself tested against torch.optim.SGD in test_federated.py),
in one process (Flower's simulation engine) and as separate SuperLink / SuperNode processes."""

from __future__ import annotations

import pytest

from tricklab.paradigms.federated.dp import dp_epsilon
from tricklab.paradigms.federated.run import FederatedConfig, run_federated

pytest.importorskip("flwr", reason="the Flower engine needs the federated extra (flwr[simulation]==1.42.0)")

TINY = {"clients": 2, "rounds": 2, "hidden": 8, "batch_size": 200}


def check_rounds_match(flower: list[dict], reference: list[dict], atol: float) -> None:
    assert [r["step"] for r in flower] == [r["step"] for r in reference] == [1, 2]
    for f, r in zip(flower, reference):
        assert f["loss"] == pytest.approx(r["loss"], abs=atol)
        assert abs(f["accuracy"] - r["accuracy"]) <= 2e-3 + 1e3 * atol  # at most a couple of flipped predictions


def test_flower_simulation_fedprox_equals_the_reference_loop() -> None:
    cfg = dict(TINY, algorithm="fedprox", mu=0.5, split="dirichlet", alpha=0.5, lr=0.5)
    flower = run_federated(FederatedConfig(**cfg, engine="flower"), seed=1)
    ref = run_federated(FederatedConfig(**cfg, engine="reference"), seed=1)
    assert flower.extras["engine"].startswith("flower") and ref.extras["engine"] == "reference"
    # float32 sums in another order (Flower's aggregate in numpy) only
    check_rounds_match(flower.history, ref.history, atol=1e-5)
    assert flower.history[-1]["loss"] < 2.30  # it trained: the initial loss is ~ln(10) = 2.303


@pytest.mark.slow
def test_flower_secagg_plus_equals_the_plain_average_within_quantization() -> None:
    cfg = dict(TINY, lr=0.5)
    secure = run_federated(FederatedConfig(**cfg, secure_aggregation=True), seed=0)
    ref = run_federated(FederatedConfig(**cfg, engine="reference"), seed=0)
    # SecAgg+ quantizes [-8, 8] to 2^22 levels: each parameter is off by at most 16 / 2^22 ~ 4e-6 (times the weights)
    check_rounds_match(secure.history, ref.history, atol=1e-3)


@pytest.mark.slow
def test_flower_client_level_dp_spends_its_epsilon_and_adds_noise() -> None:
    cfg = dict(TINY, lr=0.5, dp_clip=0.1)
    dp = run_federated(FederatedConfig(**cfg, dp_epsilon=8.0, dp_level="client"), seed=0)
    ref = run_federated(FederatedConfig(**cfg, engine="reference"), seed=0)
    assert dp.metrics["epsilon"] == pytest.approx(8.0, abs=0.05)
    # epsilon of 2 Gaussian releases at the chosen noise: our accountant (checked against opacus at q = 1)
    assert dp.metrics["epsilon"] == pytest.approx(dp_epsilon(1.0, dp.extras["noise_multiplier"], 2, 1e-5))
    # the noise (std z C / 2 per coordinate) moves the model away from the noise-free run
    assert abs(dp.history[-1]["loss"] - ref.history[-1]["loss"]) > 1e-3


@pytest.mark.slow
def test_flower_separate_superlink_and_supernode_processes_equal_the_reference_and_leave_nothing() -> None:
    from tricklab.paradigms.federated.deploy import alive, run_flower_deployment

    cfg = FederatedConfig(**TINY, lr=0.5)
    out = run_flower_deployment(cfg, seed=3, timeout=240)
    ref = run_federated(FederatedConfig(**TINY, lr=0.5, engine="reference"), seed=3)
    check_rounds_match(out["rounds"], ref.history, atol=1e-5)
    assert len(out["pids"]) >= 3  # the SuperLink, two SuperNodes (and the app processes they started)
    assert not [pid for pid in out["pids"] if alive(pid)]
