"""Tests of tricklab.layers.attention.

References used: ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``
(torch built-ins, same weights loaded via state_dict), the explicit softmax(QK^T/sqrt(d) + mask)V formula
(``attention_naive`` or NumPy), and slow per-row / per-token Python loops. Every comparison checks outputs and
gradients (inputs and weights), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.layers.attention import (
    AxialAttention,
    KVCache,
    LinformerAttention,
    MultiHeadAttention,
    SparseAttention,
    TransformerBlock,
    TransformerDecoderBlock,
    attention_naive,
    causal_mask,
    chunked_attention,
    local_attention,
    multi_head_attention,
    sparse_mask,
)
from tricklab.layers.positional import alibi_bias, rotary_cos_sin, apply_rotary

DT = torch.float64


def _grads(out: torch.Tensor, tensors: list[torch.Tensor], seed: int = 0) -> tuple[torch.Tensor, ...]:
    # a random cotangent, not sum(): sum() hides errors that are constant along the softmax dimension
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad((out * w).sum(), tensors, allow_unused=False)


def assert_near(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-10) -> None:
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def _padding(B: int, S: int, lengths: list[int]) -> torch.Tensor:
    return torch.arange(S)[None, :] >= torch.tensor(lengths)[:, None]          # True = padding


# ================================================================================================ MHA vs torch
@pytest.mark.parametrize("impl", ["sdpa", "naive"])
@pytest.mark.parametrize("mask", ["none", "causal", "padding", "causal+padding", "additive"])
def test_mha_matches_nn_multiheadattention(impl: str, mask: str) -> None:
    """Reference: nn.MultiheadAttention(batch_first=True) with our weights (state_dict); outputs + grads."""
    torch.manual_seed(0)
    B, T, D, H = 3, 7, 12, 3
    ours = MultiHeadAttention(D, H, impl=impl).to(DT)
    ref = nn.MultiheadAttention(D, H, batch_first=True).to(DT)
    with torch.no_grad():  # random biases too, so that a bias mix-up cannot hide behind zero init
        ours.in_proj_bias.normal_()
        ours.out_proj.bias.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, D, dtype=DT, requires_grad=True)
    kw_ours: dict = {}
    kw_ref: dict = {"need_weights": False}
    if "causal" in mask:
        kw_ours["is_causal"] = True
        kw_ref["attn_mask"] = causal_mask(T)
    if "padding" in mask:
        kpm = _padding(B, T, [7, 4, 5])
        kw_ours["key_padding_mask"] = kw_ref["key_padding_mask"] = kpm
    if mask == "additive":
        am = torch.randn(T, T, dtype=DT)
        kw_ours["attn_mask"] = kw_ref["attn_mask"] = am
    y = ours(x, **kw_ours)
    y_ref = ref(x, x, x, **kw_ref)[0]
    assert_near(y, y_ref)
    g = _grads(y, [x, ours.in_proj_weight, ours.in_proj_bias, ours.out_proj.weight])
    g_ref = _grads(y_ref, [x, ref.in_proj_weight, ref.in_proj_bias, ref.out_proj.weight])
    for a, b in zip(g, g_ref):
        assert_near(a, b)


def test_mha_cross_attention_kdim_vdim_matches_torch() -> None:
    """Reference: nn.MultiheadAttention with kdim/vdim (separate q/k/v weights), bool attn_mask, padding."""
    torch.manual_seed(1)
    B, T, S, D, H = 2, 4, 6, 8, 2
    ours = MultiHeadAttention(D, H, kdim=5, vdim=3).to(DT)
    ref = nn.MultiheadAttention(D, H, kdim=5, vdim=3, batch_first=True).to(DT)
    ref.load_state_dict(ours.state_dict())
    q = torch.randn(B, T, D, dtype=DT, requires_grad=True)
    k = torch.randn(B, S, 5, dtype=DT, requires_grad=True)
    v = torch.randn(B, S, 3, dtype=DT, requires_grad=True)
    am = torch.rand(T, S, generator=torch.Generator().manual_seed(2)) < 0.3
    am[:, 0] = False                                   # every query keeps at least one key
    kpm = _padding(B, S, [6, 5])
    y = ours(q, k, v, attn_mask=am, key_padding_mask=kpm)
    y_ref = ref(q, k, v, attn_mask=am, key_padding_mask=kpm, need_weights=False)[0]
    assert_near(y, y_ref)
    for a, b in zip(_grads(y, [q, k, v, ours.k_proj_weight]), _grads(y_ref, [q, k, v, ref.k_proj_weight])):
        assert_near(a, b)


def test_functional_sdpa_equals_naive_with_4d_masks() -> None:
    """Reference: the explicit formula (impl='naive'); per-(batch, head) float mask + bool mask + causal."""
    torch.manual_seed(2)
    B, T, D, H = 2, 5, 8, 2
    q, k, v = (torch.randn(B, T, D, dtype=DT, requires_grad=True) for _ in range(3))
    am = torch.randn(B, H, T, T, dtype=DT)
    outs = [multi_head_attention(q, k, v, n_heads=H, attn_mask=am, is_causal=True, impl=i)
            for i in ("sdpa", "naive")]
    assert_near(outs[0], outs[1])
    for a, b in zip(_grads(outs[0], [q, k, v]), _grads(outs[1], [q, k, v])):
        assert_near(a, b)
    # NumPy closed form for one head: softmax(q k^T / sqrt(d) + am + causal) v
    qn, kn, vn = (t.detach().numpy()[0, :, :4] for t in (q, k, v))
    s = qn @ kn.T / math.sqrt(4) + am[0, 0].numpy() + np.where(np.triu(np.ones((T, T)), 1) > 0, -np.inf, 0.0)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(outs[0].detach().numpy()[0, :, :4], (p / p.sum(-1, keepdims=True)) @ vn, atol=1e-12)


def test_dropout_only_in_training() -> None:
    """Reference: eval mode ignores dropout (equals dropout=0); training mode with p>0 differs, with p -> grads."""
    torch.manual_seed(3)
    x = torch.randn(2, 6, 8)
    a = MultiHeadAttention(8, 2, dropout=0.5)
    b = MultiHeadAttention(8, 2)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    torch.testing.assert_close(a(x), b(x))
    a.train()
    assert not torch.allclose(a(x), b(x))


# =================================================================================================== KV cache
@pytest.mark.parametrize("pos", ["none", "rotary", "alibi"])
def test_kv_cache_decoding_equals_causal_forward(pos: str) -> None:
    """Reference: one causal full forward of the same layer; token-by-token decoding with a KVCache must match."""
    torch.manual_seed(4)
    B, T, D, H = 2, 9, 8, 2
    layer = MultiHeadAttention(D, H, rotary=pos == "rotary", alibi=pos == "alibi").to(DT)
    x = torch.randn(B, T, D, dtype=DT, requires_grad=True)
    full = layer(x, is_causal=True)
    cache = KVCache()
    steps = [layer(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(T)]
    assert len(cache) == T
    inc = torch.cat(steps, dim=1)
    assert_near(inc, full)
    for a, b in zip(_grads(inc, [x, layer.in_proj_weight]), _grads(full, [x, layer.in_proj_weight])):
        assert_near(a, b)
    # a prefix of 4 then single tokens: chunks of any size decode the same
    cache.reset()
    inc2 = torch.cat([layer(x[:, :4], is_causal=True, cache=cache)]
                     + [layer(x[:, t:t + 1], is_causal=True, cache=cache) for t in range(4, T)], dim=1)
    assert_near(inc2, full)


def test_rotary_and_alibi_inside_mha_match_explicit_formula() -> None:
    """Reference: naive attention on projected heads with RoPE applied by hand / the ALiBi bias added by hand."""
    torch.manual_seed(5)
    B, T, D, H = 2, 6, 8, 2
    x = torch.randn(B, T, D, dtype=DT)
    for rotary, alibi in [(True, False), (False, True)]:
        layer = MultiHeadAttention(D, H, rotary=rotary, alibi=alibi).to(DT)
        q, k, v = (t.unflatten(-1, (H, -1)).transpose(1, 2) for t in F.linear(x, layer.in_proj_weight,
                                                                               layer.in_proj_bias).chunk(3, -1))
        bias = None
        if rotary:
            cos, sin = rotary_cos_sin(T, D // H, dtype=DT)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if alibi:
            bias = alibi_bias(H, T, dtype=DT)
        ref = layer.out_proj(attention_naive(q, k, v, bias).transpose(1, 2).flatten(2))
        assert_near(layer(x), ref)


# ========================================================================================== Transformer blocks
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_transformer_block_matches_torch_encoder_layer(norm_first: bool, causal: bool) -> None:
    """Reference: nn.TransformerEncoderLayer(norm_first=..., activation='gelu', dropout=0, batch_first=True)."""
    torch.manual_seed(6)
    B, T, D, H = 2, 6, 8, 2
    ours = TransformerBlock(D, H, d_ff=16, norm_first=norm_first, causal=causal).to(DT)
    ref = nn.TransformerEncoderLayer(D, H, 16, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm_first).to(DT)
    with torch.no_grad():
        for p in ours.parameters():   # move LayerNorm weights/biases off (1, 0) so that they are tested too
            p.add_(0.1 * torch.randn_like(p))
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, D, dtype=DT, requires_grad=True)
    kpm = _padding(B, T, [6, 4])
    y = ours(x, key_padding_mask=kpm)
    y_ref = ref(x, src_key_padding_mask=kpm, src_mask=causal_mask(T) if causal else None, is_causal=causal)
    assert_near(y, y_ref)
    wo, wr = dict(ours.named_parameters()), dict(ref.named_parameters())
    names = ["self_attn.in_proj_weight", "linear1.weight", "norm1.weight", "norm2.bias"]
    g = _grads(y, [x] + [wo[n] for n in names])
    g_ref = _grads(y_ref, [x] + [wr[n] for n in names])
    for a, b in zip(g, g_ref):
        assert_near(a, b)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_matches_torch_decoder_layer(norm_first: bool) -> None:
    """Reference: nn.TransformerDecoderLayer(gelu, dropout 0, batch_first) with a causal tgt_mask."""
    torch.manual_seed(7)
    B, T, S, D, H = 2, 5, 7, 8, 2
    ours = TransformerDecoderBlock(D, H, d_ff=16, norm_first=norm_first).to(DT)
    ref = nn.TransformerDecoderLayer(D, H, 16, dropout=0.0, activation="gelu", batch_first=True,
                                     norm_first=norm_first).to(DT)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, D, dtype=DT, requires_grad=True)
    mem = torch.randn(B, S, D, dtype=DT, requires_grad=True)
    mkpm = _padding(B, S, [7, 3])
    y = ours(x, mem, memory_key_padding_mask=mkpm)
    y_ref = ref(x, mem, tgt_mask=causal_mask(T), memory_key_padding_mask=mkpm, tgt_is_causal=True)
    assert_near(y, y_ref)
    names = ["multihead_attn.in_proj_weight", "norm3.weight"]
    g = _grads(y, [x, mem] + [dict(ours.named_parameters())[n] for n in names])
    g_ref = _grads(y_ref, [x, mem] + [dict(ref.named_parameters())[n] for n in names])
    for a, b in zip(g, g_ref):
        assert_near(a, b)


def test_block_rotary_alibi_options_run_and_are_causal() -> None:
    """Reference: causality itself — with causal=True, changing token t must not change outputs before t."""
    torch.manual_seed(8)
    for kw in ({"rotary": True}, {"alibi": True}):
        blk = TransformerBlock(8, 2, causal=True, **kw).to(DT)
        x = torch.randn(1, 6, 8, dtype=DT)
        x2 = x.clone()
        x2[:, 4] += 1.0
        y, y2 = blk(x), blk(x2)
        assert_near(y[:, :4], y2[:, :4])
        assert (y[:, 4:] - y2[:, 4:]).abs().max() > 1e-3


# ============================================================================================== sparse attention
def _allowed_loop(T: int, kind: str, window: int | None, stride: int | None, causal: bool) -> np.ndarray:
    # slow reference: Child et al. 2019's sets written out literally
    ok = np.zeros((T, T), dtype=bool)
    for i in range(T):
        for j in range(T):
            if kind == "local":
                a = abs(i - j) < window
            elif kind == "strided":
                a = abs(i - j) < stride or (i - j) % stride == 0
            else:
                a = i // stride == j // stride or j % stride >= stride - window
            ok[i, j] = a and (j <= i or not causal)
    return ok


@pytest.mark.parametrize("kind,window,stride", [("local", 3, None), ("strided", None, 3), ("fixed", 2, 4)])
@pytest.mark.parametrize("causal", [True, False])
def test_sparse_mask_matches_loop(kind: str, window: int | None, stride: int | None, causal: bool) -> None:
    """Reference: the pattern definitions as a double Python loop."""
    m = sparse_mask(11, kind, window=window, stride=stride, causal=causal)
    np.testing.assert_array_equal(~m.numpy(), _allowed_loop(11, kind, window, stride, causal))


@pytest.mark.parametrize("kind,window,stride", [("local", 3, None), ("strided", None, 3), ("fixed", 2, 4)])
@pytest.mark.parametrize("causal", [True, False])
def test_sparse_attention_equals_dense_with_mask(kind: str, window: int | None, stride: int | None,
                                                 causal: bool) -> None:
    """Reference: MultiHeadAttention(impl='naive') with the explicit sparse mask; outputs + grads."""
    torch.manual_seed(9)
    T = 10                                  # not a multiple of the window: exercises the padded last block
    sp = SparseAttention(8, 2, kind, window=window, stride=stride, causal=causal).to(DT)
    dense = MultiHeadAttention(8, 2, impl="naive").to(DT)
    dense.load_state_dict(sp.attn.state_dict())
    x = torch.randn(2, T, 8, dtype=DT, requires_grad=True)
    y = sp(x)
    y_ref = dense(x, attn_mask=sparse_mask(T, kind, window=window, stride=stride, causal=causal))
    assert_near(y, y_ref)
    for a, b in zip(_grads(y, [x, sp.attn.in_proj_weight]), _grads(y_ref, [x, dense.in_proj_weight])):
        assert_near(a, b)


def test_local_attention_window_larger_than_sequence() -> None:
    """Reference: full causal attention (a window >= T blocks nothing but the future)."""
    q, k, v = (torch.randn(1, 2, 5, 4, dtype=DT) for _ in range(3))
    assert_near(local_attention(q, k, v, 8, causal=True), attention_naive(q, k, v, torch.zeros(5, 5, dtype=DT)
                                                                      .masked_fill(causal_mask(5), -math.inf)))


# ===================================================================================================== Linformer
def test_linformer_matches_numpy_formula() -> None:
    """Reference: NumPy softmax(Q_h (E K_h)^T / sqrt(d)) (F V_h) per head (Wang et al. 2020, eq. 7); grads vs naive."""
    torch.manual_seed(10)
    B, T, D, H, n, kp = 2, 6, 8, 2, 9, 4
    lin = LinformerAttention(D, H, seq_len=n, k=kp).to(DT)
    x = torch.randn(B, T, D, dtype=DT, requires_grad=True)
    y = lin(x)
    a = lin.attn
    qkv = (x.detach().numpy() @ a.in_proj_weight.detach().numpy().T + a.in_proj_bias.detach().numpy())
    q, k, v = np.split(qkv, 3, axis=-1)
    E, Fm = lin.E.detach().numpy()[:, :T], lin.F.detach().numpy()[:, :T]
    heads = []
    for h in range(H):
        sl = slice(h * D // H, (h + 1) * D // H)
        s = q[..., sl] @ np.swapaxes(E @ k[..., sl], -1, -2) / math.sqrt(D // H)      # (B, T, kp)
        p = np.exp(s - s.max(-1, keepdims=True))
        heads.append((p / p.sum(-1, keepdims=True)) @ (Fm @ v[..., sl]))
    ref = np.concatenate(heads, -1) @ a.out_proj.weight.detach().numpy().T + a.out_proj.bias.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-12)

    # gradients: against the same formula in torch with attention_naive (independent of the SDPA path)
    def naive(xx: torch.Tensor) -> torch.Tensor:
        qq, kk, vv = (t.unflatten(-1, (H, -1)).transpose(1, 2)
                      for t in F.linear(xx, a.in_proj_weight, a.in_proj_bias).chunk(3, -1))
        o = attention_naive(qq, lin.E[:, :T] @ kk, lin.F[:, :T] @ vv)
        return a.out_proj(o.transpose(1, 2).flatten(2))

    y2 = naive(x)
    for g1, g2 in zip(_grads(y, [x, lin.E, lin.F]), _grads(y2, [x, lin.E, lin.F])):
        assert_near(g1, g2)


def test_linformer_padding_and_length_checks() -> None:
    """Reference: zero-padding keys/values is what key_padding_mask does (same output as zeroed inputs' k, v)."""
    lin = LinformerAttention(8, 2, seq_len=6, k=3, share_kv=True)
    assert lin.F is None
    with pytest.raises(ValueError, match="seq_len"):
        lin(torch.randn(1, 7, 8))
    x = torch.randn(2, 5, 8)
    kpm = _padding(2, 5, [5, 3])
    y = lin(x, key_padding_mask=kpm)
    assert torch.isfinite(y).all()
    # padded positions influence nothing: changing them leaves the (real) outputs unchanged
    x2 = x.clone()
    x2[1, 3:] += 5.0
    torch.testing.assert_close(lin(x2, key_padding_mask=kpm)[1, :3], y[1, :3])


# ========================================================================================================= axial
def test_axial_attention_matches_row_column_loops() -> None:
    """Reference: a Python loop running the row attention on each row, then the column attention on each column."""
    torch.manual_seed(11)
    B, Hh, W, D = 2, 3, 4, 8
    ax = AxialAttention(D, 2).to(DT)
    x = torch.randn(B, Hh, W, D, dtype=DT, requires_grad=True)
    y = ax(x)
    rows = torch.stack([torch.stack([ax.row_attn(x[b, i][None])[0] for i in range(Hh)]) for b in range(B)])
    cols = torch.stack([torch.stack([ax.col_attn(rows[b, :, j][None])[0] for j in range(W)], dim=1)
                        for b in range(B)])
    assert_near(y, cols)
    ps = [x, ax.row_attn.in_proj_weight, ax.col_attn.out_proj.weight]
    for a, b in zip(_grads(y, ps), _grads(cols, ps)):
        assert_near(a, b)


# ======================================================================================================= chunked
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,chunk", [(13, 4), (16, 16), (7, 3), (5, 8)])
def test_chunked_attention_equals_full(causal: bool, T: int, chunk: int) -> None:
    """Reference: F.scaled_dot_product_attention (float32, 1e-5) and attention_naive (float64); outputs + grads."""
    g = torch.Generator().manual_seed(12)
    for dt, tol in ((torch.float32, 1e-5), (DT, 1e-10)):
        q, k, v = (torch.randn(2, 2, T, 8, generator=g, dtype=dt, requires_grad=True) for _ in range(3))
        y = chunked_attention(q, k, v, chunk, is_causal=causal)
        y_ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
        for a, b in zip(_grads(y, [q, k, v]), _grads(y_ref, [q, k, v])):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_chunked_attention_gradcheck_and_no_checkpoint_path() -> None:
    """Reference: torch.autograd.gradcheck (finite differences) in float64, with and without checkpointing."""
    g = torch.Generator().manual_seed(13)
    q, k, v = (torch.randn(1, 5, 3, generator=g, dtype=DT, requires_grad=True) for _ in range(3))
    for ck in (True, False):
        assert torch.autograd.gradcheck(lambda a, b, c: chunked_attention(a, b, c, 2, True, checkpoint_chunks=ck),
                                        (q, k, v))


def test_mha_chunked_impl_matches_sdpa() -> None:
    """Reference: the same layer with impl='sdpa' (causal and unmasked)."""
    torch.manual_seed(14)
    a = MultiHeadAttention(8, 2, impl="chunked", chunk_size=3).to(DT)
    b = MultiHeadAttention(8, 2).to(DT)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 10, 8, dtype=DT)
    for c in (False, True):
        assert_near(a(x, is_causal=c), b(x, is_causal=c))
    with pytest.raises(ValueError, match="chunked"):
        a(x, key_padding_mask=_padding(2, 10, [10, 5]))


