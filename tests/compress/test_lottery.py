"""Lottery tickets (tricklab.compress.lottery). References: a run stopped at step k (its weights and buffers must be
what rewinding restores, torch.equal), the closed form 1 - (1 - p)^r of the round sparsity, and per-layer counts
of the IMP masks for the random-mask control."""

from __future__ import annotations

import json

import pytest
import torch

from tricklab.compress.lottery import (
    LotteryConfig,
    build_seeded,
    random_masks,
    rewind_,
    round_sparsity,
    run_lottery,
    train_with_masks,
)
from tricklab.compress.pruning import MASK, magnitude_masks, masks_of, prunable_layers
from tricklab.data import load_dataset
from tricklab.errors import ConfigError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_rewinding_restores_the_exact_step_k_weights(digits) -> None:
    cfg = LotteryConfig(dataset="digits", model_args={"hidden": 16}, steps=12, rewind_step=4, batch_size=32)
    full = build_seeded(cfg, digits, seed=3)
    _, theta_k = train_with_masks(full, digits, cfg, seed=3, steps=12, snapshot_at=4)
    stopped = build_seeded(cfg, digits, seed=3)
    train_with_masks(stopped, digits, cfg, seed=3, steps=4)  # the reference: the same run, stopped at k
    assert theta_k is not None and theta_k.keys() == stopped.state_dict().keys()
    for key, value in stopped.state_dict().items():
        assert torch.equal(theta_k[key], value), key
    layers = prunable_layers(full)
    masks = magnitude_masks({n: m.weight for n, m in layers.items()}, 0.6, "layer")
    assert not torch.equal(full.net[0].weight, stopped.net[0].weight)  # training moved on after step k
    rewind_(full, theta_k, masks)
    for key, value in stopped.state_dict().items():
        module, _, leaf = key.rpartition(".")
        expected = value * masks[module] if leaf == "weight" and module in masks else value
        assert torch.equal(full.state_dict()[key], expected), key
    assert all(torch.equal(getattr(full.get_submodule(n), MASK), m) for n, m in masks.items())


def test_random_masks_keep_the_per_layer_counts() -> None:
    g = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(10, 7, generator=g) > 0.7, "b": torch.rand(5, generator=g) > 0.2}
    rand = random_masks(masks, torch.Generator().manual_seed(1))
    for k in masks:
        assert rand[k].shape == masks[k].shape and int(rand[k].sum()) == int(masks[k].sum())
    assert not torch.equal(rand["a"], masks["a"])


def test_round_sparsity_is_the_compounded_fraction() -> None:
    assert round_sparsity(10, 0.2) == pytest.approx(1 - 0.8**10)
    assert round_sparsity(0, 0.2) == 0.0


def test_rounds_prune_to_the_schedule_and_write_every_round(digits, tmp_path) -> None:
    cfg = LotteryConfig(dataset="digits", model_args={"hidden": 16}, rounds=2, steps=30, rewind_step=5,
                        batch_size=32)
    rows: list[dict] = []
    result = run_lottery(cfg, seed=0, run_dir=tmp_path, progress=rows.append)
    assert [r["step"] for r in result.history] == [0, 1, 2] and rows == result.history
    for r, row in enumerate(result.history):
        assert row["sparsity"] == pytest.approx(round_sparsity(r, 0.2))
        assert all(0.0 <= row[f"accuracy_{a}"] <= 1.0 for a in cfg.arms)
    # layer-wise scope: every layer of the last round's ticket has the round's sparsity
    for name, s in result.extras["layer_sparsity"][-1].items():
        assert s == pytest.approx(round_sparsity(2, 0.2), abs=0.01), name
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["metrics"]["sparsity"] == pytest.approx(round_sparsity(2, 0.2))
    assert set(result.metrics) >= {"accuracy_rewind", "accuracy_reinit", "accuracy_random_mask", "accuracy_dense"}


@pytest.mark.parametrize("kwargs, match", [({"rewind_step": 30, "steps": 30}, "rewind_step"),
                                           ({"prune_fraction": 1.0}, "prune_fraction"),
                                           ({"arms": ("reinit",)}, "arms"), ({"scope": "row"}, "scope"),
                                           ({"rounds": 0}, "rounds"),
                                           ({"rounds": 3, "control_rounds": (1, 2)}, "including the last"),
                                           ({"rounds": 3, "control_rounds": (0, 3)}, "control_rounds")])
def test_bad_config_is_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LotteryConfig(**kwargs)


def test_controls_run_only_at_their_rounds_the_chain_every_round(digits) -> None:
    cfg = LotteryConfig(dataset="digits", model_args={"hidden": 16}, rounds=3, steps=12, batch_size=32,
                        control_rounds=(2, 3))
    full = LotteryConfig(dataset="digits", model_args={"hidden": 16}, rounds=3, steps=12, batch_size=32)
    thin, every = run_lottery(cfg, seed=0), run_lottery(full, seed=0)
    assert [sorted(k for k in row if k.startswith("accuracy_")) for row in thin.history[1:]] == [
        ["accuracy_rewind"], ["accuracy_random_mask", "accuracy_reinit", "accuracy_rewind"],
        ["accuracy_random_mask", "accuracy_reinit", "accuracy_rewind"]]
    # the IMP chain does not depend on which controls ran (they train copies)
    assert [r["accuracy_rewind"] for r in thin.history] == [r["accuracy_rewind"] for r in every.history]


def test_masks_of_the_chain_survive_between_rounds(digits) -> None:
    cfg = LotteryConfig(dataset="digits", model_args={"hidden": 16}, steps=5, batch_size=32)
    model = build_seeded(cfg, digits, seed=0)
    masks = magnitude_masks({n: m.weight for n, m in prunable_layers(model).items()}, 0.5, "global")
    rewind_(model, {k: v.clone() for k, v in model.state_dict().items()}, masks)
    train_with_masks(model, digits, cfg, seed=0, steps=5)
    for name, mask in masks_of(model).items():
        assert torch.equal(mask, masks[name])
        assert torch.all(model.get_submodule(name).weight[~mask] == 0)
