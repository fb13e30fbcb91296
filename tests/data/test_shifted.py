"""Shifted sets. References: the MNIST-1D generator itself (the shuffled set holds the same values per example,
only reordered, with the same labels); the analytic bilinear interpolation of a linear ramp at pixel centres
(align_corners=False)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tricklab.data.shifted import SHIFTS, OODSplit, fashion_vs_digits, load_shift, upscale_images
from tricklab.errors import DataError


def test_registry_lists_both_shifts() -> None:
    assert {"mnist1d-shuffled", "fashion-mnist-digits"} <= set(SHIFTS.names())


def test_mnist1d_against_shuffled_mnist1d() -> None:
    pytest.importorskip("mnist1d")
    split = load_shift("mnist1d-shuffled")
    assert split.x_in.shape == split.x_out.shape == (1000, 40)
    # same signals, positions permuted: per-example sorted values agree, and the order does not
    torch.testing.assert_close(split.x_in.sort(1).values, split.x_out.sort(1).values)
    assert not torch.equal(split.x_in, split.x_out)


def test_bilinear_upscaling_of_a_ramp() -> None:
    x = torch.arange(8, dtype=torch.float32).repeat(8, 1).reshape(1, 1, 8, 8) / 7  # value = column / 7
    up = upscale_images(x, 28)
    assert up.shape == (1, 1, 28, 28)
    # output column j samples the input at u = (j + 0.5) * 8 / 28 - 0.5 (align_corners=False), clamped to [0, 7]
    cols = ((torch.arange(28) + 0.5) * 8 / 28 - 0.5).clamp(0, 7) / 7
    torch.testing.assert_close(up[0, 0], cols.expand(28, 28), rtol=0, atol=1e-6)
    const = upscale_images(torch.full((2, 1, 8, 8), 0.3), 28)
    torch.testing.assert_close(const, torch.full((2, 1, 28, 28), 0.3))
    with pytest.raises(DataError, match="mode"):
        upscale_images(x, 28, mode="lanczos")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="Fashion-MNIST files not here")
def test_fashion_mnist_against_upscaled_digits() -> None:
    pytest.importorskip("sklearn")
    split = fashion_vs_digits()
    assert split.x_in.shape == (10000, 1, 28, 28) and split.x_out.shape == (1797, 1, 28, 28)
    assert 0.0 <= float(split.x_out.min()) and float(split.x_out.max()) <= 1.0


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(DataError, match="do not match"):
        OODSplit("x", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), torch.zeros(2, 4), "")
