"""benchmarks/diabetes_csv.py writes the CSV the diabetes regression card reads
(docs/cards/diabetes-regression). Reference: scikit-learn's bundled arrays (load_diabetes), which the lab must
read back through the recipe's data spec (recipes/diabetes-regression.yaml) as a regression target."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from tricklab.data import load_dataset
from tricklab.lab.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_the_csv_holds_sklearns_diabetes_data_and_reads_back_as_a_regression(tmp_path: Path) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    pytest.importorskip("pandas")
    spec = importlib.util.spec_from_file_location("diabetes_csv", ROOT / "benchmarks" / "diabetes_csv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "diabetes.csv"
    assert module.write_diabetes_csv(path) == 442
    bunch = datasets.load_diabetes()

    recipe = load_recipe(ROOT / "recipes" / "diabetes-regression.yaml", [f"data.path={path}"])
    assert recipe.task == "files" and recipe.task_args == {"kind": "regression"}
    # the lab reads the file as its regression kind says (lab/build.py _dataset_args); unscaled, to compare
    args = {**recipe.data.args, "target_kind": "regression", "standardize": False, "standardize_target": False}
    ds = load_dataset("files", **args)
    assert ds.meta["target_kind"] == "regression" and ds.input_shape == (10,)
    assert len(ds.x_train) == 331 and len(ds.x_test) == 111  # ceil(0.25 * 442) rows held out
    x = np.concatenate([ds.x_train.numpy(), ds.x_test.numpy()]).astype(np.float64)
    y = np.concatenate([ds.y_train.numpy(), ds.y_test.numpy()]).astype(np.float64)
    rows = np.concatenate([np.asarray(ds.meta["split"]["rows"]["train"]), np.asarray(ds.meta["split"]["rows"]["test"])])
    # every row comes back where the file put it: features to float32 precision, targets exactly
    np.testing.assert_allclose(x, bunch.data[rows], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(y, bunch.target[rows])
