"""Tests of tricklab.layers.positional.

References: the papers' formulas written in NumPy (sinusoidal table, RoPE as complex multiplication, ALiBi slopes
and bias), RoPE's relative-position property, and torch.autograd.gradcheck for gradients (float64).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tricklab.layers.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_bias,
    alibi_slopes,
    apply_rotary,
    rotary_cos_sin,
    sinusoidal_encoding,
)

DT = torch.float64


# ===================================================================================================== sinusoidal
def test_sinusoidal_table_matches_numpy_formula() -> None:
    """Reference: Vaswani et al. 2017 sec. 3.5, PE[pos, 2i] = sin(pos/10000^(2i/d)), PE[pos, 2i+1] = cos(...)."""
    T, d = 50, 16
    pe = sinusoidal_encoding(T, d, dtype=DT).numpy()
    ref = np.zeros((T, d))
    for pos in range(T):
        for i in range(d // 2):
            ref[pos, 2 * i] = math.sin(pos / 10000 ** (2 * i / d))
            ref[pos, 2 * i + 1] = math.cos(pos / 10000 ** (2 * i / d))
    np.testing.assert_allclose(pe, ref, atol=1e-12)


def test_sinusoidal_module_adds_table_and_passes_gradient() -> None:
    """Reference: x + sinusoidal_encoding(T, d); d(out)/dx is the identity (checked by gradcheck)."""
    m = SinusoidalPositionalEncoding(8, max_len=20)
    x = torch.randn(2, 7, 8, dtype=DT, requires_grad=True)
    torch.testing.assert_close(m(x), x + sinusoidal_encoding(7, 8, dtype=DT))
    assert torch.autograd.gradcheck(m, (x,))
    assert not m.state_dict()                                  # the table is a non-persistent buffer
    with pytest.raises(ValueError, match="max_len"):
        m(torch.randn(1, 21, 8))
    with pytest.raises(ValueError, match="even"):
        SinusoidalPositionalEncoding(7)


def test_learned_embedding_adds_first_rows_and_gets_gradient() -> None:
    """Reference: x + weight[:T]; the table's gradient is the upstream gradient summed over the batch, rows < T."""
    torch.manual_seed(0)
    m = LearnedPositionalEmbedding(10, 4).to(DT)
    x = torch.randn(3, 6, 4, dtype=DT, requires_grad=True)
    y = m(x)
    torch.testing.assert_close(y, x + m.weight[:6])
    w = torch.randn_like(y)
    gx, gw = torch.autograd.grad((y * w).sum(), [x, m.weight])
    torch.testing.assert_close(gx, w)
    ref = torch.zeros(10, 4, dtype=DT)
    ref[:6] = w.sum(0)
    torch.testing.assert_close(gw, ref)
    with pytest.raises(ValueError, match=r"\(B, T, 4\)"):
        m(torch.randn(2, 3, 5))


# ========================================================================================================= rotary
def test_apply_rotary_matches_complex_multiplication() -> None:
    """Reference: RoPE as complex numbers (Su et al. 2021, eq. 12): (x_2i + i x_2i+1) * exp(i m theta_j), NumPy."""
    g = torch.Generator().manual_seed(1)
    T, hd, off = 7, 8, 3
    x = torch.randn(2, 3, T, hd, generator=g, dtype=DT)
    cos, sin = rotary_cos_sin(T, hd, offset=off, dtype=DT)
    y = apply_rotary(x, cos, sin).numpy()
    xn = x.numpy()
    z = xn[..., 0::2] + 1j * xn[..., 1::2]
    theta = 10000.0 ** (-np.arange(0, hd, 2) / hd)
    rot = z * np.exp(1j * np.arange(off, off + T)[:, None] * theta)
    ref = np.stack([rot.real, rot.imag], -1).reshape(xn.shape)
    np.testing.assert_allclose(y, ref, atol=1e-12)
    # gradients: RoPE is linear, so gradcheck in float64 covers the backward pass
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, cos, sin), (xr,))
    # the module does the same
    torch.testing.assert_close(RotaryEmbedding(hd)(x, offset=off), apply_rotary(x, cos, sin))


