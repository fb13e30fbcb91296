"""Swin (tricklab.models.vision.swin): the shifted-window mask equals a dense mask built by brute force over token
pairs; window attention (shifted or not, padded or not) equals full attention over the whole map restricted to the
window pairs, with the relative position bias looked up by brute force; relative position indices, window
partition round trip, patch merging against its definition, attention maps on request."""

from __future__ import annotations

import itertools

import pytest
import torch

from tricklab.models.vision.swin import (
    PatchMerging,
    SwinBlock,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)


def allowed_pair(p: tuple[int, int], q: tuple[int, int], *, window: int, shift: int, padded: tuple[int, int],
                 valid: tuple[int, int]) -> bool:
    """May token p attend to token q? p, q in ORIGINAL (unshifted, padded) coordinates. From first principles:
    the cyclic shift moves rows/columns < shift to the far end; two tokens share an attention window when their
    shifted positions fall in one M x M window; they may attend when they also sit on the same side of the wrap on
    both axes (contiguous in the original map) and are both real or both padding."""
    H, W = padded
    (r1, c1), (r2, c2) = p, q
    s1 = ((r1 - shift) % H, (c1 - shift) % W)
    s2 = ((r2 - shift) % H, (c2 - shift) % W)
    same_window = s1[0] // window == s2[0] // window and s1[1] // window == s2[1] // window
    same_side = (r1 < shift) == (r2 < shift) and (c1 < shift) == (c2 < shift)
    pad1 = r1 >= valid[0] or c1 >= valid[1]
    pad2 = r2 >= valid[0] or c2 >= valid[1]
    return same_window and same_side and pad1 == pad2


GEOMETRIES = [  # (padded size, window, shift, valid size)
    ((8, 8), 4, 2, (8, 8)),
    ((6, 9), 3, 1, (6, 9)),
    ((8, 12), 4, 2, (7, 10)),    # padded bottom / right
    ((7, 7), 7, 3, (5, 6)),      # one window, shifted and padded
    ((8, 8), 4, 0, (6, 8)),      # no shift, padding only
]


