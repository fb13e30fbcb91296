"""Once-for-all: the elastic convolution against torch's conv1d on the cropped / transformed / sliced weights
(outputs and gradients), channel sorting keeps the full network's function, sub-network depth against a hand-written
forward, and run_ofa's contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tricklab.errors import ConfigError
from tricklab.paradigms.nas.ofa import ElasticConv1d, OFANet, SubnetConfig, sample_subnet, sort_channels, subnet_macs
from tricklab.paradigms.nas.ofa_run import OFA_METRICS, OfaConfig, run_ofa


def test_elastic_kernel_equals_conv1d_on_cropped_and_transformed_weights() -> None:
    torch.manual_seed(0)
    conv = ElasticConv1d(4, 6, (3, 5, 7)).double()
    with torch.no_grad():
        for t in conv.transforms.values():
            t.add_(0.1 * torch.randn_like(t))
    x = torch.randn(2, 4, 12, dtype=torch.float64)
    w, b = conv.weight, conv.bias
    torch.testing.assert_close(conv(x), F.conv1d(x, w, b, padding=3))  # torch built-in at full size
    w5 = w[..., 1:6] @ conv.transforms["5"]
    torch.testing.assert_close(conv(x, k=5), F.conv1d(x, w5, b, padding=2))
    w3 = w5[..., 1:4] @ conv.transforms["3"]
    out = conv(x, out_c=2, k=3)
    ref = F.conv1d(x, w3[:2], b[:2], padding=1)
    torch.testing.assert_close(out, ref)
    g = torch.autograd.grad(out.sum(), [conv.weight, conv.transforms["3"], conv.transforms["5"]])
    g_ref = torch.autograd.grad(ref.sum(), [conv.weight, conv.transforms["3"], conv.transforms["5"]])
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a, r)
    assert float(g[1].abs().sum()) > 0  # the transformation matrices learn
    fewer_in = conv(x[:, :3])  # a narrower input uses the first input channels of the weight
    torch.testing.assert_close(fewer_in, F.conv1d(x[:, :3], w[:, :3], b, padding=3))
    with pytest.raises(ValueError, match="kernel size"):
        conv(x, k=4)


def test_sort_channels_keeps_the_full_network_and_orders_by_importance() -> None:
    torch.manual_seed(0)
    net = OFANet(channels=4, max_depth=2, widths=(2, 4, 8)).double()
    x = torch.randn(3, 40, dtype=torch.float64)
    before = net(x)
    sort_channels(net)
    torch.testing.assert_close(net(x), before, rtol=1e-12, atol=1e-12)
    for block in net.blocks:
        imp = block.conv2.weight.abs().sum(dim=(0, 2))
        assert bool((imp[:-1] >= imp[1:]).all())


def test_subnet_depth_and_width_equal_a_hand_written_forward() -> None:
    torch.manual_seed(0)
    net = OFANet(channels=4, max_depth=3).double()
    x = torch.randn(2, 40, dtype=torch.float64)
    s = SubnetConfig(1, (5, 3, 3), (8, 32, 32))
    h = net.stem(x.unsqueeze(1))
    blk = net.blocks[0]
    h = h + blk.conv2(torch.relu(blk.conv1(h, out_c=8, k=5)), k=5)
    torch.testing.assert_close(net(x, s), net.head(torch.relu(h).flatten(1)))
    gen = torch.Generator().manual_seed(0)
    subs = [sample_subnet(net, gen) for _ in range(30)]
    assert {s.depth for s in subs} == {1, 2, 3} and all(k in (3, 5, 7) for s in subs for k in s.kernels)
    # MACs: stem 1*4*3*40 + block 2*4*8*5*40 + head 4*40*10, counted by hand
    assert subnet_macs(net, s) == 4 * 3 * 40 + 2 * 4 * 8 * 5 * 40 + 4 * 40 * 10
    fixed = sample_subnet(net, gen, kernel=True, depth=False, width=False)
    assert fixed.depth == 3 and fixed.widths == (32, 32, 32)


@pytest.mark.parametrize("kw,field", [({"latency_budget": 1.5}, "latency_budget"), ({"max_depth": 0}, "max_depth"),
                                      ({"latency_model": "flops"}, "latency_model")])
def test_ofa_config_rejects_bad_fields(kw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        OfaConfig(**kw)


def test_run_ofa_reports_declared_metrics_and_a_front() -> None:
    cfg = OfaConfig(channels=4, max_depth=2, steps_per_phase=3, batch_size=16, candidates=3, latency_repeats=2)
    rows: list[dict] = []
    r = run_ofa(cfg, seed=0, progress=rows.append)
    r2 = run_ofa(cfg, seed=0)
    assert set(r.metrics) == {m.key for m in OFA_METRICS} and [row["phase"] for row in rows] == [
        "full", "kernel", "depth", "width"]
    assert len(r.extras["front"]) == 5 and r.metrics["full_accuracy"] == r2.metrics["full_accuracy"]
    assert r.metrics["smallest_accuracy"] == r2.metrics["smallest_accuracy"]
    macs = OfaConfig(**{**cfg.__dict__, "latency_model": "macs"})
    a, b = run_ofa(macs, seed=0), run_ofa(macs, seed=0)
    assert {k: v for k, v in a.metrics.items() if k != "train_seconds"} == {
        k: v for k, v in b.metrics.items() if k != "train_seconds"}  # a MAC budget makes the choice deterministic
