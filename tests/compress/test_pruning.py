"""Magnitude pruning (tricklab.compress.pruning). References: NumPy sorting of |w| (the k largest magnitudes, by a
stable NumPy argsort written independently of the torch path), the closed form of Zhu & Gupta's eq. 1, and
torch.nn.utils.prune's global / layer-wise L1 unstructured pruning for the same masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune
from torch import nn

from tricklab.compress.pruning import (
    MASK,
    magnitude_masks,
    magnitude_prune_,
    masks_of,
    reapply_masks_,
    remove_masks_,
    sparsity_of,
    zhu_gupta_sparsity,
)
from tricklab.errors import ConfigError


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6, 10), nn.ReLU(),
                         nn.Linear(10, 3))


def numpy_global_keep(weights: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """The reference: keep the n - round(s n) largest |w| over all tensors (ties: earlier position first)."""
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    keep = flat.size - round(sparsity * flat.size)
    order = np.argsort(-flat, kind="stable")[:keep]
    mask = np.zeros(flat.size, dtype=bool)
    mask[order] = True
    out, start = [], 0
    for w in weights:
        out.append(mask[start:start + w.size].reshape(w.shape))
        start += w.size
    return out


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_global_pruning_keeps_exactly_the_largest_magnitude_fraction(sparsity: float) -> None:
    model = _net()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d))}
    masks = magnitude_prune_(model, sparsity, scope="global")
    expected = numpy_global_keep([w.numpy() for w in weights.values()], sparsity)
    total = sum(w.numel() for w in weights.values())
    assert sum(int(m.sum()) for m in masks.values()) == total - round(sparsity * total)
    for (name, w), exp in zip(weights.items(), expected):
        np.testing.assert_array_equal(masks[name].numpy(), exp)
        layer = model.get_submodule(name)
        # the model's weights are the originals where kept and exactly zero elsewhere
        assert torch.equal(layer.weight.detach(), torch.where(torch.from_numpy(exp), w, torch.zeros_like(w)))
        assert torch.equal(getattr(layer, MASK), masks[name])
        if sparsity > 0:  # every kept |w| >= every pruned |w|
            kept = torch.cat([weights[n][masks[n]].abs() for n in weights])
            pruned = torch.cat([weights[n][~masks[n]].abs() for n in weights])
            assert kept.min() >= pruned.max()
    assert sparsity_of(model) == pytest.approx(round(sparsity * total) / total)


def test_global_and_layer_masks_match_torch_prune() -> None:
    """Reference: torch.nn.utils.prune.global_unstructured / l1_unstructured (no ties in random weights)."""
    for scope in ("global", "layer"):
        ours, ref = _net(1), _net(1)
        magnitude_prune_(ours, 0.7, scope=scope)
        params = [(m, "weight") for m in ref.modules() if isinstance(m, (nn.Linear, nn.Conv1d))]
        if scope == "global":
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=0.7)
        else:
            for m, p in params:
                tprune.l1_unstructured(m, p, amount=0.7)
        for (name, mask), (m, _) in zip(masks_of(ours).items(), params):
            assert torch.equal(mask, m.weight_mask.bool()), (scope, name)


def test_layer_scope_prunes_each_layer_to_the_sparsity() -> None:
    model = _net()
    masks = magnitude_prune_(model, 0.5, scope="layer")
    for name, mask in masks.items():
        assert int((~mask).sum()) == round(0.5 * mask.numel()), name


def test_masks_survive_a_state_dict_round_trip_and_reapply_zeroes_moved_weights() -> None:
    model = _net()
    magnitude_prune_(model, 0.8)
    sd = model.state_dict()
    assert any(k.endswith(MASK) for k in sd)
    fresh = _net(5)
    magnitude_prune_(fresh, 0.1)  # any masks: the load overwrites them
    fresh.load_state_dict(sd)
    for name, mask in masks_of(model).items():
        assert torch.equal(masks_of(fresh)[name], mask)
    # an optimizer step moves pruned weights (momentum, weight decay); reapply puts them back to zero
    opt = torch.optim.SGD(fresh.parameters(), lr=0.1, weight_decay=0.1)
    fresh(torch.randn(4, 2, 8)).sum().backward()
    opt.step()
    assert sparsity_of(fresh) < 0.8
    reapply_masks_(fresh)
    assert sparsity_of(fresh) == pytest.approx(0.8, abs=1e-2)
    remove_masks_(fresh)
    assert not masks_of(fresh) and not any(k.endswith(MASK) for k in fresh.state_dict())


def test_pruned_weights_get_no_gradient_influence_after_reapply() -> None:
    """Gradient check: the pruned net's gradients w.r.t. kept weights equal the gradients of a dense net whose
    pruned weights are zero (reference: the same computation without masks)."""
    model = _net()
    magnitude_prune_(model, 0.6)
    dense = _net()
    with torch.no_grad():
        for p, q in zip(dense.parameters(), model.parameters()):
            p.copy_(q)
    x = torch.randn(5, 2, 8)
    model(x).square().sum().backward()
    dense(x).square().sum().backward()
    for p, q in zip(model.parameters(), dense.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_zhu_gupta_schedule_matches_the_closed_form() -> None:
    # eq. 1 of Zhu & Gupta (2017) evaluated by hand: s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3
    for t in range(100, 1001, 100):
        expected = 0.9 + (0.1 - 0.9) * (1 - (t - 100) / 900) ** 3
        assert zhu_gupta_sparsity(t, 0.9, 100, 1000, 0.1) == pytest.approx(expected, rel=1e-12)
    assert zhu_gupta_sparsity(50, 0.9, 100, 1000) == 0.0
    assert zhu_gupta_sparsity(5000, 0.9, 100, 1000) == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.5", True])
def test_bad_sparsity_is_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="fraction in \\[0, 1\\)"):
        magnitude_prune_(_net(), bad)  # type: ignore[arg-type]


def test_bad_scope_and_exclude_are_refused() -> None:
    with pytest.raises(ConfigError, match="scope"):
        magnitude_masks({"a": torch.ones(3)}, 0.5, scope="row")
    with pytest.raises(ConfigError, match="cannot exclude"):
        magnitude_prune_(_net(), 0.5, exclude=["nope"])
