"""Tests for the GPT language model (tricklab.models.gpt).

References:
* torch's own ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)`` with a causal
  ``src_mask`` is the slow path the whole forward pass is checked against (outputs and gradients, float64):
  ``TransformerBlock`` uses the same parameter names, so its state_dict loads into torch's layer;
* ``torch.autograd.gradcheck`` (finite differences, float64) for the gradients of a tiny model;
* a per-position Python loop of ``-log_softmax`` for :func:`lm_loss`;
* causality: perturbing token j must leave every logit before j bit-for-bit unchanged;
* the KV-cache path (prefill + steps) against the full forward, outputs and gradients;
* bfloat16 autocast against the float32 forward and backward, within stated tolerances.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data.datasets import text as tx
from tricklab.errors import ConfigError
from tricklab.models.gpt import GPT, gpt, lm_loss

TEXT_FILE = next((d / tx.FILE_NAME for d in tx.default_dirs() if (d / tx.FILE_NAME).is_file()), None)
needs_text = pytest.mark.skipif(TEXT_FILE is None and not os.environ.get("CI"),
                                reason=f"no {tx.FILE_NAME} in {[str(d) for d in tx.default_dirs()]}")


def tiny(vocab: int = 11, block: int = 8, **kw: object) -> GPT:
    torch.manual_seed(0)
    args = {"n_layer": 2, "d_model": 16, "n_heads": 2, "dropout": 0.0} | kw
    return gpt((block,), vocab, **args)  # type: ignore[arg-type]


def reference_forward(model: GPT, x: torch.Tensor) -> torch.Tensor:
    """The same network rebuilt from torch's nn.TransformerEncoderLayer (slow, independent path)."""
    h = model.tok_emb.weight[x] + model.pos_emb.weight[: x.shape[1]]
    causal = torch.triu(torch.full((x.shape[1], x.shape[1]), float("-inf"), dtype=h.dtype), diagonal=1)
    for block in model.blocks:
        d = h.shape[-1]
        layer = nn.TransformerEncoderLayer(d, block.self_attn.n_heads, block.linear1.out_features, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True).to(h.dtype)
        layer.load_state_dict(block.state_dict())
        h = layer(h, src_mask=causal)
    h = F.layer_norm(h, h.shape[-1:], model.ln_f.weight, model.ln_f.bias)
    return h @ model.tok_emb.weight.T


def test_shapes_tied_head_and_init() -> None:
    m = tiny()
    x = torch.randint(0, 11, (3, 8))
    assert m(x).shape == (3, 8, 11)
    assert m(x[:, :5]).shape == (3, 5, 11)  # shorter than block_size is fine
    assert m.head.weight is m.tok_emb.weight  # tied (Press & Wolf 2017)
    assert abs(m.tok_emb.weight.std().item() - 0.02) < 0.01  # GPT-2 init N(0, 0.02)
    assert m.block_size == 8 and gpt((8,), 11, block_size=32).block_size == 32


def test_matches_torch_transformer_layers_outputs_and_grads() -> None:
    m = tiny().double().eval()
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    w = torch.randn(2, 8, 11, dtype=torch.float64)
    out = m(x)
    ref = reference_forward(m, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.autograd.grad((out * w).sum(), m.tok_emb.weight)[0]
    g_ref = torch.autograd.grad((ref * w).sum(), m.tok_emb.weight)[0]
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


def test_gradcheck_position_table() -> None:
    """Finite differences vs autograd through the whole model (float64, tiny)."""
    m = tiny(vocab=5, block=4, n_layer=1, d_model=8).double().eval()
    x = torch.randint(0, 5, (1, 4), generator=torch.Generator().manual_seed(2))
    pos = m.pos_emb.weight.detach().clone().requires_grad_(True)

    def f(p: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, {"pos_emb.weight": p}, (x,))

    assert torch.autograd.gradcheck(f, (pos,), eps=1e-6, atol=1e-6)


def test_is_causal_future_tokens_do_not_change_earlier_logits() -> None:
    m = tiny().eval()
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(3))
    base = m(x)
    for j in (0, 3, 7):
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % 11
        out = m(x2)
        assert torch.equal(out[:, :j], base[:, :j]), f"position < {j} saw token {j}"
        assert not torch.allclose(out[:, j], base[:, j])  # the perturbed position itself does see it


