"""DeepLIFT (Rescale rule) and DeepLIFT-SHAP. References:

* captum 0.9.0's DeepLift / DeepLiftShap on the same weights, where captum is right: the MNIST-1D paper CNN
  (ours sees its functional torch.relu through the function mode; captum needs a twin with nn.ReLU modules),
  and a conv - maxpool - conv network (the max-pool rule);
* a NumPy transcription of the rules for a network where a ReLU feeds a max pool (tricklab's cnn2d does that):
  there captum 0.9.0 is wrong, its own convergence delta is far from 0 (captum issues #1104 and #1276), so
  the reference is the rule itself, computed by hand in NumPy;
* summation-to-delta (DeepLIFT eq. 1): sum_i C_i = S(x) - S(x'), on every model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explain_helpers import PaperCNNModules, cnn2d, hooks_left, paper_cnn
from tricklab.errors import UserError
from tricklab.explain import deeplift, deeplift_shap

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:captum")


def _mode_stack_depth() -> int:
    return torch._C._len_torch_function_stack()


def test_paper_cnn_functional_relu_matches_captum_on_module_twin() -> None:
    m = paper_cnn()
    twin = PaperCNNModules(m).eval()
    g = torch.Generator().manual_seed(0)
    x, refs = torch.randn(4, 40, generator=g), torch.randn(6, 40, generator=g)
    t = torch.tensor([0, 3, 5, 9])
    ours, res = deeplift_shap(m, x, t, baselines=refs, return_residual=True)
    ref = captum_attr.DeepLiftShap(twin).attribute(x, baselines=refs, target=t)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    assert float(res.abs().max()) < 1e-4
    one, res1 = deeplift(m, x, t, baselines=refs[:1], return_residual=True)
    ref1 = captum_attr.DeepLift(twin).attribute(x, baselines=refs[:1].expand(4, 40), target=t)
    torch.testing.assert_close(one, ref1, rtol=1e-4, atol=1e-6)
    assert float(res1.abs().max()) < 1e-4
    # gradients are not DeepLIFT: with the Rescale rule switched off the answer would be gradient x delta
    grad_x_delta = captum_attr.InputXGradient(m).attribute(x - refs[:1], target=t)
    assert not torch.allclose(one, grad_x_delta, atol=1e-3)


def test_max_pool_rule_matches_captum_where_no_relu_touches_the_pool() -> None:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4),
                      nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    g = torch.Generator().manual_seed(1)
    x, refs = torch.randn(3, 1, 12, 12, generator=g), torch.randn(4, 1, 12, 12, generator=g)
    t = torch.tensor([0, 1, 2])
    ours = deeplift_shap(m, x, t, baselines=refs)
    ref, delta = captum_attr.DeepLiftShap(m).attribute(x, baselines=refs, target=t, return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-4  # captum is right on this network
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)
    m1 = nn.Sequential(nn.Conv1d(1, 3, 3), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(3 * 4, 2)).eval()
    x1, r1 = torch.randn(5, 1, 10, generator=g), torch.randn(5, 1, 10, generator=g)
    torch.testing.assert_close(deeplift(m1, x1, 1, baselines=r1),
                               captum_attr.DeepLift(m1).attribute(x1, baselines=r1, target=1), rtol=1e-4, atol=1e-6)


def test_overlapping_max_pool_windows_keep_summation_to_delta() -> None:
    # windows of 3 with stride 2 share elements: their shares add up (captum's max_unpool overwrites instead,
    # so it is not a reference here)
    torch.manual_seed(5)
    m = nn.Sequential(nn.Conv1d(1, 3, 3), nn.MaxPool1d(3, stride=2), nn.Flatten(), nn.Linear(3 * 3, 2)).double()
    x, r = torch.randn(6, 1, 10, dtype=torch.float64), torch.randn(6, 1, 10, dtype=torch.float64)
    _, res = deeplift(m, x, 1, baselines=r, return_residual=True)
    assert float(res.abs().max()) < 1e-10


def _relu_pool_reference(x: np.ndarray, r: np.ndarray, w_conv: float, b_conv: float, w_lin: np.ndarray) -> np.ndarray:
    """DeepLIFT of S = w_lin . maxpool2(relu(w_conv x + b_conv)) for one 1-D input, by the rules:
    linear parts pass multipliers unchanged; ReLU: m = (relu(u) - relu(u')) / (u - u') (f'(u) if u == u');
    max pool: a window's y - y' goes to argmax(h) when y >= y', else to argmax(h'), split as
    max(y, y') - y' and y - max(y, y'), then divided by the element's h - h' (gradient where h == h')."""
    u, ur = w_conv * x + b_conv, w_conv * r + b_conv
    h, hr = np.maximum(u, 0), np.maximum(ur, 0)
    n = len(x) // 2
    mult_h = np.zeros(len(x))  # d S / d h as multipliers
    share = np.zeros(len(x))
    plain = np.zeros(len(x))
    for j in range(n):
        win = slice(2 * j, 2 * j + 2)
        ia, ib = 2 * j + int(np.argmax(h[win])), 2 * j + int(np.argmax(hr[win]))
        y, yr = h[ia], hr[ib]
        top = max(y, yr)
        share[ia] += w_lin[j] * (top - yr)
        share[ib] += w_lin[j] * (y - top)
        plain[ia] += w_lin[j]  # the ordinary gradient of the input half
    dh = h - hr
    safe = np.where(np.abs(dh) < 1e-10, 1.0, dh)
    mult_h = np.where(np.abs(dh) < 1e-10, plain, share / safe)
    du = u - ur
    safe_u = np.where(np.abs(du) < 1e-10, 1.0, du)
    mult_u = np.where(np.abs(du) < 1e-10, (u > 0).astype(float), (h - hr) / safe_u)
    return (x - r) * mult_h * mult_u * w_conv


def test_relu_into_max_pool_matches_the_numpy_rules_where_captum_fails() -> None:
    m = nn.Sequential(nn.Conv1d(1, 1, 1), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(4, 1)).eval()
    g = torch.Generator().manual_seed(2)
    for trial in range(5):
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(torch.randn(p.shape, generator=g))
        x, r = torch.randn(1, 1, 8, generator=g, dtype=torch.float64), torch.randn(1, 1, 8, generator=g,
                                                                               dtype=torch.float64)
        md = m.double()
        ours, res = deeplift(md, x, 0, baselines=r, return_residual=True)
        ref = _relu_pool_reference(x.flatten().numpy(), r.flatten().numpy(), float(m[0].weight.detach()),
                                   float(m[0].bias.detach()), m[4].weight.detach().flatten().double().numpy())
        np.testing.assert_allclose(ours.flatten().numpy(), ref, rtol=1e-10, atol=1e-12)
        assert abs(float(res)) < 1e-12
    # the hand-checked case of docs/explain/deeplift.md: x = [1, -2 | .5, 3 | -1, -.5], x' = [-1, 2 | 1, 0 | -2, .2]
    hand = nn.Sequential(nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(3, 1)).eval()
    with torch.no_grad():
        hand[3].weight.fill_(1.0)
        hand[3].bias.zero_()
    x = torch.tensor([[[1.0, -2.0, 0.5, 3.0, -1.0, -0.5]]])
    r = torch.tensor([[[-1.0, 2.0, 1.0, 0.0, -2.0, 0.2]]])
    ref = _relu_pool_reference(x.flatten().double().numpy(), r.flatten().double().numpy(), 1.0, 0.0, np.ones(3))
    np.testing.assert_allclose(deeplift(hand, x, 0, baselines=r).flatten().numpy(), ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ref, [0.0, -1.0, 0.0, 2.0, 0.0, -0.2], atol=1e-12)


def test_summation_to_delta_on_tricklab_cnn2d() -> None:
    m = cnn2d()
    g = torch.Generator().manual_seed(3)
    x, refs = torch.randn(3, 1, 12, 12, generator=g), torch.randn(5, 1, 12, 12, generator=g)
    t = torch.tensor([4, 0, 2])
    attr, res = deeplift_shap(m, x, t, baselines=refs, return_residual=True, batch_size=4)
    with torch.no_grad():
        expected = m(x).gather(1, t[:, None])[:, 0] - m(refs)[:, t].mean(0)
    torch.testing.assert_close(attr.flatten(1).sum(1), expected, rtol=1e-4, atol=1e-5)
    assert float(res.abs().max()) < 1e-4
    # the chunked and unchunked paths agree
    torch.testing.assert_close(attr, deeplift_shap(m, x, t, baselines=refs), rtol=1e-5, atol=1e-7)


class _Attention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(x)
        return (x * gate)[:, :3]


@pytest.mark.parametrize("model, what", [
    (nn.Sequential(nn.Linear(4, 3), nn.Softmax(1)), "softmax"),
    (nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3)), "layer_norm"),
    (_Attention(), "mul of two data-dependent tensors"),
])
def test_unsupported_operations_raise_and_leave_nothing_behind(model: nn.Module, what: str) -> None:
    model.train()
    depth = _mode_stack_depth()
    with pytest.raises(UserError, match=what):
        deeplift(model, torch.randn(2, 4), 0)
    assert _mode_stack_depth() == depth and hooks_left(model) == 0 and model.training


class _Gated(nn.Module):
    """x * sigmoid(gate): a parameter gate is a linear scale, not a product of two data tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.gate = nn.Parameter(torch.randn(2))  # first dimension 2 = the [x; x'] batch of one example

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * torch.sigmoid(self.gate)


def test_parameters_are_not_mistaken_for_data() -> None:
    m = _Gated()
    x, r = torch.randn(1, 3), torch.randn(1, 3)
    attr, res = deeplift(m, x, 1, baselines=r, return_residual=True)
    assert float(res.abs().max()) < 1e-6
    # linear in x: DeepLIFT is exactly (x - r) times the gradient
    w = (m.lin.weight[1] * torch.sigmoid(m.gate[1])).detach()
    torch.testing.assert_close(attr[0], (x - r)[0] * w)


def test_leaky_relu_tanh_sigmoid_keep_summation_to_delta() -> None:
    torch.manual_seed(4)
    m = nn.Sequential(nn.Linear(5, 6), nn.LeakyReLU(0.1), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 6),
                      nn.Sigmoid(), nn.Linear(6, 6), nn.ELU(), nn.Linear(6, 6), nn.Softplus(), nn.Linear(6, 2))
    x, r = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    _, res = deeplift(m.double(), x, 1, baselines=r, return_residual=True)
    assert float(res.abs().max()) < 1e-10
