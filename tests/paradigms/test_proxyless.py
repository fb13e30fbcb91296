"""ProxylessNAS: the expected latency equals the table-weighted sum under the path probabilities (NumPy) with the
closed-form gradient p_i (F_i - E[LAT_e]); the binarized gate's backward equals eq. 4 of the paper in NumPy and
torch.autograd through softmax(alpha) . dL/dg; the gated mixed operation equals the sampled path alone; sampling
frequencies follow softmax(alpha) (chi-square); the latency table round-trips; run_proxyless's contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError
from tricklab.paradigms.nas.darts import PRIMITIVES, MixedOp
from tricklab.paradigms.nas.proxyless import (BinaryGate, ProxylessNet, binarize, expected_latency, genotype_latency,
                                             load_latency_table, measure_latency_table)
from tricklab.paradigms.nas.proxyless_run import PROXYLESS_METRICS, ProxylessConfig, run_proxyless

TABLE = {"none": 0.001, "skip": 0.002, "conv3": 0.03, "conv5": 0.045, "dilconv3": 0.031, "maxpool3": 0.012,
         "avgpool3": 0.015}


def test_expected_latency_is_the_probability_weighted_table_sum_with_its_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    alpha = torch.randn(6, len(PRIMITIVES), generator=g, dtype=torch.float64, requires_grad=True)
    lat = expected_latency(alpha, TABLE)
    a = alpha.detach().numpy()
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    f = np.array([TABLE[o] for o in PRIMITIVES])
    assert float(lat.detach()) == pytest.approx(float((p * f).sum()), rel=1e-12)
    lat.backward()
    per_edge = (p * f).sum(1, keepdims=True)  # E[LAT_e]
    np.testing.assert_allclose(alpha.grad.numpy(), p * (f - per_edge), rtol=1e-10, atol=1e-15)


def test_binary_gate_backward_is_eq4_and_equals_autograd_through_softmax() -> None:
    g = torch.Generator().manual_seed(1)
    alpha = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 3, 4, 1])
    dl_dg = torch.randn(4, 5, generator=g, dtype=torch.float64)
    gates = BinaryGate.apply(alpha, index)
    assert torch.equal(gates, F.one_hot(index, 5).double())
    (ga,) = torch.autograd.grad((gates * dl_dg).sum(), alpha)
    # NumPy eq. 4: sum_j dL/dg_j p_j (delta_ij - p_i)
    p = F.softmax(alpha.detach(), -1).numpy()
    c = dl_dg.numpy()
    ref = np.einsum("ej,ej,eij->ei", c, p, np.eye(5)[None] - p[:, :, None])
    np.testing.assert_allclose(ga.numpy(), ref, rtol=1e-10, atol=1e-14)
    # torch.autograd: the same as differentiating softmax(alpha) . dL/dg (dL/dg treated as dL/dp)
    (gs,) = torch.autograd.grad((F.softmax(alpha, -1) * dl_dg).sum(), alpha)
    torch.testing.assert_close(ga, gs, rtol=1e-12, atol=1e-14)


def test_gated_mixed_op_is_the_sampled_path_and_its_alpha_gradient_follows_eq4() -> None:
    torch.manual_seed(0)
    op = MixedOp(4).double()
    x = torch.randn(3, 4, 10, dtype=torch.float64)
    alpha = torch.randn(1, len(PRIMITIVES), dtype=torch.float64, requires_grad=True)
    gates, index = binarize(alpha, torch.Generator().manual_seed(2))
    out = op(x, gates[0])
    torch.testing.assert_close(out, op.ops[int(index[0])](x), rtol=0, atol=0)
    out.pow(2).sum().backward()
    # reference: dL/dg_j = <dL/dm, o_j(x)> from a gate leaf, then eq. 4 in NumPy
    gleaf = gates.detach().clone().requires_grad_(True)
    (dl_dg,) = torch.autograd.grad(op(x, gleaf[0]).pow(2).sum(), gleaf)
    p = F.softmax(alpha.detach(), -1).numpy()[0]
    c = dl_dg.numpy()[0]
    ref = c * p - p * (c * p).sum()
    np.testing.assert_allclose(alpha.grad.numpy()[0], ref, rtol=1e-10, atol=1e-12)


def test_sampled_paths_follow_the_path_probabilities() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    alpha = torch.tensor([[1.0, 0.0, -1.0, 0.5]]).repeat(4000, 1)
    _, index = binarize(alpha, torch.Generator().manual_seed(0))
    counts = torch.bincount(index, minlength=4).numpy()
    expected = F.softmax(alpha[0].double(), -1).numpy()
    expected = expected / expected.sum() * 4000
    assert scipy_stats.chisquare(counts, expected).pvalue > 1e-3


def test_forward_sampled_equals_forward_gated() -> None:
    torch.manual_seed(0)
    net = ProxylessNet(channels=4, nodes=2).double()
    x = torch.randn(5, 40, dtype=torch.float64)
    gates, index = binarize(net.alpha.double(), torch.Generator().manual_seed(3))
    torch.testing.assert_close(net.forward_sampled(x, index), net.forward_gated(x, gates), rtol=1e-12, atol=1e-12)


def test_latency_table_measures_every_op_and_round_trips(tmp_path: Path) -> None:
    table = measure_latency_table(channels=4, length=10, repeats=5)
    assert set(table) == set(PRIMITIVES) and all(v > 0 for v in table.values())
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"command": "test", "latency_ms": table}))
    assert load_latency_table(path) == table
    assert genotype_latency([[(0, "conv3")], [(0, "skip"), (1, "conv5")]], table) == pytest.approx(
        table["conv3"] + table["skip"] + table["conv5"])
    path.write_text(json.dumps({"latency_ms": {"conv3": 1.0}}))
    with pytest.raises(ConfigError, match="lacks"):
        load_latency_table(path)


def test_run_proxyless_reports_declared_metrics_and_is_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"command": "test", "latency_ms": TABLE}))
    cfg = ProxylessConfig(channels=4, nodes=2, search_steps=6, train_steps=4, batch_size=16, eval_every=3,
                          latency_table=str(path), latency_tolerance=0.5)
    a, b = run_proxyless(cfg, seed=1), run_proxyless(cfg, seed=1)
    assert set(a.metrics) == {m.key for m in PROXYLESS_METRICS}
    assert a.metrics == {**b.metrics, "search_seconds": a.metrics["search_seconds"]}
    assert abs(a.metrics["random_latency_ms"] - a.metrics["latency_ms"]) <= 0.5 * a.metrics["latency_ms"]
    assert [r["step"] for r in a.history] == [3, 6]
    with pytest.raises(ConfigError, match="latency_weight"):
        ProxylessConfig(latency_weight=-1.0)
