"""Continual learning: the diagonal Fisher and the EWC penalty against the closed form of a softmax-linear model
in NumPy (outputs and gradients), reservoir sampling's equal keep probability (chi-square, scipy), the progressive
network against a hand-written eq. 1, the accuracy-matrix metrics against hand-computed values, the streams, and
run_continual's contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from tricklab.errors import ConfigError
from tricklab.paradigms.continual import (EWC, ProgressiveNet, ReservoirBuffer, average_accuracy, backward_transfer,
                                          diagonal_fisher, forgetting, permuted_stream, split_stream)
from tricklab.paradigms.continual.run import CONTINUAL_METRICS, ContinualConfig, run_continual


def _softmax_np(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _fisher_np(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Closed form for p = softmax(W x + b): d log p_c / dW = (e_c - p) x^T, d log p_c / db = e_c - p."""
    p = _softmax_np(x @ w.T + b)
    n, c = p.shape
    fw, fb = np.zeros_like(w), np.zeros_like(b)
    for i in range(n):
        classes = [(y[i], 1.0)] if y is not None else [(k, p[i, k]) for k in range(c)]
        for k, weight in classes:
            r = np.eye(c)[k] - p[i]
            fw += weight * np.outer(r, x[i]) ** 2
            fb += weight * r**2
    return fw / n, fb / n


@pytest.mark.parametrize("empirical", [True, False])
def test_diagonal_fisher_equals_closed_form(empirical: bool) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    x = torch.randn(9, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    f = diagonal_fisher(model, x, y if empirical else None, batch_size=4)
    fw, fb = _fisher_np(model.weight.detach().numpy(), model.bias.detach().numpy(), x.numpy(),
                        y.numpy() if empirical else None)
    np.testing.assert_allclose(f["weight"].numpy(), fw, rtol=1e-10)
    np.testing.assert_allclose(f["bias"].numpy(), fb, rtol=1e-10)


def test_ewc_penalty_and_gradient_equal_hand_computed_fisher() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()
    xa, ya = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    fw, fb = _fisher_np(model.weight.detach().numpy(), model.bias.detach().numpy(), xa.numpy(), ya.numpy())
    w_star, b_star = model.weight.detach().numpy().copy(), model.bias.detach().numpy().copy()
    ewc = EWC(lam=7.0)
    ewc.consolidate(model, diagonal_fisher(model, xa, ya))
    assert float(ewc.penalty(model).detach()) == 0.0
    with torch.no_grad():
        model.weight.add_(torch.randn(3, 4, dtype=torch.float64))
        model.bias.add_(torch.randn(3, dtype=torch.float64))
    pen = ewc.penalty(model)
    dw, db = model.weight.detach().numpy() - w_star, model.bias.detach().numpy() - b_star
    ref = 0.5 * 7.0 * ((fw * dw**2).sum() + (fb * db**2).sum())
    assert float(pen.detach()) == pytest.approx(ref, rel=1e-10)
    gw, gb = torch.autograd.grad(pen, [model.weight, model.bias])
    np.testing.assert_allclose(gw.numpy(), 7.0 * fw * dw, rtol=1e-10)
    np.testing.assert_allclose(gb.numpy(), 7.0 * fb * db, rtol=1e-10)


def test_online_ewc_decays_and_sums_fishers() -> None:
    model = nn.Linear(2, 2).double()
    f1 = {k: torch.full_like(v, 2.0) for k, v in model.named_parameters()}
    f2 = {k: torch.full_like(v, 3.0) for k, v in model.named_parameters()}
    ewc = EWC(lam=1.0, online=True, gamma=0.5)
    ewc.consolidate(model, f1)
    ewc.consolidate(model, f2)
    assert len(ewc.terms) == 1 and torch.allclose(ewc.terms[0][0]["weight"], torch.full((2, 2), 4.0,
                                                                                      dtype=torch.float64))
    plain = EWC(lam=1.0)
    plain.consolidate(model, f1)
    plain.consolidate(model, f2)
    assert len(plain.terms) == 2


def _keep_counts(n: int, capacity: int, trials: int, sampler: str) -> np.ndarray:
    counts = np.zeros(n)
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    for trial in range(trials):
        if sampler == "reservoir":
            buf = ReservoirBuffer(capacity, seed=trial)
            buf.add(x, torch.zeros(n, dtype=torch.long))
            kept = buf.ids.numpy()
        else:  # a biased sampler: keeps the latest items more often (replace a random slot every time)
            g = np.random.default_rng(trial)
            slots = list(range(capacity))
            for i in range(capacity, n):
                slots[g.integers(capacity)] = i
            kept = np.array(slots)
        counts[kept] += 1
    return counts


def test_reservoir_keeps_every_item_with_equal_probability_chi_square() -> None:
    n, capacity, trials = 30, 6, 1500
    counts = _keep_counts(n, capacity, trials, "reservoir")
    assert counts.sum() == capacity * trials
    # H0: every item kept with probability capacity / n; chi-square goodness of fit with n - 1 df (scipy)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert counts.mean() / trials == pytest.approx(capacity / n)
    # the same test rejects a sampler that favours recent items, so it can fail
    assert stats.chisquare(_keep_counts(n, capacity, trials, "biased")).pvalue < 1e-6


def test_reservoir_sample_and_errors() -> None:
    buf = ReservoirBuffer(4, seed=0)
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)
    buf.add(torch.arange(10.0).unsqueeze(1), torch.arange(10), task=3)
    xb, yb, tb = buf.sample(5)
    assert len(buf) == 4 and buf.seen == 10 and torch.equal(xb.flatten().long(), yb) and bool((tb == 3).all())


