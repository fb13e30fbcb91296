"""The distillation technique and the FitNets hint loss. References: Hinton et al.'s loss and its gradient with
respect to the student logits in closed form, computed in NumPy (soft term T^2 alpha KL, gradient
alpha T (q - p) / N; hard term (1 - alpha) CE, gradient (1 - alpha)(softmax(s) - y) / N); FitNets eq. 3 and its
gradient for a linear regressor in NumPy; for the saved-run teacher, the outputs of the model that was saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from tricklab.compress.distill import HintRegressor, capture, hint_loss, load_teacher
from tricklab.compress.pruning import magnitude_prune_
from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError, UserError
from tricklab.models import build_model
from tricklab.techniques import Distillation
from tricklab.train import Technique, Trainer, TrainState


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def numpy_kd(s: np.ndarray, t: np.ndarray, y: np.ndarray, temp: float, alpha: float) -> tuple[float, np.ndarray]:
    """Loss and d loss / d s of alpha T^2 KL(p_T || q_T) + (1 - alpha) CE(s, y), batch mean."""
    n = s.shape[0]
    p, q, sm = _softmax(t / temp), _softmax(s / temp), _softmax(s)
    kl = (p * (np.log(p) - np.log(q))).sum(1)
    ce = -np.log(sm[np.arange(n), y])
    loss = (alpha * temp**2 * kl + (1 - alpha) * ce).mean()
    onehot = np.eye(s.shape[1])[y]
    grad = (alpha * temp * (q - p) + (1 - alpha) * (sm - onehot)) / n
    return float(loss), grad


class Probe(Technique):
    """Records the loss and the student's outputs after distillation replaced the loss."""

    name = "probe"
    reads = frozenset({"loss", "batch.outputs"})

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_loss(self, state: TrainState) -> None:
        state.outputs.retain_grad()
        self.seen.append((state.inputs, state.outputs, state.targets, state.loss))


@pytest.mark.parametrize("temp, alpha", [(4.0, 0.9), (1.0, 0.5), (2.5, 1.0)])
def test_the_trained_loss_and_its_gradient_are_hintons_formula(temp: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 4, (32,), generator=g)
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4))
    student = nn.Linear(6, 4)
    probe = Probe()
    trainer = Trainer(student, torch.optim.SGD(student.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
                      techniques=[Distillation(teacher, temperature=temp, alpha=alpha), probe], max_steps=2,
                      log_every=1)
    trainer.fit()
    assert len(probe.seen) == 2
    for inputs, outputs, targets, loss in probe.seen:
        ref_loss, ref_grad = numpy_kd(outputs.detach().double().numpy(), teacher(inputs).detach().double().numpy(),
                                      targets.numpy(), temp, alpha)
        assert float(loss.detach()) == pytest.approx(ref_loss, rel=1e-5)
        np.testing.assert_allclose(outputs.grad.double().numpy(), ref_grad, rtol=1e-4, atol=1e-7)


def test_teacher_from_a_saved_run_gives_the_saved_models_outputs(tmp_path) -> None:
    torch.manual_seed(3)
    model = build_model("mlp", (1, 8, 8), 10, hidden=12)
    magnitude_prune_(model, 0.5)  # a pruned teacher: its masks come back too
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"task": "digits", "model": {"name": "mlp",
                                                                                      "args": {"hidden": 12}}}))
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    teacher = load_teacher(tmp_path)  # shapes from the digits data set named by the recipe
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(teacher(x), model(x).detach())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(UserError, match="recipe.yaml is missing"):
        load_teacher(tmp_path / "nothing")
    technique = Distillation(str(tmp_path))
    technique.on_fit_start(TrainState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                      loss_fn=nn.functional.cross_entropy, device=torch.device("cpu")))
    assert torch.equal(technique.teacher(x), model(x).detach())


def test_hint_loss_and_gradient_match_fitnets_eq3() -> None:
    g = torch.Generator().manual_seed(1)
    v, u = torch.randn(6, 5, generator=g), torch.randn(6, 3, generator=g)
    r = HintRegressor(5, 3)
    loss = hint_loss(r(v), u)
    loss.backward()
    w, b = r.map.weight.detach().numpy(), r.map.bias.detach().numpy()
    resid = u.numpy() - (v.numpy() @ w.T + b)  # u - r(v), (B, 3)
    assert float(loss.detach()) == pytest.approx(0.5 * (resid**2).sum(1).mean(), rel=1e-6)
    # d/dW 1/2 ||u - Wv - b||^2, batch mean = -(u - Wv - b) v^T / B
    np.testing.assert_allclose(r.map.weight.grad.numpy(), -(resid.T @ v.numpy()) / 6, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.map.bias.grad.numpy(), -resid.sum(0) / 6, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="HintRegressor"):
        hint_loss(torch.zeros(2, 4), torch.zeros(2, 3))


def test_capture_reads_a_hint_layer_of_a_feature_map() -> None:
    model = build_model("cnn", (40,), 10)
    with capture(model, "conv2") as out:
        model(torch.randn(2, 40))
    assert out["features"].shape == (2, 25, 10)
    r = HintRegressor(25, 8, dims=1)
    assert r(out["features"]).shape == (2, 8, 10)
    with pytest.raises(UserError, match="no layer"):
        with capture(model, "conv9"):
            pass


@pytest.mark.parametrize("kwargs, match", [({"teacher": 3}, "run folder"), ({"temperature": 0}, "temperature"),
                                           ({"alpha": 1.5}, "alpha")])
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Distillation(**{"teacher": nn.Linear(2, 2), **kwargs})