@pytest.mark.parametrize(("padded", "window", "shift", "valid"), GEOMETRIES)
def test_shifted_window_mask_equals_brute_force(padded: tuple, window: int, shift: int, valid: tuple) -> None:
    mask = shifted_window_mask(padded, window, shift, valid)
    H, W = padded
    nwh, nww = H // window, W // window
    N = window * window
    assert mask is not None and mask.shape == (nwh * nww, N, N)
    for wi in range(nwh * nww):
        wr, wc = divmod(wi, nww)
        for i, j in itertools.product(range(N), repeat=2):
            # token i of window wi sits at shifted position (wr*M + i // M, wc*M + i % M); undo the shift
            si = (wr * window + i // window, wc * window + i % window)
            sj = (wr * window + j // window, wc * window + j % window)
            oi = ((si[0] + shift) % H, (si[1] + shift) % W)
            oj = ((sj[0] + shift) % H, (sj[1] + shift) % W)
            expected_blocked = not allowed_pair(oi, oj, window=window, shift=shift, padded=padded, valid=valid)
            assert bool(mask[wi, i, j]) == expected_blocked, (wi, i, j)


def test_no_mask_without_shift_or_padding() -> None:
    assert shifted_window_mask((8, 8), 4, 0) is None


def test_relative_position_index_brute_force() -> None:
    M = 3
    idx = relative_position_index(M)
    for i, j in itertools.product(range(M * M), repeat=2):
        dy, dx = i // M - j // M, i % M - j % M
        assert int(idx[i, j]) == (dy + M - 1) * (2 * M - 1) + (dx + M - 1)
    assert int(idx.max()) == (2 * M - 1) ** 2 - 1


def test_window_partition_round_trip() -> None:
    x = torch.randn(2, 6, 9, 5)
    w = window_partition(x, 3)
    assert w.shape == (2 * 2 * 3, 9, 5)
    torch.testing.assert_close(w[1].reshape(3, 3, 5), x[0, 0:3, 3:6])  # window 1 of image 0: rows 0-2, cols 3-5
    torch.testing.assert_close(window_reverse(w, 3, 6, 9), x)


def dense_block_reference(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """The block computed as full attention over all (padded) tokens of the map in original coordinates, with
    pairs outside the rule of :func:`allowed_pair` blocked and the bias B[dy, dx] of each allowed pair looked up
    at its physical offset: no windows, no shift, no roll."""
    B, H, W, C = x.shape
    M = block.window
    shift = block.shift if (H > M or W > M) else 0
    Hp, Wp = -(-H // M) * M, -(-W // M) * M
    h = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
    h[:, :H, :W] = block.norm1(x)
    tokens = h.reshape(B, Hp * Wp, C)
    coords = [(r, c) for r in range(Hp) for c in range(Wp)]
    T = len(coords)
    bias = torch.full((block.heads, T, T), float("-inf"), dtype=x.dtype)
    for a, p in enumerate(coords):
        for b, q in enumerate(coords):
            if allowed_pair(p, q, window=M, shift=shift, padded=(Hp, Wp), valid=(H, W)):
                dy, dx = p[0] - q[0], p[1] - q[1]
                bias[:, a, b] = block.bias_table[(dy + M - 1) * (2 * M - 1) + (dx + M - 1)]
    attn = block.attn
    q, k, v = (t.unflatten(-1, (block.heads, -1)).transpose(1, 2) for t in attn._project(tokens, tokens, tokens))
    probs = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1)
    out = attn.out_proj((probs @ v).transpose(1, 2).flatten(2)).reshape(B, Hp, Wp, C)[:, :H, :W]
    y = x + out
    return y + block.mlp(block.norm2(y))


@pytest.mark.parametrize(("size", "window", "shift"), [((8, 8), 4, 0), ((8, 8), 4, 2), ((6, 9), 3, 1),
                                                       ((7, 10), 4, 2), ((5, 6), 7, 3)])
def test_window_attention_equals_full_attention_restricted_to_windows(size: tuple, window: int, shift: int) -> None:
    torch.manual_seed(0)
    block = SwinBlock(8, 2, window, shift, mlp_ratio=2.0).double().eval()
    with torch.no_grad():
        block.bias_table.normal_()  # a visible bias, so a wrong lookup cannot hide
    x = torch.randn(2, *size, 8, dtype=torch.float64, requires_grad=True)
    ours = block(x)
    ref = dense_block_reference(block, x)
    torch.testing.assert_close(ours, ref)
    g_ours = torch.autograd.grad(ours.square().sum(), [x, block.bias_table])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, block.bias_table])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)
    out, probs = block.forward_with_attention(x)
    torch.testing.assert_close(out, ours)
    torch.testing.assert_close(probs.sum(-1), torch.ones_like(probs.sum(-1)))


def test_patch_merging_matches_its_definition() -> None:
    torch.manual_seed(0)
    pm = PatchMerging(3, 5)
    x = torch.randn(1, 5, 4, 3)  # odd height: padded by one row of zeros
    out = pm(x)
    assert out.shape == (1, 3, 2, 5)
    xp = torch.cat([x, torch.zeros(1, 1, 4, 3)], dim=1)
    for i, j in itertools.product(range(3), range(2)):
        cat = torch.cat([xp[0, 2 * i, 2 * j], xp[0, 2 * i + 1, 2 * j], xp[0, 2 * i, 2 * j + 1],
                         xp[0, 2 * i + 1, 2 * j + 1]])
        torch.testing.assert_close(out[0, i, j], pm.reduction(pm.norm(cat)))


def test_swin_model_returns_attention_maps() -> None:
    from tricklab.models import build_model

    torch.manual_seed(0)
    model = build_model("swin", (1, 28, 28), 10, dims=(8, 16), depths=(2, 1), heads=(2, 2), window=7).eval()
    x = torch.randn(2, 1, 28, 28)
    logits, maps = model.forward_with_attention(x)
    torch.testing.assert_close(logits, model(x))
    assert len(maps) == 3
    assert maps[0].shape == (2 * 4, 2, 49, 49)  # 14 x 14 tokens: 2 x 2 windows of 7 x 7 per image
    assert maps[2].shape == (2 * 1, 2, 49, 49)  # 7 x 7 after merging: one window