def test_lm_loss_matches_python_loop_with_ignore_index() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 7, (2, 5), generator=g)
    targets[0, 1] = targets[1, 4] = -100
    loss = lm_loss(logits, targets)
    terms = [-torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b in range(2) for t in range(5)
             if targets[b, t] != -100]
    ref = torch.stack(terms).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(ref, logits)[0])
    with pytest.raises(ValueError, match="logits"):
        lm_loss(logits[0], targets)


def test_bad_input_raises_clear_errors() -> None:
    m = tiny()
    with pytest.raises(TypeError, match="int64"):
        m(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        m(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ConfigError, match="divisible"):
        gpt((8,), 11, d_model=10, n_heads=4)
    with pytest.raises(ConfigError, match="input_shape"):
        gpt((1, 8), 11)
    with pytest.raises(ConfigError, match="shorter"):
        gpt((8,), 11, block_size=4)


def test_kv_cache_path_equals_forward_outputs_and_grads() -> None:
    """Reference: the full forward. Prefill 3 positions into the KV cache, then one token at a time: the same
    logits (float64, 1e-10) and the same gradient of every parameter (the cache keeps the graph)."""
    m = tiny(block=8).double().eval()
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(6))
    full = m(x)
    logits, state = m.forward_with_state(x[:, :3], m.init_state(2))
    parts = [logits]
    for t in range(3, 8):
        step_logits, state = m.step(x[:, t], state)
        parts.append(step_logits[:, None])
    cached = torch.cat(parts, 1)
    torch.testing.assert_close(cached, full, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(full)
    params = list(m.parameters())
    for a, b in zip(torch.autograd.grad((cached * w).sum(), params), torch.autograd.grad((full * w).sum(), params)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert len(state[0]) == 8


def test_bfloat16_autocast_close_to_float32() -> None:
    """Reference: the float32 forward and backward. Under torch.autocast("cpu", bfloat16): logits within 1%
    (relative norm; measured 0.33% over 3 seeds), loss within 1e-3, each parameter gradient within 3% (measured
    <= 0.75%), all gradients together within 1.5% (measured 0.44%)."""
    torch.manual_seed(0)
    m = gpt((64,), 65, n_layer=2, d_model=64, n_heads=4, dropout=0.0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 65, (4, 64), generator=g), torch.randint(0, 65, (4, 64), generator=g)
    logits32 = m(x)
    loss32 = lm_loss(logits32, y)
    grads32 = torch.autograd.grad(loss32, list(m.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits16 = m(x)
    assert logits16.dtype == torch.bfloat16
    loss16 = lm_loss(logits16.float(), y)
    grads16 = torch.autograd.grad(loss16, list(m.parameters()))

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.detach().float() - b.detach()).norm() / b.detach().norm())

    assert rel(logits16, logits32) < 1e-2
    assert abs(loss16.item() - loss32.item()) < 1e-3
    assert max(rel(a, b) for a, b in zip(grads16, grads32)) < 3e-2
    assert rel(torch.cat([a.flatten() for a in grads16]), torch.cat([b.flatten() for b in grads32])) < 1.5e-2


@pytest.mark.slow  # torch.compile takes ~10 s on one shared core
def test_compiled_matches_eager() -> None:
    m = tiny(n_layer=1).eval()
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(5))
    compiled = torch.compile(m, backend="aot_eager")
    torch.testing.assert_close(compiled(x), m(x))


@needs_text
def test_training_on_a_slice_of_shakespeare_reduces_the_loss(train_lm: Callable[..., list[float]]) -> None:
    ds = tx.load_shakespeare_char(block_size=32, max_train_windows=256)
    torch.manual_seed(0)
    m = gpt(ds.input_shape, ds.num_classes, n_layer=1, d_model=32, n_heads=2, dropout=0.0)
    losses = train_lm(m, ds, steps=40, lr=3e-3)
    assert abs(losses[0] - math.log(ds.num_classes)) < 0.5  # starts near uniform: ln V
    assert sum(losses[-5:]) / 5 < losses[0] - 0.8, losses
