"""LR range test: suggestions on synthetic curves against closed forms, the MNIST-1D sweep end to end, exact
restoration of the model, optimizer, loader and RNG, and the CLI entry point.

References: for the synthetic curve L(x) = 2 - tanh((x - x0)/w) + 5 max(0, x - x1)^2 with x = log10 lr, the
analytic steepest point x0 (dL/dx = -sech^2((x - x0)/w)/w is most negative there); for a plateau, a linear
descent and a rise, the valley index computed by hand; the bias-
corrected EMA written out in NumPy.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.lab import lr_find as lf
from tricklab.lab.recipe import load_recipe


def test_suggest_steepest_on_a_synthetic_curve() -> None:
    x = np.linspace(-7, 1, 401)  # log10 lr, step 0.02
    x0 = -3.1
    losses = 2 - np.tanh((x - x0) / 0.5) + 5 * np.maximum(0.0, x + 0.5) ** 2
    s = lf.suggest(10.0**x, losses)
    assert abs(math.log10(s["steepest"]) - x0) <= 0.02 + 1e-9
    # valley: between the start of the fall (where tanh has dropped 10%) and the minimum
    i_min = int(np.argmin(losses))
    assert 10.0 ** (x0 - 1.0) < s["valley"] < 10.0 ** x[i_min]
    assert s["min_div10"] == pytest.approx(10.0 ** x[i_min] / 10)


def test_suggest_valley_is_the_middle_of_the_descent_not_of_a_drifting_plateau() -> None:
    """Hand-computed: plateau drifting 2.31 -> 2.30 (indices 0-49), linear descent to 2.0 (50-70), rise after.
    The descent starts at the last index with loss >= 2.0 + 0.9 * 0.31 = 2.279, i.e. k = 1 (index 51), so the
    valley is index 51 + (70 - 51) // 2 = 60; the steepest point lies inside the descent."""
    plateau = np.linspace(2.31, 2.30, 50)
    descent = 2.30 - 0.3 * np.arange(1, 21) / 20
    rise = 2.0 + 0.5 * np.arange(1, 10)
    y = np.concatenate([plateau, [2.30], descent, rise])
    assert int(np.argmin(y)) == 70
    lrs = np.logspace(-7, 1, len(y))
    s = lf.suggest(lrs, y)
    assert s["valley"] == pytest.approx(lrs[60])
    assert lrs[50] <= s["steepest"] <= lrs[70]


def test_suggest_too_short_or_non_finite() -> None:
    assert lf.suggest([1e-3, 1e-2], [1.0, 0.5]) == {"steepest": None, "valley": None, "min_div10": None}
    s = lf.suggest([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [3.0, 2.0, 1.0, float("inf"), float("nan")])
    assert s["min_div10"] == pytest.approx(1e-3)  # the curve ends before the first non-finite point



def _small_setup(seed: int = 0):
    from tricklab.data import InMemoryLoader

    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Dropout(0.2), torch.nn.Linear(16, 3))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return model, opt, InMemoryLoader(x, y, 16, seed=1)


def test_range_test_smoothing_stop_and_exact_restore() -> None:
    """References: bias-corrected EMA recomputed in NumPy from the raw losses; geometric lr grid in closed form;
    parameters, buffers, optimizer state, loader position and RNG compared bit for bit before/after."""
    model, opt, loader = _small_setup()
    # non-trivial optimizer state first: two Adam steps
    for _ in range(2):
        bx, by = loader.next_batch()
        torch.nn.functional.cross_entropy(model(bx), by).backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_opt = opt.state_dict()
    before_state = {k: {n: t.clone() for n, t in s.items() if torch.is_tensor(t)}
                    for k, s in before_opt["state"].items()}
    before_pos = (loader.epoch, loader.batch_index)
    before_rng = torch.get_rng_state().clone()

    res = lf.lr_range_test(model, opt, loader, torch.nn.functional.cross_entropy, start_lr=1e-5, end_lr=100.0,
                           num_steps=40, smooth=0.9, diverge=3.0)
    n = len(res["lrs"])
    np.testing.assert_allclose(res["lrs"], 1e-5 * (1e7) ** (np.arange(n) / 39), rtol=1e-12)
    a, ref = 0.0, []
    for i, v in enumerate(res["losses"]):
        a = 0.9 * a + 0.1 * v
        ref.append(a / (1 - 0.9 ** (i + 1)))
    np.testing.assert_allclose(res["smoothed"], ref, rtol=1e-12)
    assert res["stopped_early"] and n < 40  # lr up to 100 with Adam: the loss blows up and the sweep stops
    last = res["smoothed"][-1]
    assert not math.isfinite(last) or last > 3.0 * min(res["smoothed"][:-1])

    assert all(torch.equal(v, before_model[k]) for k, v in model.state_dict().items())
    after_opt = opt.state_dict()
    assert after_opt["param_groups"] == before_opt["param_groups"]
    for k, s in before_state.items():
        for name, t in s.items():
            assert torch.equal(after_opt["state"][k][name], t), (k, name)
    assert (loader.epoch, loader.batch_index) == before_pos
    assert torch.equal(torch.get_rng_state(), before_rng)
    assert not model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())


def test_range_test_argument_checks() -> None:
    model, opt, loader = _small_setup()
    for kw in ({"start_lr": 1.0, "end_lr": 0.1}, {"num_steps": 2}, {"smooth": 1.0}, {"diverge": 1.0}):
        with pytest.raises(ConfigError):
            lf.lr_range_test(model, opt, loader, torch.nn.functional.cross_entropy, **kw)


def test_lr_find_on_mnist1d_default_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["threads=1"])
    res = lf.lr_find(recipe, tmp_path, num_steps=60)
    s = res["suggestions"]
    for key in ("steepest", "valley", "min_div10"):
        assert s[key] is not None and math.isfinite(s[key]) and 1e-7 <= s[key] <= 10.0, (key, s[key])
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    assert (tmp_path / "lr_find.svg").read_text().lstrip().startswith("<?xml")
    data = json.loads((tmp_path / "lr_find.json").read_text())
    assert data["suggestions"] == pytest.approx(s)
    assert len(data["lrs"]) == len(data["losses"]) == len(res["lrs"]) <= 60
    assert data["recipe"]["task"] == "mnist1d"


def test_cli_entry_point(tmp_path: Path) -> None:
    from tricklab import cli

    args = cli.build_parser().parse_args(["lr-find", "budget.steps=10", "--out", str(tmp_path / "o"), "--steps",
                                          "12", "--start-lr", "1e-5", "--end-lr", "1"])
    assert args.func is cli.cmd_lr_find
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    text = out.getvalue()
    assert "steepest descent" in text and "valley" in text
    assert (tmp_path / "o" / "lr_find.json").is_file()
    data = json.loads((tmp_path / "o" / "lr_find.json").read_text())
    assert data["start_lr"] == 1e-5 and data["recipe"]["budget"]["steps"] == 10
