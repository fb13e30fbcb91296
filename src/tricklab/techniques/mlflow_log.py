"""Log a run to MLflow: the resolved recipe as parameters, every metrics row as metrics at its step, and the
trained model file (safetensors) and the recipe as artifacts.

``tracking_uri`` is any MLflow tracking URI: a database (``sqlite:///mlflow.db``), a tracking server
(``http://host:5000``), or a local folder (a path or ``file:`` URI: MLflow's file store, which MLflow 3 keeps
in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; naming a folder here is that opt-in, for this client
only). The default is the folder ``mlruns`` inside the run folder. With a SQLite database, the artifacts of an
experiment this technique creates go to the folder ``mlartifacts`` beside the database file (``artifact_location``
to choose another): MLflow's own default there is ``./mlruns`` of whatever folder the process started in.
The MLflow run is created at the first
logged row, and its id is part of this technique's state, so a resumed run goes on logging into the same
MLflow run (rows of the steps after the checkpoint are logged again, with the same values: resume is exact).
Uses the client API (``MlflowClient``), so no global "active run" is touched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from safetensors.torch import save_file

from tricklab.errors import ConfigError
from tricklab.techniques._tracking import global_rngs_kept, numeric_items, run_parameters
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique

__all__ = ["MlflowLog", "mlflow_client"]

_PARAM_LIMIT = 6000  # MLflow's limit on the length of a parameter value


@contextlib.contextmanager
def _file_store_allowed() -> Iterator[None]:
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = before


def _is_folder(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri and not uri.startswith(("databricks", "uc"))


def _artifact_location(tracking_uri: str, given: str | None) -> str | None:
    """Where a new experiment keeps its artifacts: ``given``; for a SQLite database, ``mlartifacts`` beside the
    file; else None (the store's own default: inside a file store, the server's choice for a server)."""
    if given is not None:
        return Path(given).resolve().as_uri() if "://" not in given else given
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


def mlflow_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (a folder is opened as MLflow's file store)."""
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ConfigError("mlflow_log needs MLflow: pip install 'tricklab[mlflow]'") from e
    if _is_folder(tracking_uri):
        uri = tracking_uri if tracking_uri.startswith("file:") else Path(tracking_uri).resolve().as_uri()
        with _file_store_allowed():  # the store is built (and cached by MLflow) inside this window
            return MlflowClient(uri)
    return MlflowClient(tracking_uri)


@register_technique
class MlflowLog(Technique):
    """Log the recipe, the metrics per step and the model file of a run to MLflow."""

    name: ClassVar[str] = "mlflow_log"
    # every metrics row after the techniques that add keys to it; the final weights at fit_end, after any
    # technique that restores or sets them
    reads = frozenset({"log_row", "params"})
    main_process_only: ClassVar[bool] = True

    def __init__(self, tracking_uri: str | None = None, experiment: str = "tricklab", run_name: str | None = None,
                 params: dict[str, Any] | None = None, log_model: bool = True,
                 artifact_location: str | None = None) -> None:
        self.tracking_uri, self.experiment, self.run_name = tracking_uri, experiment, run_name
        self.artifact_location = artifact_location
        self.params, self.log_model = dict(params or {}), bool(log_model)
        self.run_id: str | None = None
        self._client: Any = None

    def _uri(self, state: TrainState) -> str:
        if self.tracking_uri is not None:
            return self.tracking_uri
        if state.run_dir is None:
            raise ValueError("mlflow_log needs tracking_uri=... or a trainer with a run_dir (default run_dir/mlruns)")
        return str(Path(state.run_dir) / "mlruns")

    def _start(self, state: TrainState) -> None:
        self._client = mlflow_client(self._uri(state))
        if self.run_id is not None:  # resumed: go on logging into the same MLflow run
            return
        exp = self._client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self._client.create_experiment(
            self.experiment, artifact_location=_artifact_location(self._uri(state), self.artifact_location))
        # a run name of our own: MLflow's generated names draw from Python's global RNG
        name = self.run_name or (Path(state.run_dir).name if state.run_dir is not None else "tricklab-run")
        self.run_id = self._client.create_run(exp_id, run_name=name).info.run_id
        from mlflow.entities import Param

        params = [Param(k, str(v)[:_PARAM_LIMIT]) for k, v in run_parameters(state, self.params).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self._client.log_batch(self.run_id, params=params[i:i + 100])
        recipe = Path(state.run_dir) / "recipe.yaml" if state.run_dir is not None else None
        if recipe is not None and recipe.is_file():
            self._client.log_artifact(self.run_id, str(recipe))

    def on_log(self, state: TrainState) -> None:
        with global_rngs_kept():
            self._log(state)

    def _log(self, state: TrainState) -> None:
        if self._client is None:
            self._start(state)
        from mlflow.entities import Metric

        row, now = state.history[-1], int(time.time() * 1000)
        metrics = [Metric(k, v, now, int(row["step"])) for k, v in numeric_items(row).items()]
        self._client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, state: TrainState) -> None:
        with global_rngs_kept():
            self._finish(state)

    def _finish(self, state: TrainState) -> None:
        if self._client is None:
            self._start(state)
        if self.log_model:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.safetensors"
                weights = {k: v.detach().cpu().contiguous().clone() for k, v in state.raw_model.state_dict().items()}
                save_file(weights, str(path))
                self._client.log_artifact(self.run_id, str(path), artifact_path="model")
        self._client.set_terminated(self.run_id, "FINISHED")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
        self._client = None

