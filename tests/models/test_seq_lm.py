"""Tests for the recurrent language models (tricklab.models.seq_lm): LSTM LM, Mamba LM and the hybrid.

References:
* LSTM LM: the LSTM equations written out as a slow per-step loop (Hochreiter & Schmidhuber 1997, torch's gate
  order i, f, g, o): i, f, o = sigmoid(.), g = tanh(.), c' = f c + i g, h' = o tanh(c'); outputs and gradients;
* both: the recurrent ``step`` path (one token at a time) equals the parallel ``forward`` (outputs and
  gradients, float64); ``torch.autograd.gradcheck`` (finite differences) on a tiny Mamba LM;
* causality: perturbing token j leaves every logit before j unchanged;
* hybrid: its attention layer is GPT's block (checked against GPT's own forward on the same weights through the
  KV-cache path in test_generate.py) and its Mamba layers are MambaLayer;
* bfloat16 autocast: the float32 forward and backward of the same model, within the stated tolerances.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from tricklab.data.datasets import text as tx
from tricklab.errors import ConfigError
from tricklab.layers.attention import TransformerBlock
from tricklab.layers.ssm import MambaLayer
from tricklab.models import build_model
from tricklab.models.gpt import gpt, lm_loss
from tricklab.models.seq_lm import LSTMLM, HybridLM, MambaLM, hybrid_lm, lstm_lm, mamba_lm

TEXT_FILE = next((d / tx.FILE_NAME for d in tx.default_dirs() if (d / tx.FILE_NAME).is_file()), None)
needs_text = pytest.mark.skipif(TEXT_FILE is None and not os.environ.get("CI"),
                                reason=f"no {tx.FILE_NAME} in {[str(d) for d in tx.default_dirs()]}")


def tiny_lstm() -> LSTMLM:
    torch.manual_seed(0)
    return lstm_lm((8,), 11, d_model=6, hidden_size=7, num_layers=2, dropout=0.0)  # type: ignore[return-value]


def tiny_mamba(selective: bool = True) -> MambaLM:
    torch.manual_seed(0)
    return mamba_lm((8,), 11, d_model=8, n_layer=2, d_state=4, selective=selective)  # type: ignore[return-value]


def tiny_hybrid() -> HybridLM:
    torch.manual_seed(0)
    return hybrid_lm((8,), 11, d_model=8, n_layer=3, d_state=4, n_heads=2)  # type: ignore[return-value]


def lstm_reference(m: LSTMLM, x: torch.Tensor) -> torch.Tensor:
    h_in = m.emb.weight[x]  # (B, T, D)
    b, t = x.shape
    for layer in range(m.lstm.num_layers):
        w_ih, w_hh = getattr(m.lstm, f"weight_ih_l{layer}"), getattr(m.lstm, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(m.lstm, f"bias_ih_l{layer}"), getattr(m.lstm, f"bias_hh_l{layer}")
        h = torch.zeros(b, m.lstm.hidden_size, dtype=h_in.dtype)
        c = torch.zeros_like(h)
        outs = []
        for s in range(t):
            gates = h_in[:, s] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        h_in = torch.stack(outs, dim=1)
    return h_in @ m.head.weight.T + m.head.bias


def test_lstm_matches_slow_equations_outputs_and_grads() -> None:
    m = tiny_lstm().double().eval()
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(1))
    out, ref = m(x), lstm_reference(m, x)
    assert out.shape == (2, 8, 11)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    w = torch.randn_like(out)
    params = (m.emb.weight, m.lstm.weight_hh_l0, m.lstm.bias_ih_l1)
    grads = torch.autograd.grad((out * w).sum(), params)
    grads_ref = torch.autograd.grad((ref * w).sum(), params)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("make", [tiny_lstm, tiny_mamba, lambda: tiny_mamba(False), tiny_hybrid],
                         ids=["lstm", "mamba", "s4ish", "hybrid"])
def test_step_path_equals_forward_outputs_and_grads(make: object) -> None:
    """Reference: the parallel forward. Stepping token by token, and prefilling 3 tokens then stepping, give the
    same logits and embedding gradients (float64)."""
    m = make().double().eval()  # type: ignore[operator]
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(2))
    full = m(x)
    state = m.init_state(2)
    steps = []
    for t in range(8):
        logits, state = m.step(x[:, t], state)
        steps.append(logits)
    stepped = torch.stack(steps, dim=1)
    torch.testing.assert_close(stepped, full, rtol=1e-8, atol=1e-9)
    w = torch.randn_like(full)
    torch.testing.assert_close(torch.autograd.grad((stepped * w).sum(), m.emb.weight)[0],
                               torch.autograd.grad((full * w).sum(), m.emb.weight)[0], rtol=1e-7, atol=1e-9)
    full = m(x)  # a fresh graph
    pre, state = m.forward_with_state(x[:, :3], m.init_state(2))
    rest = []
    for t in range(3, 8):
        logits, state = m.step(x[:, t], state)
        rest.append(logits)
    mixed = torch.cat([pre, torch.stack(rest, 1)], 1)
    torch.testing.assert_close(mixed, full, rtol=1e-8, atol=1e-9)
    torch.testing.assert_close(torch.autograd.grad((mixed * w).sum(), m.emb.weight)[0],
                               torch.autograd.grad((full * w).sum(), m.emb.weight)[0], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("make", [tiny_lstm, tiny_mamba, tiny_hybrid], ids=["lstm", "mamba", "hybrid"])
def test_is_causal(make: object) -> None:
    m = make().eval()  # type: ignore[operator]
    x = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(3))
    base = m(x)
    for j in (1, 5):
        x2 = x.clone()
        x2[:, j] = (x2[:, j] + 1) % 11
        out = m(x2)
        torch.testing.assert_close(out[:, :j], base[:, :j], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, j], base[:, j])


def test_mamba_lm_gradcheck_and_structure() -> None:
    torch.manual_seed(0)
    m = MambaLM(5, d_model=4, n_layer=1, d_state=2, d_conv=2, expand=1).double().eval()
    x = torch.randint(0, 5, (1, 4), generator=torch.Generator().manual_seed(4))
    emb = m.emb.weight.detach().clone().requires_grad_(True)

    def f(e: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(m, {"emb.weight": e, "head.weight": e}, (x,))

    assert torch.autograd.gradcheck(f, (emb,), eps=1e-6, atol=1e-5)
    assert m.head.weight is m.emb.weight and isinstance(m.norm_f, torch.nn.RMSNorm)
    lti = tiny_mamba(selective=False)
    flags = [mod.selective for mod in lti.modules() if hasattr(mod, "selective") and mod is not lti]
    assert flags and not any(flags)  # the ablation reaches every Mamba mixer


def test_hybrid_structure() -> None:
    """Reference: the definition. One pre-LN causal TransformerBlock at n_layer // 2 (or attn_layer), MambaLayer
    elsewhere, tied head; built through the registry; its attention block computes GPT's block (same weights)."""
    m = build_model("hybrid_lm", (16,), 11, d_model=8, n_layer=4, d_state=4, n_heads=2)
    assert isinstance(m, HybridLM) and m.attn_layer == 2 and m.head.weight is m.emb.weight
    kinds = [type(layer) for layer in m.layers]
    assert kinds == [MambaLayer, MambaLayer, TransformerBlock, MambaLayer]
    block = m.layers[2]
    assert block.norm_first and block.causal
    assert hybrid_lm((16,), 11, d_model=8, n_layer=3, n_heads=2, attn_layer=0).layers[0].causal
    g = gpt((16,), 11, n_layer=1, d_model=8, n_heads=2, dropout=0.0)
    g.blocks[0].load_state_dict(block.state_dict())
    h = torch.randn(2, 16, 8)
    torch.testing.assert_close(block(h), g.blocks[0](h))
    with pytest.raises(ConfigError, match="attn_layer"):
        hybrid_lm((8,), 11, n_layer=2, attn_layer=2)
    with pytest.raises(ConfigError, match="divisible"):
        hybrid_lm((8,), 11, d_model=10, n_heads=4)


