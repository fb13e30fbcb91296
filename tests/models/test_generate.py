"""Tests for sampling and char encode/decode (tricklab.models.generate).

References: ``torch.topk`` for the top-k set; ``argmax`` for the temperature -> 0 limit; the softmax closed
form ``exp(l / T) / sum exp(l / T)`` computed in NumPy for the sampled frequencies (binomial tolerance);
``GPT`` run on the full sequence (the simple path) for the context cropping and the recurrent ``step`` path.
Sampling is not differentiable, so there are no gradients to check here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from tricklab.models.generate import decode, encode, generate, sample_next
from tricklab.models.gpt import gpt
from tricklab.models.seq_lm import LSTMLM, MambaLM


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


@pytest.mark.parametrize("kind", ["lstm", "mamba"])
def test_recurrent_path_equals_full_forward(kind: str) -> None:
    torch.manual_seed(0)
    m = LSTMLM(9, 8, 12, 2, dropout=0.0) if kind == "lstm" else MambaLM(9, d_model=8, n_layer=2, d_state=4)
    prompt = torch.randint(0, 9, (2, 4))
    fast = generate(m, prompt, 6, temperature=0.0)  # step() path
    slow = generate(m, prompt, 6, temperature=0.0, recurrent=False)  # full forward each step
    assert torch.equal(fast, slow)
    with pytest.raises(ValueError, match="init_state/step"):
        generate(gpt((6,), 9, n_layer=1, d_model=8, n_heads=2), prompt, 1, recurrent=True)


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
