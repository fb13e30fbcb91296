"""NAS: DARTS's mixed operation against the hand-summed candidates (outputs and gradients), the second-order alpha
gradient against finite differences of the unrolled validation loss (float64), discretisation on hand-set alphas,
the equal-cost random baseline and run_nas's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from tricklab.errors import ConfigError
from tricklab.paradigms.nas import (PRIMITIVES, FixedNet, MixedOp, SearchNet, darts_step, discretize,
                                    genotype_cost, random_genotype)
from tricklab.paradigms.nas.run import NAS_METRICS, NasConfig, _matched_random, run_nas


def test_mixed_op_equals_weighted_sum_of_candidates_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    op = MixedOp(3).double()
    x = torch.randn(2, 3, 11, dtype=torch.float64, requires_grad=True)
    alpha = torch.randn(len(PRIMITIVES), dtype=torch.float64, requires_grad=True)
    w = F.softmax(alpha, -1)
    out = op(x, w)
    ref = torch.zeros_like(out)
    for i, cand in enumerate(op.ops):  # the slow path: each candidate by itself
        ref = ref + w[i] * cand(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    r = torch.randn_like(out)
    g_ours = torch.autograd.grad((out * r).sum(), (alpha, x))
    # d/dw_i of sum(r * out) = sum(r * op_i(x)); chain through softmax by the Jacobian diag(w) - w w^T
    dw = torch.stack([(r * cand(x)).sum() for cand in op.ops])
    torch.testing.assert_close(g_ours[0], (torch.diag(w) - torch.outer(w, w)) @ dw, rtol=1e-10, atol=1e-12)
    g_ref = torch.autograd.grad((ref * r).sum(), x)[0]
    torch.testing.assert_close(g_ours[1], g_ref, rtol=1e-12, atol=1e-12)
    assert [type(o).__name__ for o in op.ops][0] == "Zero" and float(op.ops[0](x).detach().abs().sum()) == 0.0


def _val_after_unroll(net: SearchNet, alpha: torch.Tensor, train: tuple, val: tuple, xi: float) -> float:
    names = [n for n, _ in net.named_parameters() if n != "alpha"]
    w = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters() if n != "alpha"}
    p = dict(w, alpha=alpha)
    g = torch.autograd.grad(F.cross_entropy(functional_call(net, p, (train[0],)), train[1]), list(w.values()))
    unrolled = {n: w[n] - xi * gi for n, gi in zip(names, g)}
    unrolled["alpha"] = alpha
    return float(F.cross_entropy(functional_call(net, unrolled, (val[0],)), val[1]))


def test_second_order_alpha_gradient_equals_finite_differences() -> None:
    torch.manual_seed(0)
    net = SearchNet(channels=2, nodes=2, length=8, classes=3).double()
    g = torch.Generator().manual_seed(1)
    train = (torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (5,), generator=g))
    val = (torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
    with torch.no_grad():
        net.alpha.normal_(0, 0.5, generator=g)
    a0 = net.alpha.detach().clone()
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.0)
    a_opt = torch.optim.SGD([net.alpha], lr=0.0)
    darts_step(net, w_opt, a_opt, train, val, second_order=True, xi=0.5)
    ours = net.alpha.grad.clone()
    fd = torch.zeros_like(a0)
    h = 1e-6
    checked = torch.randperm(a0.numel(), generator=g)[:8].tolist()  # 8 of the 21 entries keep the test short
    for idx in checked:
        e = torch.zeros_like(a0).flatten()
        e[idx] = h
        e = e.view_as(a0)
        fd.view(-1)[idx] = (_val_after_unroll(net, a0 + e, train, val, 0.5)
                            - _val_after_unroll(net, a0 - e, train, val, 0.5)) / (2 * h)
    torch.testing.assert_close(ours.view(-1)[checked], fd.view(-1)[checked], rtol=1e-5, atol=1e-8)
    darts_step(net, w_opt, a_opt, train, val, second_order=False)
    first = net.alpha.grad.clone()
    # the first-order gradient ignores the unrolled step
    assert float((first.view(-1)[checked] - fd.view(-1)[checked]).abs().max()) > 1e-6


def test_discretize_keeps_the_strongest_non_zero_edges() -> None:
    net = SearchNet(channels=2, nodes=3, length=8)
    with torch.no_grad():
        net.alpha.zero_()
        names = list(PRIMITIVES)
        for e, (i, j) in enumerate(net.edges):
            net.alpha[e, names.index("none")] = 10.0  # "none" never wins
            net.alpha[e, names.index("conv3" if i == 0 else "maxpool3")] = 1.0 + i
    geno = discretize(net, keep=2)
    assert geno == [[(0, "conv3")], [(0, "conv3"), (1, "maxpool3")], [(1, "maxpool3"), (2, "maxpool3")]]
    fixed = FixedNet(geno, channels=2, length=8)
    assert fixed(torch.randn(3, 8)).shape == (3, 10)
    assert genotype_cost(geno, channels=2, length=8) == sum(p.numel() for p in fixed.parameters())


def test_random_genotypes_are_valid_and_the_baseline_matches_cost() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        geno = random_genotype(4, gen)
        assert [len(node) for node in geno] == [1, 2, 2, 2]
        for j, node in enumerate(geno, start=1):
            assert all(0 <= i < j and op in PRIMITIVES and op != "none" for i, op in node)
            assert len({i for i, _ in node}) == len(node)
    cfg = NasConfig(channels=4, nodes=3, cost_tolerance=0.05)
    target = [[(0, "conv5")], [(0, "conv3"), (1, "skip")], [(0, "maxpool3"), (2, "conv3")]]
    rand = _matched_random(target, cfg, seed=0)
    assert abs(genotype_cost(rand, 4) - genotype_cost(target, 4)) <= 0.05 * genotype_cost(target, 4)


@pytest.mark.parametrize("kw,field", [({"method": "enas"}, "method"), ({"nodes": 9}, "nodes"),
                                      ({"alpha_lr": 0.0}, "alpha_lr")])
def test_nas_config_rejects_bad_fields(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        NasConfig(**kw)


def test_run_nas_is_deterministic_and_reports_declared_metrics() -> None:
    cfg = NasConfig(channels=4, nodes=2, search_steps=4, train_steps=3, eval_every=2, batch_size=16,
                    second_order=True, cost_tolerance=0.5)
    rows: list[dict] = []
    a = run_nas(cfg, seed=0, progress=rows.append)
    b = run_nas(cfg, seed=0)
    assert set(a.metrics) == {m.key for m in NAS_METRICS} and rows == a.history and len(a.history) == 2
    assert a.extras["genotype"] == b.extras["genotype"] and a.metrics["accuracy"] == b.metrics["accuracy"]
    assert a.metrics["accuracy_gain"] == pytest.approx(a.metrics["accuracy"] - a.metrics["random_accuracy"])
