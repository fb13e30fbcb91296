"""Diagnostics: functional core against NumPy, the technique's records against a re-computation from probe
copies of the model, vanishing / exploding flags, hooks only on recording steps, the JSON file, and exact resume.

References: NumPy mean / std(ddof=0) / histogram(bins, range=(min, max)) (activation_stats); a slow loop over
units (dead_fraction); numpy.linalg.norm (grad_stats); the uninterrupted run (resume). The statistics are
computed on detached tensors (they must not enter autograd), which the tests assert instead of gradients.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import Checkpointing, GradAccumulation, GradClip
from tricklab.techniques.diagnostics import (
    Diagnostics,
    activation_stats,
    dead_fraction,
    grad_stats,
    gradient_flag,
)
from tricklab.train import Technique, Trainer, plan
from tricklab.train.checkpoint import flatten_state, unflatten_state


# ---------------------------------------------------------------------------------------------- functional
@pytest.mark.parametrize("shape", [(64,), (8, 5, 3)])
def test_activation_stats_match_numpy(shape: tuple[int, ...]) -> None:
    """Reference: np.mean, np.std (ddof=0), np.histogram(x, bins=7, range=(min, max)) in float64."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64, requires_grad=True)
    s = activation_stats(x, bins=7)
    xn = x.detach().numpy().ravel()
    counts, edges = np.histogram(xn, bins=7, range=(xn.min(), xn.max()))
    assert s["mean"] == pytest.approx(xn.mean(), rel=1e-6, abs=1e-7)
    assert s["std"] == pytest.approx(xn.std(), rel=1e-6)
    assert s["hist_range"] == pytest.approx([edges[0], edges[-1]], rel=1e-6)
    assert s["hist_counts"] == counts.tolist() and sum(s["hist_counts"]) == xn.size
    assert x.grad is None  # nothing entered autograd


def test_activation_stats_edge_cases() -> None:
    """Constant tensor: range v +- 0.5 with every count in one bin (np.histogram's rule for an empty range);
    non-finite entries are left out of every statistic."""
    s = activation_stats(torch.full((10,), 3.0), bins=4)
    assert s["std"] == 0 and s["hist_range"] == [2.5, 3.5] and sum(s["hist_counts"]) == 10
    assert s["hist_counts"] == np.histogram(np.full(10, 3.0), bins=4, range=(2.5, 3.5))[0].tolist()
    t = torch.tensor([1.0, 2.0, float("nan"), float("inf"), 3.0])
    s = activation_stats(t, bins=2)
    assert s["mean"] == pytest.approx(2.0) and sum(s["hist_counts"]) == 3
    with pytest.raises(ValueError, match="bins"):
        activation_stats(t, bins=0)
    with pytest.raises(TypeError):
        activation_stats([1.0])  # type: ignore[arg-type]


def _dead_loop(a: np.ndarray) -> float:
    """Slow reference: a unit (index of dim 1) is dead iff every entry of a[:, unit, ...] is <= 0."""
    dead = 0
    for u in range(a.shape[1]):
        dead += int(all(v <= 0 for v in a[:, u].ravel()))
    return dead / a.shape[1]


