"""Tests for sampling and char encode/decode (tricklab.models.generate).

References: ``torch.topk`` for the top-k set; ``argmax`` for the temperature -> 0 limit; the softmax closed
form ``exp(l / T) / sum exp(l / T)`` computed in NumPy for the sampled frequencies (binomial tolerance);
the model's full forward on the whole (cropped) sequence (the simple path) for the context cropping, the
recurrent ``step`` path and GPT's KV cache: same greedy tokens, logits to tolerance.
Sampling is not differentiable; the cached paths' gradients are checked against the full forward in
test_gpt.py / test_seq_lm.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tricklab.models.generate import decode, encode, generate, has_state_interface, sample_next
from tricklab.models.gpt import GPT, StaticKVCache, gpt
from tricklab.models.seq_lm import LSTMLM, HybridLM, MambaLM


def test_top_k_never_samples_outside_the_top_k() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 30, generator=g)
    top = torch.topk(logits, 5, dim=-1).indices
    for _ in range(50):
        s = sample_next(logits, temperature=2.0, top_k=5, generator=g)
        assert (top == s[:, None]).any(1).all()
    assert torch.equal(sample_next(logits, 1.0, top_k=1, generator=g), logits.argmax(-1))


def test_temperature_to_zero_is_argmax() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(128, 20, generator=g)
    assert torch.equal(sample_next(logits, 0.0), logits.argmax(-1))
    # with a small temperature the tempered softmax puts ~all mass on the argmax (gaps here are >> 1e-3)
    assert torch.equal(sample_next(logits, 1e-3, generator=g), logits.argmax(-1))


def test_sampled_frequencies_match_tempered_softmax() -> None:
    logits = torch.tensor([[1.0, 0.5, -0.5, 2.0, 0.0]])
    n, temp = 20000, 0.7
    draws = sample_next(logits.expand(n, -1), temp, generator=torch.Generator().manual_seed(2))
    freq = torch.bincount(draws, minlength=5).double() / n
    z = np.exp(logits[0].numpy().astype(np.float64) / temp)
    p = z / z.sum()
    tol = 5 * np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(freq.numpy() - p) < tol), (freq, p)


def test_sample_next_validates() -> None:
    with pytest.raises(ValueError, match="temperature"):
        sample_next(torch.zeros(1, 3), -1.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(torch.zeros(1, 3), 1.0, top_k=0)
    with pytest.raises(ValueError, match=r"\(B, V\)"):
        sample_next(torch.zeros(3), 1.0)


class Recorder(nn.Module):
    """Wraps a model and records the context lengths it is called with."""

    def __init__(self, inner: nn.Module, block_size: int) -> None:
        super().__init__()
        self.inner, self.block_size, self.lengths = inner, block_size, []  # type: ignore[var-annotated]

    def forward(self, x: Tensor) -> Tensor:
        self.lengths.append(x.shape[1])
        return self.inner(x)


def test_generate_crops_context_and_keeps_prompt() -> None:
    torch.manual_seed(0)
    m = gpt((6,), 9, n_layer=1, d_model=16, n_heads=2, dropout=0.1)
    rec = Recorder(m, 6)
    rec.train()
    prompt = torch.randint(0, 9, (2, 3))
    out = generate(rec, prompt, 8, temperature=0.0)
    assert out.shape == (2, 11) and torch.equal(out[:, :3], prompt)
    assert rec.lengths == [3, 4, 5, 6, 6, 6, 6, 6] and rec.training  # cropped to block_size, mode restored
    # greedy step t equals argmax of the model on the cropped context (the simple path, in eval mode)
    m.eval()
    for t in range(3, 11):
        ctx = out[:, max(0, t - 6):t]
        assert torch.equal(m(ctx)[:, -1].argmax(-1), out[:, t])
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(generate(m, prompt, 5, top_k=3, generator=g1), generate(m, prompt, 5, top_k=3, generator=g2))


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "lstm":
        return LSTMLM(9, 8, 12, 2, dropout=0.0)
    if kind == "mamba":
        return MambaLM(9, d_model=8, n_layer=2, d_state=4)
    if kind == "hybrid":
        return HybridLM(9, d_model=8, n_layer=3, d_state=4, n_heads=2)
    return gpt((40,), 9, n_layer=2, d_model=16, n_heads=2, dropout=0.1)  # dropout: eval mode must switch it off


@pytest.mark.parametrize("kind", ["lstm", "mamba", "hybrid", "gpt"])
def test_cached_decoding_equals_full_forward(kind: str) -> None:
    """Reference: the full forward on the whole sequence. Prefill + one step per token (recurrent state or KV
    cache) gives the same logits at every position (float64, 1e-10), and greedy generation the same tokens as
    re-running the model on the whole context per token."""
    m = _model(kind).double().eval()
    assert has_state_interface(m)
    x = torch.randint(0, 9, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = m(x)
        logits, state = m.forward_with_state(x[:, :7], m.init_state(2))
        steps = [logits]
        for t in range(7, 30):
            lt, state = m.step(x[:, t], state)
            steps.append(lt[:, None])
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)
    prompt = x[:, :4]
    fast = generate(m, prompt, 25, temperature=0.0)
    slow = generate(m, prompt, 25, temperature=0.0, cache=False)
    assert torch.equal(fast, slow)
    assert torch.equal(generate(m, prompt, 6, temperature=0.0, recurrent=False), slow[:, :10])  # the old name


def test_gpt_cache_beyond_block_size_matches_cropping() -> None:
    """Reference: the uncached path, which crops the context to block_size for every token. With the KV cache,
    generation past block_size (positions are absolute, so the cache is rebuilt from the cropped context) gives
    the same tokens, greedy and sampled with the same generator."""
    torch.manual_seed(0)
    m = gpt((6,), 9, n_layer=2, d_model=16, n_heads=2, dropout=0.0)
    prompt = torch.randint(0, 9, (3, 4))
    assert torch.equal(generate(m, prompt, 12, temperature=0.0), generate(m, prompt, 12, temperature=0.0,
                                                                          cache=False))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = generate(m, prompt, 12, top_k=4, generator=g1)
    b = generate(m, prompt, 12, top_k=4, generator=g2, cache=False)
    assert torch.equal(a, b)


def test_recurrent_models_are_not_cropped() -> None:
    """Reference: the full forward on the whole sequence. A recurrent model decoded with its state keeps the whole
    context even when block_size is given (the lab passes its training block): greedy tokens equal the argmax of
    the uncropped forward at every step."""
    m = _model("mamba").eval()
    prompt = torch.randint(0, 9, (2, 5), generator=torch.Generator().manual_seed(2))
    out = generate(m, prompt, 10, temperature=0.0, block_size=4)
    with torch.no_grad():
        for t in range(5, 15):
            assert torch.equal(m(out[:, :t])[:, -1].argmax(-1), out[:, t])


def test_static_kv_cache() -> None:
    """Reference: torch.cat of the appended keys/values (what KVCache does). The preallocated cache returns the
    same tensors, refuses to overflow unless it may grow, and grows by doubling."""
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(2, 3, t, 4, generator=g) for t in (3, 1, 2)]
    cache = StaticKVCache(6)
    for i, p in enumerate(parts):
        k, v = cache.append(p, -p)
        want = torch.cat(parts[: i + 1], dim=-2)
        assert torch.equal(k, want) and torch.equal(v, -want)
    assert len(cache) == 6 and cache.nbytes() == 2 * 2 * 3 * 6 * 4 * 4
    with pytest.raises(ValueError, match="exceed the capacity 6"):
        cache.append(parts[1], parts[1])
    growing = StaticKVCache(2, grow=True)
    for p in parts:
        k, _ = growing.append(p, p)
    assert torch.equal(k, torch.cat(parts, dim=-2)) and growing.capacity >= 6
    with pytest.raises(ValueError, match="capacity must be a positive int"):
        StaticKVCache(0)


def test_generate_validates_cache_request() -> None:
    prompt = torch.zeros(1, 2, dtype=torch.long)
    plain = Recorder(gpt((6,), 9, n_layer=1, d_model=8, n_heads=2), 6)
    assert not has_state_interface(plain)
    with pytest.raises(ValueError, match="init_state/forward_with_state/step"):
        generate(plain, prompt, 1, cache=True)
    m: GPT = gpt((6,), 9, n_layer=1, d_model=8, n_heads=2)  # type: ignore[assignment]
    with pytest.raises(ValueError, match="exceed block_size=6"):
        m.forward_with_state(torch.zeros(1, 7, dtype=torch.long), m.init_state(1))
    with pytest.raises(ValueError, match="list of 1 caches"):
        m.forward_with_state(prompt, [])


def test_encode_decode_round_trip_and_errors() -> None:
    vocab = sorted(set("hello world\n")) + ["[MASK]"]
    ids = encode("hello\nworld", vocab)
    assert ids.dtype == torch.int64 and decode(ids, vocab) == "hello\nworld"
    assert decode([len(vocab) - 1], vocab) == "[MASK]"
    with pytest.raises(ValueError, match=r"\['Z', 'x'\]"):
        encode("hex Zero", vocab)
    with pytest.raises(ValueError, match="outside"):
        decode([99], vocab)
    with pytest.raises(ValueError, match="1-D"):
        decode(torch.zeros(2, 2, dtype=torch.long), vocab)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(gpt((6,), 9, n_layer=1, d_model=8, n_heads=2), torch.zeros(1, 2, dtype=torch.long), -1)
