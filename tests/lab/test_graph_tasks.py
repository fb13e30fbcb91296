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
    assert r.summary.test.value("accuracy") > 0.7
    assert r.summary.steps == 60 and r.summary.val.value("accuracy") > 0.6
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_karate_and_graph_classification(tmp_path: Path) -> None:
    r = run(load_recipe(None, ["task=karate", "model.name=gcn", "techniques=[]", "schedule=constant",
                               "budget.steps=100", "eval_every=20", "progress=false"]), out=tmp_path / "karate")
    assert r.summary.test.value("accuracy") > 0.6  # 2 clubs from 8 labelled members
    r = run(load_recipe(None, ["task=synthetic-graphs", "model.name=gcn_graph", "techniques=[]",
                               "schedule=constant", "batch_size=32", "budget.steps=150", "eval_every=50",
                               "optimizer.lr=0.01", "progress=false"]), out=tmp_path / "graphs")
    assert r.summary.test.value("accuracy") > 0.5  # 4 balanced classes: chance is 0.25


def test_graphsage_with_neighbour_sampling_mini_batches(tmp_path: Path) -> None:
    # GraphSAGE trained on sampled 2-hop neighbourhoods of 32 seed nodes per step (5 epochs of Cora's 140
    # training nodes) still learns the task: well above the 1/7 chance level
    recipe = load_recipe(RECIPES / "cora-gcn.yaml", ["model.name=graphsage", "techniques=[]", "batch_size=32",
                                                     "data.fanouts=[10, 5]", "budget.epochs=5", "eval_every=null",
                                                     "progress=false"])
    r = run(recipe, out=tmp_path / "sage")
    assert r.summary.steps == 5 * 5  # ceil(140 / 32) = 5 batches per epoch
    assert r.summary.test.value("accuracy") > 0.5


def test_neighbor_loader_resumes_exactly() -> None:
    import torch

    from tricklab.data import load_dataset
    from tricklab.data.graph_loaders import NeighborLoader

    graph = load_dataset("cora").graph
    a = NeighborLoader(graph, "train", 32, [5, 5], seed=3)
    a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(2)]
    b = NeighborLoader(graph, "train", 32, [5, 5], seed=3)
    b.load_state_dict(state)
    got = [b.next_batch() for _ in range(2)]
    for (ga, ta), (gb, tb) in zip(expected, got):
        assert ga.x.layout == torch.sparse_coo  # Cora's features stay sparse in the sampled subgraphs
        assert torch.equal(ga.x.to_dense(), gb.x.to_dense()) and torch.equal(ga.edge_index, gb.edge_index)
        assert torch.equal(ta, tb)
    # the seeds come first and carry their labels; every other sampled node is ignored by the loss
    assert bool((ta[:32] != -100).all()) and bool((ta[32:] == -100).all())