def test_progressive_net_matches_equation_and_freezes_old_columns() -> None:
    torch.manual_seed(0)
    net = ProgressiveNet([3, 5, 4, 2]).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    out0 = net(x, column=0).detach()
    net.add_column()
    assert all(not p.requires_grad for p in net.columns[0].parameters())
    assert all(p.requires_grad for p in net.columns[1].parameters())
    c0, c1 = net.columns
    h0 = [x, torch.relu(c0.layers[0](x))]
    h0.append(torch.relu(c0.layers[1](h0[1])))
    a = torch.relu(c1.layers[0](x))
    b = torch.relu(c1.layers[1](a) + c1.laterals[0][0](h0[1]))
    ref = c1.layers[2](b) + c1.laterals[1][0](h0[2])  # eq. 1 with lateral U_i^(1:0)
    torch.testing.assert_close(net(x, column=1), ref, rtol=1e-12, atol=1e-12)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(x, column=1).sum().backward()
    opt.step()
    torch.testing.assert_close(net(x, column=0), out0)


def test_metrics_equal_hand_computed_values() -> None:
    r = [[0.9, 0.1, 0.2], [0.6, 0.8, 0.3], [0.5, 0.7, 0.95]]
    assert average_accuracy(r) == pytest.approx((0.5 + 0.7 + 0.95) / 3)
    assert average_accuracy(r, after=1) == pytest.approx(0.7)
    assert forgetting(r) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert backward_transfer(r) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    with pytest.raises(ValueError, match="square"):
        forgetting([[1.0, 0.0]])


def test_streams_split_classes_and_permute_inputs() -> None:
    x, y = torch.randn(100, 8), torch.arange(100) % 10
    tasks = split_stream(x, y, x, y, 5)
    assert [t.classes for t in tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert all(set(t.y_train.tolist()) == set(t.classes) for t in tasks)
    perm = permuted_stream(x, y, x, y, 3, seed=0)
    assert torch.equal(perm[0].x_train, x) and not torch.equal(perm[1].x_train, x)
    assert torch.equal(perm[1].x_train.sort(-1).values, x.sort(-1).values)
    with pytest.raises(ConfigError, match="num_tasks"):
        split_stream(x, y, x, y, 3)


@pytest.mark.parametrize("kw,field", [({"stream": "rotated"}, "stream"), ({"method": "si"}, "method"),
                                      ({"num_tasks": 3}, "num_tasks"), ({"ewc_gamma": 0.0}, "ewc_gamma")])
def test_continual_config_rejects_bad_fields(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        ContinualConfig(**kw)


@pytest.mark.parametrize("method", ["ewc", "replay", "progressive"])
def test_run_continual_is_deterministic_and_fills_the_matrix(method: str) -> None:
    cfg = ContinualConfig(method=method, steps_per_task=5, hidden=16, fisher_samples=20, replay_capacity=10,
                          replay_batch=4, batch_size=8)
    rows: list[dict] = []
    a = run_continual(cfg, seed=1, progress=rows.append)
    b = run_continual(cfg, seed=1)
    assert a.extras["accuracy_matrix"] == b.extras["accuracy_matrix"]
    assert set(a.metrics) == {m.key for m in CONTINUAL_METRICS}
    m = a.extras["accuracy_matrix"]
    assert len(m) == 5 and all(len(r) == 5 for r in m) and rows == a.history
    assert a.metrics["forgetting"] == pytest.approx(forgetting(m))
    if method == "progressive":
        # frozen columns cannot forget: each task's accuracy stays what it was right after its training
        assert all(m[-1][j] == m[j][j] for j in range(5)) and a.metrics["backward_transfer"] == 0.0
