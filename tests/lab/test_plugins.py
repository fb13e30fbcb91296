"""Models, data and techniques from the user's code: ``module:attribute`` references and entry-point plugins
(``tricklab.models``, ``tricklab.datasets``, ``tricklab.techniques``, ``tricklab.tasks``), end to end through
``tricklab ablate``, and the clear errors for a missing module, attribute, argument or a wrong return type.

References: the arrays the user's function returns (what the lab loads must equal them), the parameter count
of the user's factory called directly, and the store's rows (what ran)."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tricklab.data import DATASETS, load_dataset
from tricklab.errors import ConfigError, UnknownNameError
from tricklab.lab.recipe import recipe_from_dict
from tricklab.lab.runner import run
from tricklab.lab.store import Store
from tricklab.lab.tasks import TASKS
from tricklab.models import MODELS, build_model
from tricklab.techniques import TECHNIQUES

USER_CODE = '''
import numpy as np
import torch
from torch import nn

from tricklab.train.technique import Technique


def make_net(input_shape, num_classes, width=16):
    """A user's MLP factory, called like the registered ones."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.ReLU(),
                         nn.Linear(width, num_classes))


class Net(nn.Module):
    """An nn.Module class whose constructor takes its sizes by keyword."""

    def __init__(self, input_shape, num_classes, hidden=4):
        super().__init__()
        self.fc = nn.Linear(int(np.prod(input_shape)), num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def make_data(n=200, seed=0):
    """Two Gaussian features, a class from their sum: (x, y) arrays."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


class PairSet(torch.utils.data.Dataset):
    """A torch Dataset of (input, target) pairs."""

    def __init__(self, n=60):
        self.x = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3)
        self.y = torch.arange(n) % 3

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def make_datasets():
    return PairSet(60), PairSet(15)


def not_a_model(input_shape, num_classes):
    return "a string"


class Ragged(torch.utils.data.Dataset):
    """Item 3's input has another shape."""

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return torch.zeros(4 if i == 3 else 3), 0


def singles():
    return [1, 2, 3]


class Halve(Technique):
    """Halve the loss (a technique class of the user's code)."""

    name = "halve"
    writes = frozenset({"loss"})

    def on_loss(self, state):
        state.loss = state.loss * 0.5


class BadSlots(Halve):
    name = "bad_slots"
    writes = frozenset({"no_such_slot"})


CONSTANT = 3
'''

PLUGIN_CODE = '''
from typing import ClassVar

import numpy as np
from torch import nn

from tricklab.train.technique import Technique


def make_net(input_shape, num_classes, width=8):
    """plugin MLP from the userplug package."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), width), nn.Tanh(),
                         nn.Linear(width, num_classes))


class PlugScale(Technique):
    """Scale the loss by a factor (a plugin technique)."""

    name: ClassVar[str] = "plug_scale"
    writes = frozenset({"loss"})

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = float(factor)

    def on_loss(self, state) -> None:
        state.loss = state.loss * self.factor


def load_data(n=160):
    """plugin data: a class from the sign of the first feature."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)
'''

ENTRY_POINTS = """
[tricklab.models]
plugnet = userplug:make_net

[tricklab.techniques]
plug_scale = userplug:PlugScale

[tricklab.datasets]
plugdata = userplug:load_data
"""


def cli(*args: str) -> tuple[int, str, str]:
    from tricklab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's module ``usernets`` in a folder on sys.path (spawned workers inherit sys.path)."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "usernets.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package ``userplug`` as pip installs it: the module and a .dist-info folder whose entry_points.txt
    registers a model, a technique and a data set, in a site folder put on sys.path."""
    site = tmp_path / "site"
    (site / "userplug").mkdir(parents=True)
    (site / "userplug" / "__init__.py").write_text(PLUGIN_CODE)
    info = site / "userplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: userplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    yield site
    for registry, name in ((MODELS, "plugnet"), (TECHNIQUES, "plug_scale"), (DATASETS, "plugdata")):
        registry.unregister(name)  # no plugin leaks into the registries other tests sweep


def _recipe(folder: Path, body: str) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(textwrap.dedent(body) + "budget: {steps: 30}\nbatch_size: 32\neval_every: 15\nlog_every: 15\n"
                    "threads: 1\nseeds: [0, 1]\n")
    return path


def _done(out: Path) -> dict[str, list[int]]:
    store = Store(out / "store.sqlite")
    try:
        rows = store.runs(status="done")
    finally:
        store.close()
    found: dict[str, list[int]] = {}
    for r in rows:
        found.setdefault(r.variant, []).append(r.seed)
    return {k: sorted(v) for k, v in found.items()}


# ----------------------------------------------------------------------------------- module:attribute
def test_data_from_code_equals_what_the_function_returns(user_code: Path) -> None:
    """Reference: make_data's own arrays. Every row lands in exactly one split, unchanged (no scaling by
    default), and the split is stratified and recorded."""
    x, y = __import__("usernets").make_data(n=120)
    ds = load_dataset("files", code="usernets:make_data", code_args={"n": 120})
    got_x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()])
    got_y = np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()])
    order, ref = np.lexsort(got_x.T[::-1]), np.lexsort(x.T[::-1])
    np.testing.assert_array_equal(got_x[order], x[ref])
    np.testing.assert_array_equal(got_y[order], y[ref])
    assert len(ds.x_test) == 24 and ds.meta["split"]["method"] == "stratified"
    assert ds.meta["target_kind"] == "multiclass" and ds.num_classes == 2

    # a torch Dataset pair (train, test) is read item by item into the same arrays
    pairs = load_dataset("files", code="usernets:make_datasets")
    assert pairs.x_train.shape == (60, 3) and pairs.x_test.shape == (15, 3) and pairs.num_classes == 3
    np.testing.assert_array_equal(pairs.x_train.numpy(), np.arange(180, dtype=np.float32).reshape(60, 3))
    # the fingerprint follows the data: other arguments, other arrays, another fingerprint
    other = load_dataset("files", code="usernets:make_data", code_args={"n": 120, "seed": 1})
    assert other.fingerprint() != ds.fingerprint()


@pytest.mark.slow  # an ablation in worker processes (about a minute on 2 shared cores)
def test_a_module_attribute_model_and_data_run_through_ablate(user_code: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, """\
        data: {code: "usernets:make_data", code_args: {n: 200}}
        model: {name: "usernets:make_net", args: {width: 8}}
        """)
    out = tmp_path / "ablation"
    code, stdout, err = cli("ablate", str(recipe), "--techniques", "grad_clip", "--seeds", "2", "--jobs", "2",
                            "--out", str(out))
    assert code == 0, err + stdout
    assert _done(out) == {"baseline": [0, 1], "baseline-repeat": [0, 1], "grad_clip": [0, 1]}
    card = json.loads((out / "cards" / "grad_clip.json").read_text())
    assert card["setting"]["model"] == "usernets:make_net"
    params = {e["metric"]: e for e in card["effects"]}["parameters"]
    reference = sum(p.numel() for p in __import__("usernets").make_net((5,), 2, width=8).parameters())
    assert params["baseline_mean"] == reference == 5 * 8 + 8 + 8 * 2 + 2


def test_an_nn_module_class_is_a_factory(user_code: Path) -> None:
    net = build_model("usernets:Net", (5,), 3)
    assert type(net).__name__ == "Net" and net.fc.out_features == 3


@pytest.mark.parametrize(("override", "message"), [
    ("model.name=nosuchmodule:make", "no module named 'nosuchmodule'"),
    ("model.name=usernets:make_nett", "usernets has no attribute 'make_nett'; it has: "),
    ("model.name=usernets:CONSTANT", "is a int, not a factory"),
    ("model.args={depth: 3}", "unexpected keyword argument 'depth'; model 'usernets:make_net' accepts: width=16"),
    ("data.code_args={m: 3}", "data.code 'usernets:make_data': got an unexpected keyword argument 'm'"),
    ("data.code=usernets:nothing", "usernets has no attribute 'nothing'"),
])
def test_bad_references_exit_2_before_any_run(user_code: Path, tmp_path: Path, override: str, message: str) -> None:
    recipe = _recipe(tmp_path, """\
        data: {code: "usernets:make_data"}
        model: {name: "usernets:make_net"}
        """)
    out = tmp_path / "ablation"
    code, _, err = cli("ablate", str(recipe), override, "--techniques", "", "--seeds", "1", "--out", str(out))
    assert code == 2, err
    assert message in err
    assert not (out / "store.sqlite").exists()  # refused before the store was made


def test_a_factory_that_returns_no_module_is_a_config_error(user_code: Path, tmp_path: Path) -> None:
    recipe = recipe_from_dict({"data": {"code": "usernets:make_data"}, "model": "usernets:not_a_model",
                               "budget": 1, "threads": 1, "progress": False})
    with pytest.raises(ConfigError, match="returned a str, not a torch.nn.Module"):
        run(recipe, out=tmp_path / "run")


def test_bad_data_from_code_names_the_item(user_code: Path) -> None:
    from tricklab.errors import DataError

    with pytest.raises(DataError, match="item 3 has input shape \\(4,\\), item 0 \\(3,\\)"):
        load_dataset("files", code="usernets:Ragged")
    with pytest.raises(DataError, match="returned a list; data from code must be"):
        load_dataset("files", code="usernets:singles")
    with pytest.raises(ConfigError, match="not a function: code_args"):
        load_dataset("files", code="usernets:CONSTANT", code_args={"n": 1})


def test_a_technique_class_of_the_users_code(user_code: Path) -> None:
    from tricklab.lab.grammar import parse_technique

    spec = parse_technique("usernets:Halve")
    assert (spec.name, spec.args) == ("usernets:Halve", {})
    spec = parse_technique("ema:decay=0.9")
    assert (spec.name, spec.args) == ("ema", {"decay": 0.9})
    assert TECHNIQUES.get("usernets:Halve").name == "halve"
    with pytest.raises(ConfigError, match="unknown writes slot"):
        TECHNIQUES.get("usernets:BadSlots")
    with pytest.raises(ConfigError, match="not a Technique subclass"):
        TECHNIQUES.get("usernets:make_net")


# ---------------------------------------------------------------------------------------- entry points
def test_plugins_are_listed_and_resolved(plugin: Path) -> None:
    code, listed, _ = cli("list", "models")
    assert code == 0 and "plugnet" in listed and "plugin MLP from the userplug package" in listed
    assert "userplug" in listed
    assert "plug_scale" in TECHNIQUES.names() and "plugdata" in DATASETS.names()
    assert TASKS.get("plugdata").dataset == "plugdata"  # a plugin's data set is a task of its name
    with pytest.raises(UnknownNameError, match="plugnett.*did you mean 'plugnet'"):
        MODELS.get("plugnett")


@pytest.mark.slow  # an ablation in worker processes (about a minute on 2 shared cores)
def test_an_entry_point_plugin_runs_through_ablate(plugin: Path, tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, """\
        task: plugdata
        model: {name: plugnet}
        """)
    out = tmp_path / "ablation"
    code, stdout, err = cli("ablate", str(recipe), "--techniques", "plug_scale:factor=0.5", "--seeds", "2",
                            "--jobs", "2", "--out", str(out))
    assert code == 0, err + stdout
    assert _done(out) == {"baseline": [0, 1], "baseline-repeat": [0, 1], "plug_scale(factor=0.5)": [0, 1]}
    card = json.loads((out / "cards" / "plug_scale_factor=0.5_.json").read_text())
    assert card["setting"]["task"] == "plugdata" and card["setting"]["model"] == "plugnet"


def test_a_broken_plugin_names_its_distribution(plugin: Path) -> None:
    (plugin / "userplug-0.1.dist-info" / "entry_points.txt").write_text("[tricklab.models]\nbroken = userplug:gone\n")
    MODELS.plugins(refresh=True)
    with pytest.raises(ConfigError, match=r"'broken'.*distribution 'userplug'\) failed to load"):
        MODELS.get("broken")
    code, listed, _ = cli("list", "models")
    assert code == 0 and "failed to load" in listed  # the listing still shows the others
