"""Vectorised deep ensembles. Reference: M separately built and separately trained models (``torch.manual_seed
(seed); factory()``, each with its own optimizer, or each trained by its own Trainer); the ensemble's predictive
distribution against NumPy's mean of softmaxes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError, UserError
from tricklab.train import Trainer
from tricklab.uncertainty.ensemble import (
    SequentialEnsemble,
    VmapEnsemble,
    ensemble_log_probs,
    ensemble_loss,
    ensemble_predict_fn,
    make_members,
)

SEEDS = [3, 11, 29]


def _cnn() -> nn.Module:
    return nn.Sequential(nn.Unflatten(1, (1, 12)), nn.Conv1d(1, 4, 3, stride=2), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 5, 8), nn.Tanh(), nn.Linear(8, 3))


def _bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _separate(factory, dtype: torch.dtype) -> list[nn.Module]:  # noqa: ANN001
    out = []
    for s in SEEDS:
        torch.manual_seed(s)
        out.append(factory().to(dtype))
    return out


@pytest.mark.parametrize("factory", [_cnn, _bn_mlp], ids=["cnn", "batchnorm_mlp"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_vmapped_training_equals_separately_trained_models(factory, dtype: torch.dtype) -> None:  # noqa: ANN001
    """Outputs and gradients at every step, and the weights (and batch-norm buffers) at the end."""
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
    ens = VmapEnsemble([m.to(dtype) for m in make_members(factory, SEEDS)])
    ens.train()
    singles = _separate(factory, dtype)
    opt = torch.optim.Adam(ens.parameters(), lr=0.01, weight_decay=1e-3)
    opts = [torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=1e-3) for m in singles]
    g = torch.Generator().manual_seed(0)
    names = [n for n, _ in singles[0].named_parameters()]
    for _ in range(6):
        x = torch.randn(10, 12, generator=g, dtype=dtype)
        y = torch.randint(0, 3, (10,), generator=g)
        opt.zero_grad()
        out = ens(x)
        ensemble_loss(out, y).backward()
        ref_out = []
        for m, o in zip(singles, opts):
            o.zero_grad()
            z = m(x)
            F.cross_entropy(z, y).backward()
            ref_out.append(z.detach())
        torch.testing.assert_close(out.detach(), torch.stack(ref_out), **tol)
        for n in names:
            stacked = getattr(ens, n.replace(".", "__")).grad
            for i, m in enumerate(singles):
                torch.testing.assert_close(stacked[i], m.get_parameter(n).grad, **tol)
        opt.step()
        for o in opts:
            o.step()
    # float32: batched and single matmuls round differently, and Adam's normalised steps carry the 1e-7 relative
    # differences into the weights; float64 pins the equality down to round-off
    end_tol = tol if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for i, m in enumerate(singles):
        for k, v in ens.member_state_dict(i).items():
            torch.testing.assert_close(v, m.state_dict()[k], **end_tol)


def test_trainer_fits_the_vmapped_ensemble_like_separate_trainer_runs() -> None:
    """The ensemble is trained in one model by the supervised Trainer (custom loss and predict_fn); each member
    ends where a Trainer run of that member alone ends (same loader seed, same batches)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 12, generator=g), torch.randint(0, 3, (60,), generator=g)
    ens = VmapEnsemble(make_members(_cnn, SEEDS))
    Trainer(ens, torch.optim.SGD(ens.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 20, seed=0),
            loss_fn=ensemble_loss, predict_fn=ensemble_predict_fn(25), eval_data=(x, y), max_steps=9).fit()
    for i, m in enumerate(_separate(_cnn, torch.float32)):
        Trainer(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 20, seed=0),
                max_steps=9).fit()
        for k, v in ens.member_state_dict(i).items():
            torch.testing.assert_close(v, m.state_dict()[k], rtol=2e-5, atol=2e-6)


def test_members_evaluate_alone_and_together() -> None:
    ens = VmapEnsemble(make_members(_cnn, SEEDS)).eval()
    x = torch.randn(7, 12)
    with torch.no_grad():
        out = ens(x)
        alone = torch.stack([ens.member(i).eval()(x) for i in range(3)])
        seq = SequentialEnsemble(list(ens.members())).eval()(x)
    torch.testing.assert_close(out, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seq, alone)
    p = np.exp(out.numpy() - out.numpy().max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(ensemble_log_probs(out).exp().numpy(), p.mean(0), rtol=1e-5, atol=1e-7)
    logits, targets = ensemble_predict_fn(3)(ens, (x, torch.zeros(7, dtype=torch.long)))
    torch.testing.assert_close(logits, ensemble_log_probs(out))
    assert targets.shape == (7,)
    # member(i) is a copy: changing it leaves the ensemble alone
    m0 = ens.member(0)
    with torch.no_grad():
        next(m0.parameters()).add_(1.0)
        torch.testing.assert_close(ens(x), out)


def test_per_member_inputs_equal_separate_batches() -> None:
    ens = VmapEnsemble(make_members(_cnn, SEEDS), per_member_inputs=True)
    seq = SequentialEnsemble(_separate(_cnn, torch.float32), per_member_inputs=True)
    x = torch.randn(3, 5, 12)
    y = torch.randint(0, 3, (3, 5))
    a, b = ens(x), seq(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    la, lb = ensemble_loss(a, y, per_member_targets=True), ensemble_loss(b, y, per_member_targets=True)
    torch.testing.assert_close(la, lb)
    ga = torch.autograd.grad(la, ens.get_parameter("1__weight"))[0]
    gb = torch.autograd.grad(lb, [m[1].weight for m in seq.members_list])
    torch.testing.assert_close(ga, torch.stack(gb), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="per_member_inputs"):
        ens(torch.randn(5, 12))


def test_dropout_masks_differ_between_members() -> None:
    def factory() -> nn.Module:
        torch.manual_seed(0)  # identical weights: only the masks can differ
        return nn.Sequential(nn.Linear(12, 16), nn.Dropout(0.5), nn.Linear(16, 3))

    ens = VmapEnsemble([factory() for _ in range(3)])
    x = torch.randn(4, 12)
    out = ens.train()(x)
    assert not torch.allclose(out[0], out[1])
    out = ens.eval()(x)
    torch.testing.assert_close(out[0], out[1])


def test_bad_ensembles_are_refused() -> None:
    with pytest.raises(ConfigError, match="structure"):
        VmapEnsemble([nn.Linear(3, 2), nn.Linear(4, 2)])
    with pytest.raises(ConfigError, match="distinct"):
        make_members(lambda: nn.Linear(3, 2), [1, 1])
    with pytest.raises(ConfigError, match="at least one"):
        VmapEnsemble([])
    ens = VmapEnsemble([nn.Linear(3, 2), nn.Linear(3, 2)])
    with pytest.raises(UserError, match="member index"):
        ens.member(2)


def test_building_members_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    make_members(lambda: nn.Linear(30, 30), [0, 1])
    torch.testing.assert_close(torch.rand(3), expected)


def test_tied_weights_are_shared_inside_each_member() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight  # tied

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.tanh(self.a(x)))

    members = make_members(Tied, SEEDS)
    ens = VmapEnsemble(members)
    x = torch.randn(3, 4)
    torch.testing.assert_close(ens(x), torch.stack([m(x) for m in members]), rtol=1e-5, atol=1e-6)
