"""The explain page. References: the run folder layout tricklab.lab.runner writes (recipe.yaml +
model.safetensors), rebuilt here by hand with an untrained model; the page's numbers against
faithfulness_scores called directly on the same examples; the bootstrap interval against NumPy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from tricklab.errors import UnknownNameError, UserError
from tricklab.explain import attribute, faithfulness_scores
from tricklab.explain.report import bootstrap_interval, explain_run, load_run, recipe_task
from tricklab.models import build_model

pytest.importorskip("matplotlib")


def _fake_run(folder: Path, task: str, model: str, shape: tuple[int, ...], args: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    net = build_model(model, shape, 10, **(args or {}))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    recipe = {"task": task, "model": {"name": model, "args": args or {}}, "data": {"data_dir": None, "args": {}}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return folder


def test_page_for_images(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", "digits", "cnn2d", (1, 8, 8), {"channels": [4, 8]})
    lines: list[str] = []
    page = explain_run(run, ["gradient", "grad_cam", "deeplift_shap", "random"], examples=3, out=tmp_path / "out",
                       steps=5, background=4, progress=lines.append)
    text = page.read_text(encoding="utf-8")
    assert page == tmp_path / "out" / "index.html"
    assert text.count("<svg") == 2 and "grad_cam" in text and "deletion AUC" in text
    assert len(lines) == 5  # one line per method, then drawing
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert [r["method"] for r in scores["methods"]] == ["gradient", "grad_cam", "deeplift_shap", "random"]
    # the page's numbers are faithfulness_scores on the same examples and predictions
    loaded = load_run(run)
    idx = torch.tensor(scores["meta"]["examples"])
    x = loaded.data.x_test[idx]
    pred = torch.tensor(scores["meta"]["predicted"])
    direct = faithfulness_scores(loaded.model, x, attribute("gradient", loaded.model, x, pred), pred, steps=5)
    np.testing.assert_allclose(scores["methods"][0]["deletion_auc"]["per_example"], direct["deletion_auc"].numpy(),
                               rtol=1e-6)


def test_page_for_signals_with_default_methods(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run1d", "mnist1d", "cnn", (40,))
    page = explain_run(run, examples=2, steps=4, background=3)
    assert page == run / "explain" / "index.html"
    text = page.read_text(encoding="utf-8")
    for name in ("integrated_gradients", "kernel_shap", "grad_cam_plus_plus", "smoothgrad"):
        assert name in text


def test_bootstrap_interval() -> None:
    v = [0.1, 0.5, 0.3, 0.9, 0.2]
    mean, lo, hi = bootstrap_interval(v, seed=0)
    assert mean == pytest.approx(np.mean(v)) and lo < mean < hi
    rng = np.random.default_rng(0)
    means = np.asarray(v)[rng.integers(0, 5, size=(10_000, 5))].mean(1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert np.isnan(bootstrap_interval([1.0])[1])


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="recipe.yaml is missing"):
        explain_run(tmp_path, examples=1)
    with pytest.raises(UserError, match="recipe.yaml is missing"):
        recipe_task(tmp_path)
    run = _fake_run(tmp_path / "run", "digits", "cnn2d", (1, 8, 8), {"channels": [4, 8]})
    assert recipe_task(run) == "digits"
    with pytest.raises(UnknownNameError, match="attribution method"):
        explain_run(run, ["gradcam"], examples=1)
    with pytest.raises(UserError, match="examples"):
        explain_run(run, examples=0)
    (run / "model.safetensors").unlink()
    with pytest.raises(UserError, match="no model.safetensors"):
        explain_run(run, examples=1)
    bad = _fake_run(tmp_path / "bad", "digits", "cnn2d", (1, 8, 8), {"channels": [4, 8]})
    recipe = yaml.safe_load((bad / "recipe.yaml").read_text())
    recipe["model"]["args"] = {"channels": [4, 16]}
    (bad / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(UserError, match="does not fit the model"):
        explain_run(bad, examples=1)