# ==================================================================================================== bad input
def test_bad_inputs_raise_clear_errors() -> None:
    x = torch.randn(2, 5, 8)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="impl"):
        MultiHeadAttention(8, 2, impl="flash")  # type: ignore[arg-type]
    m = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"\(B, T, 8\)"):
        m(torch.randn(2, 5, 6))
    with pytest.raises(TypeError, match="key_padding_mask must be bool"):
        m(x, key_padding_mask=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        m(x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask must be"):
        m(x, attn_mask=torch.zeros(4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask must be bool"):
        m(x, attn_mask=torch.zeros(5, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="KVCache"):
        m(x, cache={})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="window"):
        sparse_mask(5, "local")
    with pytest.raises(ValueError, match="kind"):
        sparse_mask(5, "random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is_causal"):
        chunked_attention(torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4), 2, is_causal=True)
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_attention(x, x, x, 0)
    with pytest.raises(ValueError, match="4-D"):
        AxialAttention(8, 2)(x)


def _peak_bytes(fn) -> int:
    # peak of the running sum of CPU-allocator creates/destroys during fn(), from torch.profiler's memory timeline
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as p:
        fn()
    cur = peak = 0
    for _, action, _, size in sorted(p._memory_profile().timeline, key=lambda e: e[0]):
        cur += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, cur)
    return peak


def test_chunked_attention_memory_is_not_quadratic() -> None:
    """Reference: the naive path's peak memory, which holds (T, T) scores: 4x per doubling of T. Chunked must grow
    at most linearly (ratio <= 2 up to allocator noise) and stay far below naive at T = 512."""
    g = torch.Generator().manual_seed(15)
    peaks: dict[str, list[int]] = {"naive": [], "chunked": []}
    for T in (256, 512):
        q, k, v = (torch.randn(1, 2, T, 16, generator=g) for _ in range(3))
        with torch.no_grad():
            peaks["naive"].append(_peak_bytes(lambda: attention_naive(q, k, v)))
            peaks["chunked"].append(_peak_bytes(lambda: chunked_attention(q, k, v, 64)))
    assert peaks["naive"][1] / peaks["naive"][0] > 3.5
    assert peaks["chunked"][1] / peaks["chunked"][0] <= 2.1
    assert peaks["chunked"][1] * 4 < peaks["naive"][1]
