"""Bayes by backprop: the ELBO and its mini-batch scaling. References: the full-data free energy
``KL + sum_i NLL_i`` (Blundell et al. eq. 1) computed directly, against which an epoch of per-batch losses
(uniform and Blundell weighting) must add up; F.cross_entropy + KL / N with autograd for the loss and its
gradient; the original model for to_bayesian's posterior mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError, UserError
from tricklab.layers.bayesian import BayesConv1d, BayesLinear, GaussianPrior, ScaleMixturePrior
from tricklab.train import Trainer
from tricklab.uncertainty.bayes_by_backprop import (
    ELBOLoss,
    bayes_predict,
    elbo_loss,
    kl_divergence,
    minibatch_kl_weight,
    to_bayesian,
)


def _bnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(BayesLinear(5, 8, rho_init=-3.0), nn.ReLU(), BayesLinear(8, 3, rho_init=-3.0)).double()


@pytest.mark.parametrize("scheme", ["uniform", "blundell"])
def test_an_epoch_of_minibatch_losses_adds_up_to_the_free_energy(scheme: str) -> None:
    model = _bnn().eval()  # posterior mean, closed-form KL: deterministic terms
    g = torch.Generator().manual_seed(1)
    n, b = 60, 12
    x, y = torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)
    kl = kl_divergence(model)
    free_energy = kl + F.cross_entropy(model(x), y, reduction="sum")
    m = n // b
    total = torch.zeros((), dtype=torch.float64)
    for i in range(m):
        xb, yb = x[i * b : (i + 1) * b], y[i * b : (i + 1) * b]
        pi = minibatch_kl_weight(i, m, scheme)
        # per-batch loss on the mean-NLL scale: mean NLL + pi_i KL / B; uniform pi_i = 1/M gives KL / N
        loss = F.cross_entropy(model(xb), yb) + pi * kl / b
        if scheme == "uniform":
            torch.testing.assert_close(loss, elbo_loss(model(xb), yb, kl, n))
        total = total + loss * b
    torch.testing.assert_close(total, free_energy, rtol=1e-12, atol=1e-10)


def test_kl_weights_sum_to_one_and_follow_the_paper() -> None:
    for m in (1, 3, 10, 200):
        for scheme in ("uniform", "blundell"):
            assert sum(minibatch_kl_weight(i, m, scheme) for i in range(m)) == pytest.approx(1.0, rel=1e-12)
    assert [minibatch_kl_weight(i, 3, "blundell") for i in range(3)] == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    with pytest.raises(UserError, match="scheme"):
        minibatch_kl_weight(0, 2, "linear")
    with pytest.raises(UserError, match="batch_index"):
        minibatch_kl_weight(2, 2)


def test_elbo_loss_value_and_gradient() -> None:
    model = _bnn().train()
    loss_fn = ELBOLoss(model, num_train=500, kl_weight=0.5)
    x, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 3, (7,))
    torch.manual_seed(3)
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.manual_seed(3)
    out = model(x)
    ref = F.cross_entropy(out, y) + 0.5 * (model[0].kl() + model[2].kl()) / 500
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads, torch.autograd.grad(ref, list(model.parameters()))):
        torch.testing.assert_close(a, b)
    assert loss_fn.last_kl == pytest.approx(float((model[0].kl() + model[2].kl()).detach()))
    with pytest.raises(ConfigError, match="no Bayesian"):
        ELBOLoss(nn.Linear(2, 2), 10)
    with pytest.raises(ConfigError, match="num_train"):
        ELBOLoss(model, 0)


def test_to_bayesian_starts_at_the_original_network() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10, 3))
    bnn = to_bayesian(net, prior=ScaleMixturePrior(), local_reparam=True)
    assert isinstance(bnn[0], BayesConv1d) and isinstance(bnn[3], BayesLinear)
    assert isinstance(net[0], nn.Conv1d)  # the original is untouched (a copy was converted)
    x = torch.randn(5, 1, 20)
    bnn.eval()
    torch.testing.assert_close(bnn(x), net(x))
    bnn.train()
    assert not torch.allclose(bnn(x), bnn(x))
    assert torch.isfinite(kl_divergence(bnn))
    with pytest.raises(UserError, match="found no"):
        to_bayesian(nn.ReLU())


def test_bayes_predict_samples_in_eval_mode_and_restores_it() -> None:
    model = nn.Sequential(BayesLinear(5, 8, rho_init=-1.0), nn.BatchNorm1d(8), nn.ReLU(), BayesLinear(8, 3))
    model.train()
    bn_mean = model[1].running_mean.clone()
    x = torch.randn(9, 5)
    torch.manual_seed(4)
    probs = bayes_predict(model, x, samples=6, batch_size=4)
    assert probs.shape == (6, 9, 3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(6, 9, dtype=torch.float64))
    assert not torch.allclose(probs[0], probs[1])
    torch.testing.assert_close(model[1].running_mean, bn_mean)  # batch norm stayed in eval
    assert model.training and not model[0].sample_in_eval


def test_trainer_fits_a_bayesian_mlp_with_the_elbo() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    model = nn.Sequential(BayesLinear(5, 16, prior=GaussianPrior(1.0), rho_init=-4.0), nn.ReLU(),
                          BayesLinear(16, 3, rho_init=-4.0))
    loss_fn = ELBOLoss(model, num_train=200)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=0.02), InMemoryLoader(x, y, 50, seed=0),
                      loss_fn=loss_fn, eval_data=(x, y), max_steps=100, log_every=25)
    state = trainer.fit()
    losses = [r["train_loss"] for r in state.history if "train_loss" in r]
    assert state.history[-1]["eval_accuracy"] > 0.85
    assert losses[-1] < losses[0]
    assert loss_fn.last_kl > 0