@pytest.mark.parametrize("shape", [(6, 10), (3, 8, 4, 4), (5, 12, 7)])
def test_dead_fraction_matches_slow_loop(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.relu(torch.randn(*shape, generator=g) - 1.2)  # many units never fire
    x[:, 0] = 0.0  # one unit surely dead
    assert dead_fraction(x) == pytest.approx(_dead_loop(x.numpy()))
    assert 0 < dead_fraction(x) < 1
    with pytest.raises(ValueError, match="batch"):
        dead_fraction(torch.zeros(5))


def test_grad_stats_match_numpy_norms() -> None:
    """Reference: numpy.linalg.norm of each .grad and each weight (flattened), and their ratio."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    nn.init.zeros_(m[1].bias)
    m(torch.randn(5, 4)).pow(2).sum().backward()
    m[0].bias.grad = None  # a parameter without a gradient is skipped
    s = grad_stats(m)
    assert set(s) == {"0.weight", "1.weight", "1.bias"}
    for name, p in m.named_parameters():
        if name not in s:
            continue
        g, w = np.linalg.norm(p.grad.numpy().ravel()), np.linalg.norm(p.detach().numpy().ravel())
        assert s[name]["grad_norm"] == pytest.approx(g, rel=1e-6)
        assert s[name]["weight_norm"] == pytest.approx(w, rel=1e-6, abs=1e-12)
        if w > 0:
            assert s[name]["ratio"] == pytest.approx(g / w, rel=1e-6)
    assert s["1.bias"]["ratio"] is None  # zero weight norm: no ratio, not inf


def test_gradient_flag_thresholds() -> None:
    """Reference: r = first / last against the thresholds, written out."""
    assert gradient_flag(1e-4, 1.0) == ("vanishing", pytest.approx(1e-4))
    assert gradient_flag(500.0, 1.0) == ("exploding", pytest.approx(500.0))
    assert gradient_flag(0.5, 1.0) == ("ok", pytest.approx(0.5))
    assert gradient_flag(0.5, 1.0, vanish_ratio=0.9, explode_ratio=10)[0] == "vanishing"
    assert gradient_flag(1.0, 0.0) == ("ok", None)
    assert gradient_flag(math.inf, 1.0) == ("exploding", None)
    with pytest.raises(ValueError):
        gradient_flag(1.0, 1.0, vanish_ratio=10, explode_ratio=1)


# ---------------------------------------------------------------------------------------------- technique
class Probe(Technique):
    """Test probe: at each forward, a copy of the parameters and the batch, and the hooks present."""

    name = "probe"
    reads = frozenset({"params", "batch.inputs"})

    def __init__(self) -> None:
        self.params: list[dict[str, torch.Tensor]] = []
        self.inputs: list[torch.Tensor] = []
        self.hooks: list[int] = []

    def on_forward(self, state) -> None:
        self.params.append({k: v.detach().clone() for k, v in state.raw_model.state_dict().items()})
        self.inputs.append(state.inputs.detach().clone())
        self.hooks.append(sum(len(m._forward_hooks) for m in state.raw_model.modules()))


def _data(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


def _fit(techniques, max_steps: int = 5, seed: int = 0, **kw) -> tuple[Trainer, nn.Module]:
    model = _model(seed)
    x, y = _data()
    torch.manual_seed(123)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 8, seed=1),
                techniques=techniques, max_steps=max_steps, **kw)
    t.fit()
    return t, model


def test_records_match_recomputation_from_probe_copies() -> None:
    """Reference: for each recording step, the probe's copy of the weights and batch is re-run with
    activation_stats / dead_fraction on each layer's output, and backward gives grad_stats."""
    diag, probe = Diagnostics(every=2, bins=5), Probe()
    _, model = _fit([diag, probe], max_steps=5)
    rec = diag.records
    assert rec["steps"] == [0, 2, 4]
    assert list(rec["layers"]) == ["0", "1", "2", "3", "4"]  # forward order of the leaf layers
    assert rec["layers"]["1"]["kind"] == "ReLU" and "dead_fraction" in rec["layers"]["1"]
    assert "dead_fraction" not in rec["layers"]["3"]  # Tanh is not in the ReLU family
    assert probe.hooks[0] == 5 and probe.hooks[1] == 0 and probe.hooks[2] == 5  # hooks on recording steps only
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # removed at the end

    x, y = _data()
    for i, step in enumerate(rec["steps"]):
        ref = _model()
        ref.load_state_dict(probe.params[step])
        outs: dict[str, torch.Tensor] = {}
        for name, m in ref.named_children():
            m.register_forward_hook(lambda _m, _i, o, n=name: outs.__setitem__(n, o.detach()))
        nn.functional.cross_entropy(ref(probe.inputs[step]), _targets_of(probe.inputs[step], x, y)).backward()
        for name, o in outs.items():
            s = activation_stats(o, bins=5)
            entry = rec["layers"][name]
            assert entry["steps"][i] == step
            assert entry["mean"][i] == pytest.approx(s["mean"], rel=1e-5, abs=1e-7)
            assert entry["std"][i] == pytest.approx(s["std"], rel=1e-5)
            assert entry["hist_counts"][i] == s["hist_counts"]
            if "dead_fraction" in entry:
                assert entry["dead_fraction"][i] == pytest.approx(dead_fraction(o))
        for name, s in grad_stats(ref).items():
            assert rec["params"][name]["grad_norm"][i] == pytest.approx(s["grad_norm"], rel=1e-5)
            assert rec["params"][name]["weight_norm"][i] == pytest.approx(s["weight_norm"], rel=1e-6)
    assert [f["step"] for f in rec["gradient_flags"]] == [0, 2, 4]
    assert rec["gradient_flags"][0]["first"] == "0" and rec["gradient_flags"][0]["last"] == "4"


def _targets_of(batch: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # the loader shuffles: find each row of the batch in the data set to get its label
    idx = [int(torch.nonzero((x == row).all(dim=1))[0]) for row in batch]
    return y[idx]


def test_vanishing_gradient_is_flagged_in_a_deep_plain_mlp() -> None:
    """A 30-layer plain ReLU MLP with torch's default init: the first layer's gradient is orders of magnitude
    below the last one's (Glorot & Bengio 2010); a 3-layer one is 'ok'."""
    from tricklab.models.plain_mlp import PlainMLP

    x, y = _data()
    for depth, expected in ((30, "vanishing"), (3, "ok")):
        torch.manual_seed(0)
        model = PlainMLP(6, 3, depth=depth, width=32)
        diag = Diagnostics(every=1)
        Trainer(model, torch.optim.SGD(model.parameters(), lr=0.01), InMemoryLoader(x, y, 16, seed=0),
                techniques=[diag], max_steps=1).fit()
        flag = diag.records["gradient_flags"][0]
        assert flag["status"] == expected, flag
        assert flag["first"] == "net.0" and flag["last"] == f"net.{2 * (depth - 1)}"


def test_exploding_ratio_is_flagged() -> None:
    """A tiny first layer makes the last layer's input ~0, so its gradient dL/dW_L = delta h^T is ~0 while
    the first layer's is not: r = ||g_1|| / ||g_L|| >> explode_ratio."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].weight.mul_(1e-4)
    diag = Diagnostics(every=1)
    x, y = _data()
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.0), InMemoryLoader(x, y, 16, seed=0),
            techniques=[diag], max_steps=1).fit()
    assert diag.records["gradient_flags"][0]["status"] == "exploding"


def test_json_file_written_at_fit_end(tmp_path) -> None:
    diag = Diagnostics(every=3)
    _fit([diag], max_steps=4, run_dir=tmp_path)
    on_disk = json.loads((tmp_path / "diagnostics.json").read_text())
    assert on_disk == diag.records and on_disk["steps"] == [0, 3]


def test_gradient_accumulation_records_once_per_step() -> None:
    diag, probe = Diagnostics(every=1), Probe()
    _fit([diag, probe, GradAccumulation(steps=2)], max_steps=2)
    assert diag.records["steps"] == [0, 1]
    assert probe.hooks == [5, 0, 5, 0]  # hooks on the first micro-batch of each step only
    assert all(len(e["mean"]) == 2 for e in diag.records["layers"].values())


def test_resume_gives_identical_records(tmp_path) -> None:
    """Reference: the uninterrupted 7-step run; stopped at step 3 and resumed by a fresh process, the records
    (restored from the checkpoint, then extended) must be equal."""
    ref = Diagnostics(every=2)
    _fit([ref], max_steps=7)
    first = Diagnostics(every=2)
    _fit([first, Checkpointing(every_steps=1, folder=str(tmp_path))], max_steps=3)
    resumed = Diagnostics(every=2)
    model = _model(seed=99)
    x, y = _data()
    torch.manual_seed(5)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), InMemoryLoader(x, y, 8, seed=1),
            techniques=[resumed, Checkpointing(every_steps=1, folder=str(tmp_path))],
            max_steps=7).fit(resume_from=tmp_path)
    assert resumed.records == ref.records and resumed.records["steps"] == [0, 2, 4, 6]


def test_state_dict_round_trip_through_checkpoint_format() -> None:
    diag = Diagnostics(every=2)
    _fit([diag], max_steps=3)
    sd = diag.state_dict()
    fresh = Diagnostics(every=2)
    fresh.load_state_dict(unflatten_state(*flatten_state(sd)))
    assert fresh.state_dict() == sd
    with pytest.raises(ValueError, match="records"):
        fresh.load_state_dict({"records": []})


def test_declarations_and_bad_arguments() -> None:
    assert Diagnostics.writes == frozenset() and {"params", "grads.recomputed"} <= Diagnostics.reads
    plan([Diagnostics()])
    # raw gradients: diagnostics runs before a gradient writer such as grad_clip (declared ``before``)
    p = plan([GradClip(max_norm=1.0), Diagnostics()])
    assert p.order["after_backward"] == (1, 0)
    for kwargs in ({"every": 0}, {"every": 1.5}, {"bins": 0}, {"vanish_ratio": 10.0, "explode_ratio": 1.0}):
        with pytest.raises(ValueError):
            Diagnostics(**kwargs)
