"""Meta-learning: MAML's meta-gradient against finite differences of the post-adaptation loss (float64), FOMAML and
Reptile against hand-written SGD loops (torch.autograd), prototype distances against NumPy and their gradients
against torch.cdist, the episode sampler's class split, and run_meta's contract."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError
from tricklab.paradigms.meta import (EpisodeSampler, adapt, init_params, maml_query_loss, proto_logits, prototypes,
                                     reptile_step, split_classes, squared_distances)
from tricklab.paradigms.meta.run import META_METRICS, MetaConfig, run_meta


def _tiny() -> tuple[nn.Module, dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    params = init_params(model)
    g = torch.Generator().manual_seed(1)
    xs, xq = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    ys, yq = torch.tensor([0, 1, 0, 1, 1, 0]), torch.tensor([1, 0, 0, 1, 1])
    return model, params, (xs, ys, xq, yq)


def _post_adaptation_loss(model: nn.Module, flat: torch.Tensor, params: dict, data: tuple, lr: float,
                          steps: int) -> float:
    """The slow reference: L_Q(theta') with theta' from plain torch.autograd SGD steps on L_S."""
    p, i = {}, 0
    for k, v in params.items():
        p[k] = flat[i : i + v.numel()].view_as(v).clone().requires_grad_(True)
        i += v.numel()
    xs, ys, xq, yq = data
    for _ in range(steps):
        loss = F.cross_entropy(torch.func.functional_call(model, p, (xs,)), ys)
        grads = torch.autograd.grad(loss, list(p.values()))
        p = {k: (v - lr * g).detach().requires_grad_(True) for (k, v), g in zip(p.items(), grads)}
    with torch.no_grad():
        return float(F.cross_entropy(torch.func.functional_call(model, p, (xq,)), yq))


@pytest.mark.parametrize("steps", [1, 2])
def test_second_order_maml_meta_gradient_equals_finite_differences(steps: int) -> None:
    model, params, data = _tiny()
    lr = 0.5
    loss, _ = maml_query_loss(model, params, *data, inner_lr=lr, steps=steps)
    meta = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])
    flat = torch.cat([v.detach().flatten() for v in params.values()])
    assert float(loss.detach()) == pytest.approx(_post_adaptation_loss(model, flat, params, data, lr, steps), rel=1e-12)
    h, fd = 1e-6, torch.zeros_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = h
        fd[i] = (_post_adaptation_loss(model, flat + e, params, data, lr, steps)
                 - _post_adaptation_loss(model, flat - e, params, data, lr, steps)) / (2 * h)
    torch.testing.assert_close(meta, fd, rtol=1e-6, atol=1e-8)
    # The first-order gradient drops the Hessian term, so the same finite-difference check tells them apart.
    fo_loss, _ = maml_query_loss(model, params, *data, inner_lr=lr, steps=steps, first_order=True)
    fo = torch.cat([g.flatten() for g in torch.autograd.grad(fo_loss, list(params.values()))])
    assert float((fo - fd).abs().max()) > 1e-4


def test_first_order_maml_gradient_is_query_gradient_at_adapted_weights() -> None:
    model, params, (xs, ys, xq, yq) = _tiny()
    fo_loss, _ = maml_query_loss(model, params, xs, ys, xq, yq, inner_lr=0.3, steps=3, first_order=True)
    fo = torch.autograd.grad(fo_loss, list(params.values()))
    # reference: adapt with torch.autograd SGD, then the plain gradient of the query loss there
    p = {k: v.detach().clone() for k, v in params.items()}
    for _ in range(3):
        p = {k: v.requires_grad_(True) for k, v in p.items()}
        g = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(model, p, (xs,)), ys), list(p.values()))
        p = {k: (v - 0.3 * gi).detach() for (k, v), gi in zip(p.items(), g)}
    p = {k: v.requires_grad_(True) for k, v in p.items()}
    ref = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(model, p, (xq,)), yq), list(p.values()))
    for a, b in zip(fo, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_reptile_step_moves_toward_adapted_weights() -> None:
    model, params, (xs, ys, xq, yq) = _tiny()
    tasks = [(xs, ys), (xq, yq)]
    phis = [adapt(model, {k: v.detach() for k, v in params.items()}, x, y, 0.2, 4, first_order=True)
            for x, y in tasks]
    new = reptile_step(model, params, tasks, inner_lr=0.2, inner_steps=4, epsilon=0.5)
    for k, v in params.items():
        ref = v.detach() + 0.5 * ((phis[0][k] - v) + (phis[1][k] - v)).detach() / 2
        torch.testing.assert_close(new[k], ref, rtol=1e-12, atol=1e-12)
        assert not torch.equal(new[k], v.detach())


def test_prototype_distances_equal_numpy_and_gradients_equal_cdist() -> None:
    g = torch.Generator().manual_seed(0)
    zs = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    zq = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    ys = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])
    logits = proto_logits(zq, zs, ys, 5)
    zs_np, zq_np, ys_np = zs.detach().numpy(), zq.detach().numpy(), ys.numpy()
    protos_np = np.stack([zs_np[ys_np == k].mean(0) for k in range(5)])
    dist_np = ((zq_np[:, None, :] - protos_np[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(prototypes(zs, ys, 5).detach().numpy(), protos_np, rtol=1e-12)
    np.testing.assert_allclose(logits.detach().numpy(), -dist_np, rtol=1e-12)
    yq = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    ga = torch.autograd.grad(F.cross_entropy(logits, yq), (zs, zq))
    protos_ref = torch.stack([zs[ys == k].mean(0) for k in range(5)])
    gb = torch.autograd.grad(F.cross_entropy(-torch.cdist(zq, protos_ref) ** 2, yq), (zs, zq))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert squared_distances(zq, protos_ref).shape == (7, 5)
    with pytest.raises(ValueError, match="support example"):
        prototypes(zs, torch.zeros(10, dtype=torch.long), 2)


def test_episode_sampler_uses_only_its_classes_and_relabels_consistently() -> None:
    x = torch.arange(200, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(200) % 10
    train, test = split_classes(10, 4)
    assert set(train).isdisjoint(test) and sorted(train + test) == list(range(10))
    s = EpisodeSampler(x, y, test, ways=3, shots=2, queries=4, seed=0)
    for _ in range(20):
        ep = s.sample()
        assert len(set(ep.classes)) == 3 and set(ep.classes) <= set(test)
        assert ep.x_support.shape == (6, 1) and ep.x_query.shape == (12, 1)
        for xs, ys in ((ep.x_support, ep.y_support), (ep.x_query, ep.y_query)):
            orig = xs.flatten().long() % 10
            assert torch.equal(orig, torch.tensor(ep.classes)[ys])
        assert set(ep.x_support.flatten().tolist()).isdisjoint(ep.x_query.flatten().tolist())
    with pytest.raises(ConfigError, match="ways"):
        EpisodeSampler(x, y, test, ways=5, shots=1, queries=1)
    with pytest.raises(ConfigError, match="shots"):
        EpisodeSampler(x, y, test, ways=2, shots=15, queries=10)


@pytest.mark.parametrize("kw,field", [({"method": "matching"}, "method"), ({"ways": 6}, "ways"),
                                      ({"shots": 0}, "shots"), ({"inner_lr": -1.0}, "inner_lr"),
                                      ({"dataset": "omniglot"}, "dataset")])
def test_meta_config_rejects_bad_fields(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        MetaConfig(**kw)


@pytest.mark.parametrize("method", ["maml", "protonets"])
def test_run_meta_is_deterministic_and_reports_declared_metrics(method: str, tmp_path) -> None:
    cfg = MetaConfig(method=method, meta_steps=6, eval_every=3, eval_episodes=4, test_episodes=8, hidden=16,
                     train_eval_episodes=4)
    rows: list[dict] = []
    a = run_meta(cfg, seed=3, run_dir=tmp_path, progress=rows.append)
    b = run_meta(cfg, seed=3)
    timing = {"train_seconds"}
    assert {k: v for k, v in a.metrics.items() if k not in timing} == {k: v for k, v in b.metrics.items()
                                                                      if k not in timing}
    assert set(a.metrics) == {m.key for m in META_METRICS}
    assert [r["step"] for r in a.history] == [3, 6] and rows == a.history
    assert len(a.extras["episode_accuracies"]) == 8 and (tmp_path / "result.json").is_file()
    assert asdict(cfg)["method"] == method


def test_run_meta_on_the_8x8_digits_uses_64_features() -> None:
    cfg = MetaConfig(method="protonets", dataset="digits", meta_steps=2, eval_every=2, eval_episodes=2,
                     test_episodes=3, train_eval_episodes=2, hidden=8, embed_dim=4)
    r = run_meta(cfg, seed=0)
    assert r.extras["test_classes"] == [5, 6, 7, 8, 9] and 0.0 <= r.metrics["accuracy"] <= 1.0
