"""Federated learning: FedAvg against centralized training (identical clients; and one full-batch step on distinct
shards against torch.optim.SGD on the union), FedProx's proximal step against torch.autograd, masked aggregation
against the plain sum, per-sample gradients against opacus' GradSampleModule and a torch.autograd loop, clipping
against a loop, the RDP epsilon against opacus' accountant, the client splits and run_federated's contract."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError
from tricklab.paradigms.federated import (clip_and_noise, client_update, dirichlet_split, dp_epsilon, iid_split,
                                          mask_updates, masked_sum, noise_for_epsilon, per_sample_grads, quantize,
                                          secure_weighted_average, weighted_average)
from tricklab.paradigms.federated.run import FEDERATED_METRICS, FederatedConfig, run_federated


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_fedavg_identical_clients_full_participation_equals_centralized_round() -> None:
    model, (x, y) = _model(), _data(40, 1)
    w0 = _params(model)
    updates = [client_update(model, w0, x, y, epochs=2, batch_size=8, lr=0.1,
                             gen=torch.Generator().manual_seed(7))[0] for _ in range(4)]
    fed = weighted_average(updates, [40.0] * 4)
    # centralized reference: torch.optim.SGD on an nn.Module over the same batches (same permutation seed)
    gen = torch.Generator().manual_seed(7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        perm = torch.randperm(40, generator=gen)
        for s in range(5):
            idx = perm[s * 8 : (s + 1) * 8]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    for k, v in model.named_parameters():
        torch.testing.assert_close(fed[k], v.detach(), rtol=1e-12, atol=1e-12)


def test_fedavg_one_full_batch_step_equals_centralized_gradient_step_on_the_union() -> None:
    model = _model()
    shards = [_data(n, seed) for n, seed in ((10, 1), (25, 2), (5, 3))]
    w0 = _params(model)
    updates = [client_update(model, w0, x, y, epochs=1, batch_size=len(x), lr=0.3)[0] for x, y in shards]
    fed = weighted_average(updates, [float(len(x)) for x, _ in shards])
    xu, yu = torch.cat([x for x, _ in shards]), torch.cat([y for _, y in shards])
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    F.cross_entropy(model(xu), yu).backward()  # the mean over the union = sum_k n_k/n * mean over shard k
    opt.step()
    for k, v in model.named_parameters():
        torch.testing.assert_close(fed[k], v.detach(), rtol=1e-12, atol=1e-12)


def test_fedprox_step_adds_the_proximal_gradient() -> None:
    model, (x, y) = _model(), _data(6, 4)
    w0 = _params(model)
    p1, _ = client_update(model, w0, x, y, epochs=2, batch_size=6, lr=0.2, mu=0.5)
    # reference: two steps of autograd on F(w) + mu/2 ||w - w0||^2
    w = {k: v.clone().requires_grad_(True) for k, v in w0.items()}
    for _ in range(2):
        loss = F.cross_entropy(torch.func.functional_call(model, w, (x,)), y)
        loss = loss + 0.25 * sum((w[k] - w0[k]).pow(2).sum() for k in w)
        g = torch.autograd.grad(loss, list(w.values()))
        w = {k: (v - 0.2 * gi).detach().requires_grad_(True) for (k, v), gi in zip(w.items(), g)}
    for k in w0:
        torch.testing.assert_close(p1[k], w[k].detach(), rtol=1e-12, atol=1e-12)
    p0, _ = client_update(model, w0, x, y, epochs=2, batch_size=6, lr=0.2, mu=0.0)
    assert not torch.allclose(p0["0.weight"], p1["0.weight"])


def test_masked_aggregation_equals_the_plain_sum() -> None:
    g = torch.Generator().manual_seed(0)
    vecs = [torch.randn(50, generator=g, dtype=torch.float64) * 10 for _ in range(5)]
    masked = mask_updates(vecs, seed=3)
    plain_q = sum(torch.round(v * 2.0**24) for v in vecs)  # the plain sum in fixed point
    for v, m in zip(vecs, masked):
        assert not torch.equal(m, quantize(v))  # what the server sees is not the client's vector
    total = masked_sum(masked)
    # exact in fixed point: the masks cancel mod 2^62
    torch.testing.assert_close(total * 2.0**24, plain_q, rtol=0, atol=0)
    torch.testing.assert_close(total, sum(vecs), rtol=0, atol=5 * 2.0**-24)
    upd = [{"w": v.view(5, 10)} for v in vecs]
    weights = [3.0, 1.0, 2.0, 5.0, 4.0]
    torch.testing.assert_close(secure_weighted_average(upd, weights, seed=1)["w"],
                               weighted_average(upd, weights)["w"], rtol=0, atol=1e-6)


def test_per_sample_gradients_equal_opacus_and_autograd_loop() -> None:
    opacus = pytest.importorskip("opacus", reason="opacus is the test-only oracle for per-sample gradients")
    model, (x, y) = _model(), _data(7, 5)
    ours = per_sample_grads(model, _params(model), x, y)
    gsm = opacus.GradSampleModule(_model(), loss_reduction="sum")
    with warnings.catch_warnings():  # opacus' hooks warn when the input needs no gradient; nothing is wrong here
        warnings.simplefilter("ignore", UserWarning)
        F.cross_entropy(gsm(x), y, reduction="sum").backward()
    named = dict(gsm._module.named_parameters())
    for k, g in ours.items():
        torch.testing.assert_close(g, named[k].grad_sample, rtol=1e-10, atol=1e-12)
    gsm.zero_grad()  # opacus accumulates grad_sample otherwise (see ANCHORS.md)
    for i in range(7):
        ref = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), list(model.parameters()))
        for (k, g), r in zip(ours.items(), ref):
            torch.testing.assert_close(g[i], r, rtol=1e-10, atol=1e-12)


def test_clip_and_noise_equals_loop_and_noise_has_the_right_scale() -> None:
    model, (x, y) = _model(), _data(9, 6)
    grads = per_sample_grads(model, _params(model), x, y)
    out = clip_and_noise(grads, clip=0.3, sigma=0.0, expected_batch=9)
    ref = {k: torch.zeros_like(v[0]) for k, v in grads.items()}
    for i in range(9):
        norm = math.sqrt(sum(float(g[i].pow(2).sum()) for g in grads.values()))
        assert norm > 0.3  # clipping is active in this check
        for k in ref:
            ref[k] += grads[k][i] * min(1.0, 0.3 / norm)
    for k in ref:
        torch.testing.assert_close(out[k], ref[k] / 9, rtol=1e-10, atol=1e-12)
    zero = {"w": torch.zeros(1, 20000, dtype=torch.float64)}
    noisy = clip_and_noise(zero, clip=2.0, sigma=1.5, expected_batch=4, gen=torch.Generator().manual_seed(0))
    assert float(noisy["w"].std()) == pytest.approx(1.5 * 2.0 / 4, rel=0.03)


@pytest.mark.parametrize("q,sigma,steps", [(256 / 60000, 1.0, 2343), (0.01, 0.8, 1000), (0.1, 2.0, 50),
                                           (1.0, 3.0, 10)])
def test_rdp_epsilon_equals_opacus(q: float, sigma: float, steps: int) -> None:
    pytest.importorskip("opacus", reason="opacus is the test-only oracle for the RDP accountant")
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(sigma, q, steps)]
    assert dp_epsilon(q, sigma, steps, 1e-5) == pytest.approx(acc.get_epsilon(delta=1e-5), rel=1e-9)


def test_noise_for_epsilon_reaches_the_target() -> None:
    sigma = noise_for_epsilon(3.0, 0.02, 500, 1e-5)
    assert dp_epsilon(0.02, sigma, 500, 1e-5) <= 3.0 < dp_epsilon(0.02, sigma - 2e-3, 500, 1e-5)


def test_client_splits_cover_everything_once_and_dirichlet_skews_labels() -> None:
    y = torch.arange(1000) % 10
    for shards in (iid_split(1000, 7, seed=0), dirichlet_split(y, 7, 0.1, seed=0), dirichlet_split(y, 7, 100.0)):
        assert torch.equal(torch.cat(shards).sort().values, torch.arange(1000))

    def skew(shards: list[torch.Tensor]) -> float:
        return sum(float(torch.bincount(y[s], minlength=10).max()) / len(s) for s in shards) / len(shards)

    assert skew(dirichlet_split(y, 10, 0.1, seed=0)) > 0.5 > 0.2 > skew(dirichlet_split(y, 10, 100.0, seed=0))
    with pytest.raises(ConfigError, match="alpha"):
        dirichlet_split(y, 5, 0.0)


@pytest.mark.parametrize("kw,field", [({"algorithm": "scaffold"}, "algorithm"), ({"split": "shards"}, "split"),
                                      ({"participation": 0.0}, "participation"), ({"mu": -1.0}, "mu"),
                                      ({"algorithm": "centralized", "dp_epsilon": 1.0}, "dp_epsilon"),
                                      ({"engine": "tff"}, "engine"), ({"dp_level": "user"}, "dp_level"),
                                      ({"engine": "reference", "dp_level": "client", "dp_epsilon": 1.0},
                                       "dp_level")])
def test_federated_config_rejects_bad_fields(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        FederatedConfig(**kw)


@pytest.mark.parametrize("kw", [{"split": "dirichlet", "algorithm": "fedprox", "secure_aggregation": True},
                                {"dp_epsilon": 8.0, "participation": 0.5, "rounds": 1}])
def test_run_federated_is_deterministic_and_reports_declared_metrics(kw: dict) -> None:
    cfg = FederatedConfig(**{"clients": 4, "rounds": 2, "hidden": 8, "batch_size": 200, "engine": "reference", **kw})
    a, b = run_federated(cfg, seed=2), run_federated(cfg, seed=2)
    assert set(a.metrics) == {m.key for m in FEDERATED_METRICS}
    assert [r["accuracy"] for r in a.history] == [r["accuracy"] for r in b.history]
    assert len(a.history) == cfg.rounds
    if cfg.dp_epsilon:
        assert a.metrics["epsilon"] == pytest.approx(8.0, abs=0.05) and len(a.extras["noise_multipliers"]) == 4
