"""A saved lab run as a backbone.

References: the lab's own test evaluation of the run (``summary.json``: accuracy and the confusion matrix it
computed at the end of training) reproduced from the loaded model, so the weights are the trained ones and the
model is rebuilt exactly; the final checkpoint's weights against ``model.safetensors`` read by safetensors; after
``replace_head`` the head's input (captured by a forward hook) is unchanged, only the head is new.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from tricklab.data import load_dataset
from tricklab.errors import ConfigError, UserError
from tricklab.transfer.from_run import backbone_from_run, load_run_model, replace_head


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mnist1d")
    from tricklab.lab.recipe import load_recipe
    from tricklab.lab.runner import run

    out = tmp_path_factory.mktemp("saved") / "run"
    recipe = load_recipe(None, ["task=mnist1d", "model.name=mlp", "budget.steps=6", "eval_every=3", "log_every=3",
                                "progress=false", "threads=1", "checkpoint.every_steps=3", "techniques=[]"])
    run(recipe, out=out)
    return out


def test_loaded_model_reproduces_the_runs_own_test_evaluation(run_dir: Path) -> None:
    saved = load_run_model(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())["test"]
    ds = load_dataset("mnist1d")
    saved.model.eval()
    with torch.no_grad():
        pred = saved.model(ds.x_test).argmax(1)
    assert int((pred == ds.y_test).sum()) == round(summary["accuracy"] * len(ds.y_test))
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((ds.y_test, pred), torch.ones_like(pred), accumulate=True)
    assert confusion.tolist() == summary["confusion_matrix"]
    assert saved.input_shape == (40,) and saved.num_classes == 10 and saved.weights.name == "model.safetensors"


def test_checkpoint_weights_equal_the_final_weights_at_the_last_step(run_dir: Path) -> None:
    final = load_file(str(run_dir / "model.safetensors"))
    latest = load_run_model(run_dir, weights="checkpoint")
    assert latest.weights.name == "step-00000006.json"
    for name, tensor in latest.model.state_dict().items():
        assert torch.equal(tensor, final[name]), name
    earlier = load_run_model(run_dir, weights="checkpoint", checkpoint="step-00000003.json").model.state_dict()
    assert any(not torch.equal(earlier[n], final[n]) for n in final)  # three steps earlier: other weights


def test_new_head_keeps_the_backbone(run_dir: Path) -> None:
    saved = load_run_model(run_dir).model
    model = backbone_from_run(run_dir, num_classes=4)
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert heads[-1].out_features == 4
    seen: dict[str, torch.Tensor] = {}
    x = load_dataset("mnist1d").x_test[:16]
    for name, net in (("saved", saved), ("new", model)):
        last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        hook = last.register_forward_hook(lambda m, inp, out, name=name: seen.__setitem__(name, inp[0].detach()))
        net.eval()(x)
        hook.remove()
    torch.testing.assert_close(seen["new"], seen["saved"], rtol=0, atol=0)


def test_bad_folders_and_arguments_are_refused(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no recipe.yaml"):
        load_run_model(tmp_path)
    with pytest.raises(ConfigError, match="weights"):
        load_run_model(run_dir, weights="best")
    with pytest.raises(ConfigError, match="checkpoint"):
        load_run_model(run_dir, checkpoint="step-00000003.json")
    with pytest.raises(UserError, match="model.eval.safetensors is missing"):
        load_run_model(run_dir, weights="eval")
    with pytest.raises(ConfigError, match="not an nn.Linear"):
        replace_head(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), 3, head="1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "recipe.yaml").write_text((run_dir / "recipe.yaml").read_text().replace("name: mlp", "name: cnn"))
    (other / "model.safetensors").write_bytes((run_dir / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="does not fit"):
        load_run_model(other)


def test_transfer_run_starts_from_the_saved_run(run_dir: Path) -> None:
    from tricklab.transfer.run_transfer import TRANSFER_METHODS, TransferConfig, layer_groups, run_transfer

    cfg = TransferConfig(backbone_run=str(run_dir), steps=2, labels_per_class=2)
    res = run_transfer(cfg, seed=0)
    saved = load_run_model(run_dir).model
    n = sum(p.numel() for p in saved.parameters())
    head = [m for m in saved.modules() if isinstance(m, nn.Linear)][-1]
    new_head = head.in_features * 5 + 5
    assert res.metrics["finetune_trained_params"] == n - head.weight.numel() - head.bias.numel() + new_head
    assert res.metrics["linear_probe_trained_params"] == new_head
    assert set(TRANSFER_METHODS) <= {k[:-4] for k in res.metrics if k.endswith("_acc")}
    head_name = next(n for n, m in saved.named_modules() if m is head)
    assert layer_groups(saved)[-1] == [f"{head_name}."]  # the head is the last group gradual unfreezing opens
