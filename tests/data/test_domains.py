"""Domain pairs made by code. References: the MNIST-1D generator itself (``load_dataset`` with the documented
target arguments) and the closed-form transforms (``gain * x``, ``1 - x``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tricklab.data.datasets import load_dataset
from tricklab.data.domains import DOMAINS, MNIST1D_TARGET_ARGS, MNIST1D_TARGET_GAIN, load_domains


def test_mnist1d_noisy_is_the_documented_shift() -> None:
    pytest.importorskip("mnist1d")
    pair = load_domains("mnist1d-noisy")
    src = load_dataset("mnist1d")
    tgt = load_dataset("mnist1d", **MNIST1D_TARGET_ARGS)
    assert torch.equal(pair.x_source, src.x_train) and torch.equal(pair.y_source, src.y_train)
    assert MNIST1D_TARGET_GAIN == 0.75 and torch.equal(pair.x_target, tgt.x_train * 0.75)
    assert torch.equal(pair.y_target_test, tgt.y_test)
    assert pair.input_shape == (40,) and pair.num_classes == 10
    assert not torch.allclose(pair.x_target[:100], pair.x_source[:100] * 0.75)  # other samples, not a rescale


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST files not here")
def test_fashion_inverted_halves_are_disjoint_and_inverted() -> None:
    pair = load_domains("fashion-mnist-inverted")
    ds = load_dataset("fashion-mnist")
    assert len(pair.x_source) == len(pair.x_target) == 30000
    assert torch.equal(pair.x_target, 1.0 - ds.x_train[30000:]) and torch.equal(pair.x_target_test, 1.0 - ds.x_test)
    assert torch.equal(pair.x_source, ds.x_train[:30000])


def test_registry_lists_both() -> None:
    assert {"mnist1d-noisy", "fashion-mnist-inverted"} <= set(DOMAINS.names())
