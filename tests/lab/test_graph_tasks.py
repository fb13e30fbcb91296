"""Graph tasks through the runner: node classification (Cora, karate) and graph classification
(synthetic-graphs), with the same recipe machinery as the array tasks."""

from __future__ import annotations

from pathlib import Path

from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_cora_gcn_trains_on_the_standard_split(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "cora-gcn.yaml", ["budget.steps=60", "progress=false", "techniques=[]"])
    r = run(recipe, out=tmp_path / "run")
    # 60 full-batch epochs of Kipf's GCN already classify most test nodes (the paper's 200 reach ~81%)
    assert r.summary["test"]["accuracy"] > 0.7
    assert r.summary["steps"] == 60 and r.summary["val"]["accuracy"] > 0.6
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_karate_and_graph_classification(tmp_path: Path) -> None:
    r = run(load_recipe(None, ["task=karate", "model.name=gcn", "techniques=[]", "schedule=constant",
                               "budget.steps=100", "eval_every=20", "progress=false"]), out=tmp_path / "karate")
    assert r.summary["test"]["accuracy"] > 0.6  # 2 clubs from 8 labelled members
    r = run(load_recipe(None, ["task=synthetic-graphs", "model.name=gcn_graph", "techniques=[]",
                               "schedule=constant", "batch_size=32", "budget.steps=150", "eval_every=50",
                               "optimizer.lr=0.01", "progress=false"]), out=tmp_path / "graphs")
    assert r.summary["test"]["accuracy"] > 0.5  # 4 balanced classes: chance is 0.25
