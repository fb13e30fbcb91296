"""The self_distillation technique (born-again networks). References: the distillation loss written out from its
definition with elementary torch ops on fixed logits (softmax as exp / sum, KL as sum p (log p - log q), the T^2
factor, the cross-entropy as -log q_y), its autograd gradient and the closed form T (q - p) / B of the soft term's
gradient (Hinton et al. 2015, section 2.1); a saved run as the teacher, and the refusal of a teacher of another
architecture."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.errors import ConfigError
from tricklab.losses.distillation import distillation_loss
from tricklab.models import build_model
from tricklab.techniques import SelfDistillation
from tricklab.train import Technique, Trainer, TrainState


def written_formula(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, temp: float, alpha: float) -> torch.Tensor:
    """alpha T^2 mean_b sum_c p_c (log p_c - log q_c) + (1 - alpha) mean_b (-log softmax(s)_y), from exp and log."""
    def softmax(z: torch.Tensor) -> torch.Tensor:
        e = torch.exp(z - z.max(1, keepdim=True).values)
        return e / e.sum(1, keepdim=True)

    p, q = softmax(t / temp), softmax(s / temp)
    kl = (p * (torch.log(p) - torch.log(q))).sum(1)
    ce = -torch.log(softmax(s)[torch.arange(len(y)), y])
    return alpha * temp ** 2 * kl.mean() + (1 - alpha) * ce.mean()


@pytest.mark.parametrize("temp, alpha", [(1.0, 1.0), (4.0, 1.0), (2.0, 0.5), (3.0, 0.0)])
def test_the_loss_on_fixed_logits_is_the_written_formula_outputs_and_gradients(temp: float, alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    s0, t = 3 * torch.randn(16, 7, generator=g, dtype=torch.float64), 3 * torch.randn(16, 7, generator=g,
                                                                                        dtype=torch.float64)
    y = torch.randint(0, 7, (16,), generator=g)
    s1, s2 = s0.clone().requires_grad_(), s0.clone().requires_grad_()
    ours, ref = distillation_loss(s1, t, y, temp, alpha), written_formula(s2, t, y, temp, alpha)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-10, atol=1e-12)
    if alpha == 1.0:  # closed form: d/ds_i of T^2 KL = T (q_i - p_i), averaged over the batch
        q, p = torch.softmax(s0 / temp, 1), torch.softmax(t / temp, 1)
        torch.testing.assert_close(s1.grad, temp * (q - p) / len(y), rtol=1e-10, atol=1e-12)


class Probe(Technique):
    """Records the student's outputs and the loss the technique set."""

    name = "probe"
    reads = frozenset({"loss", "batch.outputs"})

    def __init__(self) -> None:
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def on_loss(self, state: TrainState) -> None:
        state.outputs.retain_grad()
        self.seen.append((state.inputs, state.outputs, state.targets, state.loss))


def test_in_the_trainer_the_student_of_the_same_architecture_trains_on_the_formula() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 4, (32,), generator=g)
    torch.manual_seed(0)
    teacher = build_model("mlp", (10,), 4, hidden=8).requires_grad_(False).eval()
    student = build_model("mlp", (10,), 4, hidden=8)  # another initialisation of the same architecture
    probe = Probe()
    Trainer(student, torch.optim.SGD(student.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[SelfDistillation(teacher, temperature=2.0, alpha=0.7), probe], max_steps=2,
            log_every=1).fit()
    assert len(probe.seen) == 2
    for inputs, outputs, targets, loss in probe.seen:
        s = outputs.detach().double().requires_grad_()
        ref = written_formula(s, teacher(inputs).double(), targets, 2.0, 0.7)
        ref.backward()
        assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)
        torch.testing.assert_close(outputs.grad.double(), s.grad, rtol=1e-4, atol=1e-8)


def _save_run(folder: Path, hidden: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model("mlp", (1, 8, 8), 10, hidden=hidden)
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"task": "digits", "model": {"name": "mlp",
                                                                                   "args": {"hidden": hidden}}}))
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    return model


def test_the_previous_generation_from_a_saved_run_and_another_architecture_refused(tmp_path: Path) -> None:
    previous = _save_run(tmp_path / "gen0", hidden=12, seed=3)
    _save_run(tmp_path / "wide", hidden=16, seed=3)
    x = torch.randn(5, 1, 8, 8)
    torch.manual_seed(4)
    student = build_model("mlp", (1, 8, 8), 10, hidden=12)
    state = TrainState(model=student, optimizer=torch.optim.SGD(student.parameters(), lr=0.1),
                       loss_fn=nn.functional.cross_entropy, device=torch.device("cpu"))
    technique = SelfDistillation(str(tmp_path / "gen0"))
    assert (technique.temperature, technique.alpha) == (1.0, 1.0)  # born-again: the teacher's distribution alone
    technique.on_fit_start(state)
    assert torch.equal(technique.teacher(x), previous(x).detach())
    with pytest.raises(ConfigError, match=r"own architecture, but 'net.0.weight' is \(16, 64\) in the teacher "
                                          r"and \(12, 64\) in the student.*distillation technique"):
        SelfDistillation(str(tmp_path / "wide")).on_fit_start(state)
    with pytest.raises(ConfigError, match="self_distillation alpha"):
        SelfDistillation(previous, alpha=2.0)