def test_rotary_dot_product_depends_only_on_relative_position() -> None:
    """Reference: Su et al. 2021 eq. 16: <R_m q, R_n k> = <q, R_{n-m} k>, so it depends on m - n only."""
    g = torch.Generator().manual_seed(2)
    hd = 16
    rope = RotaryEmbedding(hd)
    q, k = torch.randn(hd, generator=g, dtype=DT), torch.randn(hd, generator=g, dtype=DT)

    def score(m: int, n: int) -> float:
        qm = rope(q.view(1, hd), offset=m)[0]
        kn = rope(k.view(1, hd), offset=n)[0]
        return float(qm @ kn)

    for shift in (1, 5, 40, 333):
        for m, n in [(3, 1), (0, 7), (10, 10)]:
            assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-9)
    # and it is not position-blind: another relative offset gives another score
    assert abs(score(3, 1) - score(4, 1)) > 1e-6
    # norms are preserved (a rotation)
    torch.testing.assert_close(rope(q.view(1, hd), offset=9).norm(), q.norm())


def test_rotary_errors() -> None:
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(7)
    cos, sin = rotary_cos_sin(4, 8)
    with pytest.raises(ValueError, match="cos/sin"):
        apply_rotary(torch.randn(5, 8), cos, sin)
    with pytest.raises(ValueError, match=r"\(\.\.\., T, 8\)"):
        RotaryEmbedding(8)(torch.randn(2, 4, 6))


# ========================================================================================================== ALiBi
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_alibi_slopes_power_of_two(n: int) -> None:
    """Reference: Press et al. 2022, sec. 3: m_i = 2^(-8 i / n), i = 1..n (for 8 heads: 1/2, 1/4, ..., 1/256)."""
    np.testing.assert_allclose(alibi_slopes(n).double().numpy(), 2.0 ** (-8.0 * np.arange(1, n + 1) / n),
                               rtol=1e-6)


@pytest.mark.parametrize("n", [3, 6, 12])
def test_alibi_slopes_non_power_of_two(n: int) -> None:
    """Reference: the paper's rule: p = 2^floor(log2 n) slopes for p heads, then the odd-indexed slopes
    2^(-8 (2j-1) / (2p)), j = 1..n-p, of the 2p-head sequence."""
    p = 2 ** int(np.floor(np.log2(n)))
    first = 2.0 ** (-8.0 * np.arange(1, p + 1) / p)
    extra = 2.0 ** (-8.0 * (2 * np.arange(1, n - p + 1) - 1) / (2 * p))
    np.testing.assert_allclose(alibi_slopes(n).double().numpy(), np.concatenate([first, extra]), rtol=1e-6)
    # worked example for 6 heads: 4 heads give 2^-2, 2^-4, 2^-6, 2^-8; 8 heads' 1st and 3rd give 2^-1, 2^-3
    if n == 6:
        np.testing.assert_allclose(alibi_slopes(6).double().numpy(),
                                   [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3], rtol=1e-6)


def test_alibi_bias_matches_loop_incl_cache_offset() -> None:
    """Reference: a loop writing -m_h * |i' - j| with i' = S - T + i (queries are the last T of S positions)."""
    H, T, S = 3, 4, 9
    b = alibi_bias(H, T, S, dtype=DT).numpy()
    m = alibi_slopes(H).double().numpy()
    ref = np.zeros((H, T, S))
    for h in range(H):
        for i in range(T):
            for j in range(S):
                ref[h, i, j] = -m[h] * abs(S - T + i - j)
    np.testing.assert_allclose(b, ref, atol=1e-12)
    # square case: the diagonal is 0 and the causal part is m * [-(i), ..., -1, 0] as in the paper's figure 3
    sq = alibi_bias(2, 5, dtype=DT)
    torch.testing.assert_close(sq[0, 4, :5], -alibi_slopes(2).double()[0] * torch.tensor([4., 3., 2., 1., 0.],
                                                                                         dtype=DT))
    with pytest.raises(ValueError, match="S=3"):
        alibi_bias(2, 5, 3)
    with pytest.raises(ValueError, match="n_heads"):
        alibi_slopes(0)
