"""The qat technique (tricklab.techniques.qat). References: the same training with ``convert=False`` (the
fake-quantized model the conversion starts from: the int8 model must equal its forward within one quantization
step), the functional core ``tricklab.compress.quantize.prepare`` run by hand (same loss and gradients on the first
batch, autograd through the straight-through estimator), and the ConfigError messages."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.compress.distill import load_run_model
from tricklab.compress.quantize import FakeQuant, Int8Layer, prepare
from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.evaluate.cost import count_parameters, model_size_bytes
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.models import build_model
from tricklab.techniques import QAT
from tricklab.train import Technique, Trainer, TrainState

SHAPES = {"mlp": (40,), "cnn": (40,)}


def _data(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(96, *shape, generator=g), torch.randint(0, 10, (96,), generator=g), \
        torch.randn(64, *shape, generator=g)


def _train(name: str, convert: bool, steps: int = 8) -> tuple[nn.Module, QAT]:
    shape = SHAPES[name]
    x, y, _ = _data(shape)
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    qat = QAT(momentum=0.1, convert=convert)
    Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2), InMemoryLoader(x, y, 32, seed=0),
            techniques=[qat], max_steps=steps, log_every=steps).fit()
    return model, qat


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_qat_run_ends_with_the_int8_model_equal_to_its_fake_quant_forward_within_one_step(name: str) -> None:
    converted, _ = _train(name, convert=True)
    fake, _ = _train(name, convert=False)  # the same run without the conversion (deterministic on the CPU)
    assert any(isinstance(m, FakeQuant) for m in fake.modules())
    int8 = [m for m in converted.modules() if isinstance(m, Int8Layer)]
    assert len(int8) == {"mlp": 3, "cnn": 4}[name] and not any(isinstance(m, FakeQuant) for m in converted.modules())
    assert not any(True for m in converted.modules() if isinstance(m, (nn.Linear, nn.Conv1d))
                   for _ in m.parameters(recurse=False))  # no float weights left
    assert all(m.weight_q.dtype == torch.int8 for m in int8)
    _, _, x = _data(SHAPES[name])
    with torch.no_grad():
        a, b = fake.eval()(x), converted.eval()(x)
    # one input step S_x of the last layer moves an output by at most S_x max_c ||W_c||_1
    last = int8[-1]
    w = last.weight_q.float() * last.weight_scale.view(-1, *([1] * (last.weight_q.dim() - 1)))
    step = float(last.input_scale) * float(w.abs().flatten(1).sum(1).max())
    assert 0 < float((a - b).abs().max()) <= step or torch.equal(a, b)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    # the int8 weights are the trained fake-quant weights, rounded: S_w q_w == fq(W) of the trained layer
    trained = [m for m in fake.modules() if isinstance(m, FakeQuant)][-1].layer.weight.detach()
    s = trained.abs().flatten(1).amax(1) / 127
    torch.testing.assert_close(w, torch.round(trained / s.view(-1, *([1] * (trained.dim() - 1)))) *
                               s.view(-1, *([1] * (trained.dim() - 1))), rtol=0, atol=1e-7)


def test_training_runs_the_fake_quant_forward_with_straight_through_gradients() -> None:
    """The first step of the trainer (wrapped in place, the optimizer built before) against the functional core run
    by hand on a copy: same loss, same gradients, and the weights of the wrapped layers are the optimizer's."""
    shape = SHAPES["mlp"]
    x, y, _ = _data(shape)
    torch.manual_seed(0)
    model = build_model("mlp", shape, 10)
    reference = prepare(copy.deepcopy(model), mode="ema")  # the core, by hand
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    params_before = [id(p) for p in model.parameters()]
    grads = _GradsOnce()
    trainer = Trainer(model, opt, InMemoryLoader(x, y, 96, seed=0), techniques=[QAT(convert=False), grads],
                      max_steps=1, log_every=1)
    trainer.fit()
    assert [id(p) for p in model.parameters()] == params_before  # wrapped in place: the optimizer's tensors
    assert sum(isinstance(m, FakeQuant) for m in model.modules()) == 3
    loss = F.cross_entropy(reference(x), y)
    loss.backward()
    assert trainer.state.history[0]["train_loss"] == pytest.approx(float(loss.detach()), rel=1e-6)
    ref_grads = [p.grad for p in reference.parameters()]
    assert len(grads.grads) == len(ref_grads) == 6
    for g, r in zip(grads.grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-7)


class _GradsOnce(Technique):
    """Copies the gradients at after_backward (complete, unscaled): what the first step will apply."""

    name = "grads_once"
    reads = frozenset({"grads"})

    def __init__(self) -> None:
        self.grads: list[torch.Tensor] = []

    def on_after_backward(self, state: TrainState) -> None:
        self.grads = [p.grad.detach().clone() for p in state.raw_model.parameters()]


def test_bad_arguments_and_a_bare_layer_are_refused() -> None:
    with pytest.raises(ConfigError, match="momentum"):
        QAT(momentum=0.0)
    with pytest.raises(ConfigError, match="convert must be true or false"):
        QAT(convert="yes")  # type: ignore[arg-type]
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    layer = nn.Linear(4, 3)
    with pytest.raises(ConfigError, match=r"nn.Sequential"):
        Trainer(layer, torch.optim.SGD(layer.parameters(), lr=0.1), InMemoryLoader(x, y, 4, seed=0),
                techniques=[QAT()], max_steps=1).fit()


def test_a_lab_run_with_qat_evaluates_and_saves_the_int8_model(tmp_path: Path) -> None:
    """Reference: the run folder's model rebuilt by load_run_model (int8 layers from model.safetensors) evaluated on
    the test split must give the summary's accuracy; the float model of the same recipe for the size."""
    recipe = load_recipe(None, ["budget.steps=20", "eval_every=20", "log_every=20", "progress=false", "threads=1",
                                "model=mlp", "techniques=[{name: qat, args: {momentum: 0.1}}]"])
    result = run(recipe, out=tmp_path / "run")
    model, data = load_run_model(tmp_path / "run")
    assert sum(isinstance(m, Int8Layer) for m in model.modules()) == 3
    with torch.no_grad():
        acc = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    assert result.summary.test.value("accuracy") == pytest.approx(acc, abs=1e-6)  # float32 mean
    dense = build_model("mlp", data.input_shape, data.num_classes)
    cost = result.summary.cost
    assert cost is not None and cost.parameters == count_parameters(dense)  # int8 weights still count
    assert cost.model_size_bytes < 0.35 * model_size_bytes(dense)
