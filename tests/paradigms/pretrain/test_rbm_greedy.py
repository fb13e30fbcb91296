"""RBM with CD-k and greedy layer-wise pretraining.

References: the CD-1 equations of Hinton's practical guide written in NumPy float64 with the same uniform draws
(dW = (v0^T p_h0 - v1^T p_h1) / B, db_v = mean(v0 - v1), db_h = mean(p_h0 - p_h1)); scikit-learn's BernoulliRBM
(test-only) for the hidden probabilities p(h | v) given the same weights (its own training is persistent CD,
so only the conditional is compared); greedy training re-run with fewer layers for the frozen earlier layers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.paradigms.pretrain.greedy import deep_sigmoid_mlp, greedy_pretrain, to_unit_interval
from tricklab.paradigms.pretrain.rbm import RBM, cd_statistics


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def test_cd1_update_equals_the_numpy_equations() -> None:
    g = torch.Generator().manual_seed(0)
    rbm = RBM(7, 4, generator=g).double()
    with torch.no_grad():
        rbm.weight.normal_(0, 0.5, generator=g)
        rbm.b_v.normal_(0, 0.3, generator=g)
        rbm.b_h.normal_(0, 0.3, generator=g)
    v0 = (torch.rand(6, 7, generator=g) < 0.5).double()
    w0, bv0, bh0 = (t.detach().clone() for t in (rbm.weight, rbm.b_v, rbm.b_h))
    state = g.get_state()
    rbm.cd_step(v0, lr=0.1, generator=g)
    g.set_state(state)  # replay the same draws for the reference
    u_h = torch.rand(6, 4, generator=g).double().numpy()
    u_v = torch.rand(6, 7, generator=g).double().numpy()
    W, bv, bh, v = w0.numpy(), bv0.numpy(), bh0.numpy(), v0.numpy()
    ph0 = _sigmoid(v @ W + bh)
    h0 = (u_h < ph0).astype(float)
    v1 = (u_v < _sigmoid(h0 @ W.T + bv)).astype(float)
    ph1 = _sigmoid(v1 @ W + bh)
    np.testing.assert_allclose(rbm.weight.detach().numpy(), W + 0.1 * (v.T @ ph0 - v1.T @ ph1) / 6, rtol=1e-12)
    np.testing.assert_allclose(rbm.b_v.detach().numpy(), bv + 0.1 * (v - v1).mean(0), rtol=1e-12)
    np.testing.assert_allclose(rbm.b_h.detach().numpy(), bh + 0.1 * (ph0 - ph1).mean(0), rtol=1e-12)


def test_hidden_probabilities_match_scikit_learn() -> None:
    neural = pytest.importorskip("sklearn.neural_network")
    g = torch.Generator().manual_seed(3)
    rbm = RBM(5, 3, generator=g).double()
    with torch.no_grad():
        rbm.weight.normal_(0, 1.0, generator=g)
        rbm.b_h.normal_(0, 1.0, generator=g)
    v = (torch.rand(4, 5, generator=g) < 0.5).double()
    ref = neural.BernoulliRBM(n_components=3)
    ref.components_ = rbm.weight.detach().numpy().T.copy()
    ref.intercept_hidden_ = rbm.b_h.detach().numpy().copy()
    ref.intercept_visible_ = rbm.b_v.detach().numpy().copy()
    np.testing.assert_allclose(rbm(v).numpy(), ref.transform(v.numpy()), rtol=1e-12)


def test_cd_k_needs_a_step() -> None:
    with pytest.raises(ConfigError, match="k >= 1"):
        cd_statistics(torch.zeros(2, 2), torch.zeros(2), torch.zeros(2), torch.zeros(1, 2), [])


def test_rbm_reconstruction_improves_on_structured_data() -> None:
    g = torch.Generator().manual_seed(0)
    protos = (torch.rand(3, 16, generator=g) < 0.5).float()
    data = protos[torch.randint(0, 3, (300,), generator=g)]
    rbm = RBM(16, 8, generator=g)
    errs = [rbm.cd_step(data[torch.randint(0, 300, (32,), generator=g)], 0.5, g) for _ in range(150)]
    assert np.mean(errs[-20:]) < 0.5 * np.mean(errs[:20])


@pytest.mark.parametrize("method", ["autoencoder", "rbm"])
def test_greedy_layers_are_frozen_while_later_layers_train(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = to_unit_interval(torch.randn(200, 10, generator=g))
    one = greedy_pretrain(x, [6], method=method, steps_per_layer=8, seed=5)
    losses: dict[int, list[float]] = {}
    three = greedy_pretrain(x, [6, 5, 4], method=method, steps_per_layer=8, seed=5,
                            on_layer=lambda i, ls: losses.setdefault(i, ls))
    torch.testing.assert_close(three[0].weight, one[0].weight, rtol=0, atol=0)  # untouched by the later stages
    assert [tuple(lin.weight.shape) for lin in three] == [(6, 10), (5, 6), (4, 5)] and sorted(losses) == [0, 1, 2]
    net = deep_sigmoid_mlp([10, 6, 5, 4], 3, init=three)
    assert torch.equal(net[0].weight, three[0].weight) and all(p.requires_grad for p in net.parameters())


def test_autoencoder_layer_learns_and_inputs_are_checked() -> None:
    g = torch.Generator().manual_seed(0)
    x = to_unit_interval(torch.randn(300, 2, generator=g) @ torch.randn(2, 12, generator=g))
    losses: dict[int, list[float]] = {}
    greedy_pretrain(x, [4], steps_per_layer=150, lr=3e-2, noise=0.2, on_layer=lambda i, ls: losses.setdefault(i, ls))
    assert np.mean(losses[0][-20:]) < np.mean(losses[0][:20])
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        greedy_pretrain(torch.randn(10, 3), [2])
