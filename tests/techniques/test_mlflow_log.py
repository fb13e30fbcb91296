"""``mlflow_log`` read back with MLflow's own client (``MlflowClient``). References: the trainer's ``state.history``
(every logged row, value for value, at its step), the run folder's ``recipe.yaml`` (the parameters) and the
trained model's state dict (the model artifact's tensors)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.techniques._tracking import flatten, numeric_items

ROOT = Path(__file__).resolve().parents[2]
TINY = ["budget.steps=20", "eval_every=10", "log_every=5", "eval_batch_size=500", "threads=1", "progress=false"]


def _run(tmp_path: Path, techniques: str):
    recipe = load_recipe(ROOT / "recipes" / "mnist1d-cnn-paper.yaml", [*TINY, f"techniques=[{techniques}]"])
    return run(recipe, out=tmp_path / "run")


def test_mlflow_holds_the_recipe_the_metrics_per_step_and_the_model(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    result = _run(tmp_path, "mlflow_log")
    history = result.trainer.state.history
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the reader opens the same file store
    client = MlflowClient((tmp_path / "run" / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("tricklab")
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "run"
    recipe = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text(encoding="utf-8"))
    assert mlrun.data.params == {k: str(v) for k, v in flatten(recipe).items()}
    assert mlrun.data.params["optimizer.lr"] == "0.01" and mlrun.data.params["budget.steps"] == "20"
    for key in ("train_loss", "eval_accuracy", "lr"):
        logged = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, key))
        assert logged == [(r["step"], numeric_items(r)[key]) for r in history if key in r]
    assert {f.path for f in client.list_artifacts(mlrun.info.run_id)} == {"model", "recipe.yaml"}
    local = client.download_artifacts(mlrun.info.run_id, "model/model.safetensors", str(tmp_path / "dl"))
    saved, trained = load_file(local), result.trainer.state.raw_model.state_dict()
    assert saved.keys() == trained.keys() and all(torch.equal(saved[k], trained[k]) for k in saved)
    # the run's own model file is the same weights
    assert all(torch.equal(v, load_file(tmp_path / "run" / "model.safetensors")[k]) for k, v in saved.items())


def test_a_database_keeps_its_artifacts_beside_it_not_in_the_working_folder(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's default artifact root for a database store is ./mlruns of the process's working folder
    pytest.importorskip("mlflow")
    from tricklab.techniques.mlflow_log import mlflow_client

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    db = tmp_path / "track" / "mlflow.db"
    db.parent.mkdir()
    _run(tmp_path, f"{{name: mlflow_log, args: {{tracking_uri: 'sqlite:///{db}', experiment: e}}}}")
    client = mlflow_client(f"sqlite:///{db}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("e").experiment_id])
    assert {f.path for f in client.list_artifacts(mlrun.info.run_id)} == {"model", "recipe.yaml"}
    assert list(work.iterdir()) == []  # nothing written into the working folder
    assert list((tmp_path / "track" / "mlartifacts").rglob("model.safetensors"))
