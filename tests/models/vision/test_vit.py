"""ViT and the hybrid (tricklab.models.vision.vit / hybrid): position interpolation keeps the built grid exact and
resamples other grids like F.interpolate; the 2-D sine-cosine table equals two 1-D tables of
tricklab.layers.positional; attention maps equal softmax(QK^T / sqrt(d)) computed by hand and the blocks' outputs
with them equal the plain forward; attention rollout equals its recursion written with explicit loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.layers.attention import MultiHeadAttention
from tricklab.layers.positional import sinusoidal_encoding
from tricklab.models import build_model
from tricklab.models.vision.common import attention_with_weights
from tricklab.models.vision.vit import attention_rollout, interpolate_pos_table, rollout_maps, sincos_2d


def test_interpolation_keeps_the_built_grid_exact() -> None:
    torch.manual_seed(0)
    model = build_model("vit", (1, 28, 28), 10, dim=16, depth=1, heads=2, patch_size=4)
    table = model.pos_table
    assert model.positions((7, 7)) is table  # the very tensor, not a resampled copy
    assert torch.equal(interpolate_pos_table(table, (7, 7), (7, 7)), table)
    # even through F.interpolate the identity resize is exact (bicubic weights 0, 1, 0, 0 at the pixel centres)
    same = F.interpolate(table.T.reshape(1, 16, 7, 7), size=(7, 7), mode="bicubic", align_corners=False)
    assert torch.equal(same.reshape(16, 49).T, table)


def test_interpolation_to_other_grids_is_bicubic_resampling() -> None:
    torch.manual_seed(0)
    table = torch.randn(12, 8)  # grid (3, 4)
    out = interpolate_pos_table(table, (3, 4), (5, 2))
    img = table.T.reshape(1, 8, 3, 4)
    ref = F.interpolate(img, size=(5, 2), mode="bicubic", align_corners=False)[0]  # (8, 5, 2)
    for r in range(5):
        for c in range(2):
            torch.testing.assert_close(out[r * 2 + c], ref[:, r, c])  # row-major token order
    model = build_model("vit", (1, 28, 28), 10, dim=16, depth=1, heads=2, patch_size=4)
    assert model.positions((9, 5)).shape == (45, 16)
    x = torch.randn(2, 1, 36, 20)  # 9 x 5 patches
    assert model(x).shape == (2, 10)


def test_sincos_2d_is_two_vaswani_tables() -> None:
    t = sincos_2d((3, 5), 16).reshape(3, 5, 16)
    rows, cols = sinusoidal_encoding(3, 8), sinusoidal_encoding(5, 8)  # reference: layers.positional
    for r in range(3):
        for c in range(5):
            torch.testing.assert_close(t[r, c, :8], rows[r])
            torch.testing.assert_close(t[r, c, 8:], cols[c])
    # other grids: positions scaled to the built range; scale 1 is the plain table
    torch.testing.assert_close(sincos_2d((3, 5), 16, scale=(1.0, 1.0)), sincos_2d((3, 5), 16))
    half = sincos_2d((6, 10), 16, scale=(0.5, 0.5)).reshape(6, 10, 16)
    torch.testing.assert_close(half[2, 4], t[1, 2])  # position (2, 4) * 0.5 = (1, 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d((2, 2), 6)


def test_sincos_vit_grid_is_exact_and_other_sizes_work() -> None:
    model = build_model("vit", (1, 28, 28), 10, dim=16, depth=1, heads=2, patch_size=7, pos="sincos")
    torch.testing.assert_close(model.positions((4, 4)), sincos_2d((4, 4), 16))
    assert model.positions((4, 4)) is model.pos_table


def test_attention_with_weights_equals_hand_computation_and_the_module() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double().eval()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    out, probs = attention_with_weights(mha, x)
    torch.testing.assert_close(out, mha(x))  # reference: the layer's own SDPA path
    wq, wk, _ = mha.in_proj_weight.split(8)
    bq, bk, _ = mha.in_proj_bias.split(8)
    q = (x @ wq.T + bq).reshape(3, 5, 2, 4).transpose(1, 2)
    k = (x @ wk.T + bk).reshape(3, 5, 2, 4).transpose(1, 2)
    torch.testing.assert_close(probs, torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1))


@pytest.mark.parametrize(("name", "kwargs"), [
    ("vit", {"dim": 16, "depth": 2, "heads": 2, "patch_size": 7}),
    ("vit", {"dim": 16, "depth": 2, "heads": 4, "patch_size": 4, "pool": "mean"}),
    ("hybrid", {"conv_widths": (4, 8, 8), "dim": 16, "depth": 2, "heads": 2}),
])
def test_forward_with_attention_matches_forward(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10, **kwargs).eval()
    x = torch.randn(2, 1, 28, 28)
    logits, maps = model.forward_with_attention(x)
    torch.testing.assert_close(logits, model(x))
    assert len(maps) == 2
    cls = name == "vit" and kwargs.get("pool", "cls") == "cls"
    grid = (28 // kwargs.get("patch_size", 7), 28 // kwargs.get("patch_size", 7)) if name == "vit" else (7, 7)
    T = grid[0] * grid[1] + (1 if cls else 0)
    assert maps[0].shape == (2, kwargs["heads"], T, T)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, kwargs["heads"], T))
    heat = rollout_maps(attention_rollout(maps), grid, cls_token=cls)
    assert heat.shape == (2, *grid)
    torch.testing.assert_close(heat.sum(dim=(1, 2)), torch.ones(2))


def rollout_reference(attentions: list[np.ndarray]) -> np.ndarray:
    """Abnar & Zuidema 2020, eq. 1, per example with explicit loops: A~ = 0.5 mean_h A + 0.5 I, rows renormalised,
    R_1 = A~_1, R_l = A~_l R_{l-1}."""
    B, _, T, _ = attentions[0].shape
    out = np.zeros((B, T, T))
    for b in range(B):
        R = None
        for a in attentions:
            fused = np.zeros((T, T))
            for h in range(a.shape[1]):
                fused += a[b, h] / a.shape[1]
            fused = 0.5 * fused + 0.5 * np.eye(T)
            fused /= fused.sum(axis=1, keepdims=True)
            R = fused if R is None else fused @ R
        out[b] = R
    return out


def test_attention_rollout_equals_the_recursion() -> None:
    g = torch.Generator().manual_seed(0)
    maps = [torch.softmax(torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64), dim=-1) for _ in range(4)]
    ours = attention_rollout(maps)
    np.testing.assert_allclose(ours.numpy(), rollout_reference([m.numpy() for m in maps]), rtol=1e-12)
    torch.testing.assert_close(ours.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    # one layer of identity attention rolls out to the identity
    eye = torch.eye(4, dtype=torch.float64).expand(1, 2, 4, 4)
    torch.testing.assert_close(attention_rollout([eye]), torch.eye(4, dtype=torch.float64)[None])
    # max fusion and no residual: the plain product of the head-maxima (rows renormalised)
    one = attention_rollout(maps[:1], head_fusion="max", residual=False)
    m = maps[0].amax(dim=1)
    torch.testing.assert_close(one, m / m.sum(-1, keepdim=True))
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout(maps, head_fusion="min")
    with pytest.raises(ValueError, match="at least one"):
        attention_rollout([])


def test_rollout_and_detection_figures_are_written(tmp_path: object) -> None:
    pytest.importorskip("matplotlib")
    from pathlib import Path

    from tricklab.models.vision.plots import plot_attention_rollout, plot_detections

    out = Path(str(tmp_path))
    images = torch.rand(3, 1, 28, 28)
    heat = torch.softmax(torch.randn(3, 49), -1).reshape(3, 7, 7)
    p = plot_attention_rollout(images, heat, out / "rollout.svg", titles=["a", "b", "c"])
    assert p.read_text().lstrip().startswith("<?xml") and "<svg" in p.read_text()
    ex = [{"image": torch.rand(16, 16), "true_boxes": [[1, 1, 8, 8]], "true_labels": [0],
           "pred_boxes": [[2, 1, 8, 9]], "pred_labels": [0], "pred_scores": [0.9]}]
    q = plot_detections(ex, out / "boxes.svg", class_names=["T-shirt/top"])
    assert "<svg" in q.read_text()


@pytest.mark.parametrize(("name", "kwargs", "cls"), [
    ("vit", {"dim": 16, "depth": 3, "heads": 2, "patch_size": 7}, True),
    ("vit", {"dim": 16, "depth": 2, "heads": 2, "patch_size": 4, "pool": "mean"}, False),
    ("hybrid", {"conv_widths": (4, 8, 8), "dim": 16, "depth": 2, "heads": 2}, False),
])
def test_image_rollout_equals_the_recursion_on_the_models_own_attention(name: str, kwargs: dict, cls: bool) -> None:
    """Reference: rollout_reference (explicit loops) on the attention the model returns, read from the class token's
    row over the patches (or the mean row with mean pooling), renormalised. Display only: no gradient flows."""
    from tricklab.models.vision.vit import image_rollout

    torch.manual_seed(1)
    model = build_model(name, (1, 28, 28), 10, **kwargs).train()
    x = torch.randn(3, 1, 28, 28)
    out = image_rollout(model, x)
    assert out is not None and model.training  # the caller's mode is restored
    logits, heat = out
    with torch.no_grad():
        ref_logits, maps = model.eval().forward_with_attention(x)
    R = rollout_reference([m.double().numpy() for m in maps])
    row = R[:, 0, 1:] if cls else R.mean(axis=1)
    row = row / row.sum(axis=1, keepdims=True)
    torch.testing.assert_close(logits, ref_logits)
    np.testing.assert_allclose(heat.double().numpy(), row.reshape(3, *model.grid), rtol=1e-5, atol=1e-7)


def test_image_rollout_is_none_without_full_sequence_attention() -> None:
    from tricklab.models.vision.vit import image_rollout

    x = torch.randn(2, 1, 28, 28)
    swin = build_model("swin", (1, 28, 28), 10, dims=(8,), depths=(2,), heads=(2,), window=7, patch_size=4)
    assert image_rollout(swin, x) is None  # window attention: (B * windows) rows, no image-wide rollout
    assert image_rollout(build_model("cnn2d", (1, 28, 28), 10), x) is None