@pytest.mark.parametrize("name", ["mamba_lm", "hybrid_lm"])
def test_bfloat16_autocast_close_to_float32(name: str) -> None:
    """Reference: the float32 forward and backward of the same model. Under torch.autocast("cpu", bfloat16) the
    projections run in bfloat16 and the scan in float32 (it upcasts its inputs); stated tolerances, about 3x the
    errors measured over 3 seeds (logits 0.7%, gradients <= 2%): logits within 2% (relative norm), the loss within
    1e-3, every parameter gradient within 5% (relative norm), gradients all together within 2%."""
    torch.manual_seed(0)
    m = build_model(name, (64,), 65, d_model=64, n_layer=3, d_state=16)
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

    assert rel(logits16, logits32) < 2e-2
    assert abs(loss16.item() - loss32.item()) < 1e-3
    assert max(rel(a, b) for a, b in zip(grads16, grads32)) < 5e-2
    assert rel(torch.cat([a.flatten() for a in grads16]), torch.cat([b.flatten() for b in grads32])) < 2e-2


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="tie_weights"):
        lstm_lm((8,), 11, d_model=6, hidden_size=7, tie_weights=True)
    with pytest.raises(ConfigError, match="selective"):
        mamba_lm((8,), 11, selective="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int64"):
        tiny_lstm()(torch.zeros(2, 8))
    with pytest.raises(ValueError, match="list of 2 per-layer states"):
        tiny_mamba().step(torch.zeros(2, dtype=torch.long), [])
    with pytest.raises(ValueError, match="list of 3 per-layer states"):
        tiny_hybrid().forward_with_state(torch.zeros(2, 3, dtype=torch.long), None)  # type: ignore[arg-type]
    assert tiny_lstm()(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 11)


@needs_text
@pytest.mark.parametrize("name", ["lstm_lm", "mamba_lm", "hybrid_lm"])
def test_training_on_a_slice_of_shakespeare_reduces_the_loss(name: str, train_lm: Callable[..., list[float]]) -> None:
    ds = tx.load_shakespeare_char(block_size=32, max_train_windows=256)
    torch.manual_seed(0)
    factory = {"lstm_lm": lambda: lstm_lm(ds.input_shape, ds.num_classes, d_model=32, hidden_size=64,
                                          num_layers=1, dropout=0.0),
               "mamba_lm": lambda: mamba_lm(ds.input_shape, ds.num_classes, d_model=32, n_layer=1, d_state=8),
               "hybrid_lm": lambda: hybrid_lm(ds.input_shape, ds.num_classes, d_model=32, n_layer=2, d_state=8,
                                              n_heads=2)}
    losses = train_lm(factory[name](), ds, steps=30, lr=1e-2)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
