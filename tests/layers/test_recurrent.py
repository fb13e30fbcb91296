"""Tests for tricklab.layers.recurrent.

References: NumPy closed forms written out here from the papers' equations (attention scores, the QRNN and IndRNN
recurrences, HM-LSTM eqs. 2-7), NumPy central finite differences of those closed forms for gradients, simple
step-by-step loops for the parallel/vectorised paths, torch.autograd.gradcheck in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from tricklab.layers.recurrent import (
    HMLSTM,
    QRNN,
    AdditiveAttention,
    HMLSTMCell,
    IndRNN,
    IndRNNLayer,
    LuongAttention,
    QRNNLayer,
    additive_attention,
    boundary_ste,
    hard_sigmoid,
    hmlstm_cell,
    hmlstm_ops,
    hmlstm_slope,
    indrnn,
    indrnn_max_recurrent_weight,
    multiplicative_attention,
    qrnn_fo_pool,
)

D64 = torch.float64


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _t(a: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=D64, requires_grad=grad)


def _numpy_grad(f: Callable[..., float], arrays: list[np.ndarray], k: int, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the NumPy scalar function ``f(*arrays)`` w.r.t. ``arrays[k]``."""
    grad = np.zeros_like(arrays[k])
    for idx in np.ndindex(arrays[k].shape):
        plus = [a.copy() for a in arrays]
        minus = [a.copy() for a in arrays]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        grad[idx] = (f(*plus) - f(*minus)) / (2 * eps)
    return grad


def _np_softmax_masked(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    s = np.where(mask, -np.inf, scores)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------ attention
B, S, HQ, HK, A = 3, 5, 4, 6, 7
MASK = np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0]], dtype=bool)  # True = padding


def _np_additive(q: np.ndarray, k: np.ndarray, w: np.ndarray, u: np.ndarray, v: np.ndarray, b: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    # e_j = v^T tanh(W s + b + U h_j) (Bahdanau et al. 2015, eq. 6 / App. A.1.2)
    scores = np.einsum("bsa,a->bs", np.tanh((q @ w.T + b)[:, None, :] + k @ u.T), v)
    a = _np_softmax_masked(scores, MASK)
    return np.einsum("bs,bsh->bh", a, k), a


def _np_luong(kind: str, q: np.ndarray, k: np.ndarray, w: np.ndarray | None, v: np.ndarray | None
              ) -> tuple[np.ndarray, np.ndarray]:
    # Luong et al. 2015, eq. 8: dot s^T h, general s^T W h, concat v^T tanh(W [s; h])
    if kind == "dot":
        scores = np.einsum("bh,bsh->bs", q, k)
    elif kind == "general":
        scores = np.einsum("bi,ij,bsj->bs", q, w, k)
    else:
        scores = np.zeros((q.shape[0], k.shape[1]))
        for bi in range(q.shape[0]):
            for j in range(k.shape[1]):
                scores[bi, j] = v @ np.tanh(w @ np.concatenate([q[bi], k[bi, j]]))
    a = _np_softmax_masked(scores, MASK)
    return np.einsum("bs,bsh->bh", a, k), a


def test_additive_attention_matches_numpy_values_and_grads() -> None:
    """Reference: the NumPy formula v^T tanh(W s + b + U h) and its central finite differences."""
    r = _rng(0)
    arrays = [r.normal(size=(B, HQ)), r.normal(size=(B, S, HK)), r.normal(size=(A, HQ)), r.normal(size=(A, HK)),
              r.normal(size=(A,)), r.normal(size=(A,))]
    rc, ra = r.normal(size=(B, HK)), r.normal(size=(B, S))  # random projections make a scalar loss

    def np_loss(*arr: np.ndarray) -> float:
        c, a = _np_additive(*arr)
        return float((c * rc).sum() + (a * ra).sum())

    ts = [_t(a, grad=True) for a in arrays]
    q, k, w, u, v, b = ts
    ctx, wts = additive_attention(q, k, w, u, v, bias=b, key_padding_mask=torch.tensor(MASK))
    c_np, a_np = _np_additive(*arrays)
    np.testing.assert_allclose(ctx.detach().numpy(), c_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wts.detach().numpy(), a_np, rtol=1e-10, atol=1e-12)
    loss = (ctx * _t(rc)).sum() + (wts * _t(ra)).sum()
    grads = torch.autograd.grad(loss, ts)
    for i, g in enumerate(grads):
        np.testing.assert_allclose(g.numpy(), _numpy_grad(np_loss, arrays, i), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["dot", "general", "concat"])
def test_multiplicative_attention_matches_numpy_values_and_grads(kind: str) -> None:
    """Reference: Luong's three scores in NumPy (eq. 8) and their central finite differences."""
    r = _rng(1)
    hq = HK if kind == "dot" else HQ
    q, k = r.normal(size=(B, hq)), r.normal(size=(B, S, HK))
    w = {"dot": None, "general": r.normal(size=(hq, HK)), "concat": r.normal(size=(A, hq + HK))}[kind]
    v = r.normal(size=(A,)) if kind == "concat" else None
    arrays = [a for a in (q, k, w, v) if a is not None]
    rc, ra = r.normal(size=(B, HK)), r.normal(size=(B, S))

    def unpack(arr: list[np.ndarray]) -> tuple:
        return arr[0], arr[1], (arr[2] if len(arr) > 2 else None), (arr[3] if len(arr) > 3 else None)

    def np_loss(*arr: np.ndarray) -> float:
        c, a = _np_luong(kind, *unpack(list(arr)))
        return float((c * rc).sum() + (a * ra).sum())

    ts = [_t(a, grad=True) for a in arrays]
    tq, tk, tw, tv = unpack(ts)
    ctx, wts = multiplicative_attention(tq, tk, kind, tw, tv, key_padding_mask=torch.tensor(MASK))
    c_np, a_np = _np_luong(kind, q, k, w, v)
    np.testing.assert_allclose(ctx.detach().numpy(), c_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wts.detach().numpy(), a_np, rtol=1e-10, atol=1e-12)
    loss = (ctx * _t(rc)).sum() + (wts * _t(ra)).sum()
    for i, g in enumerate(torch.autograd.grad(loss, ts)):
        np.testing.assert_allclose(g.numpy(), _numpy_grad(np_loss, arrays, i), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make", [lambda: AdditiveAttention(HQ, HK, A), lambda: LuongAttention(HK, HK, "dot"),
                                  lambda: LuongAttention(HQ, HK, "general"), lambda: LuongAttention(HQ, HK, "concat")])
def test_attention_weights_sum_to_one_and_padding_gets_zero(make: Callable[[], torch.nn.Module]) -> None:
    """Reference: the definition of a masked softmax (rows sum to 1; padded keys weigh exactly 0, so values there
    do not matter)."""
    torch.manual_seed(0)
    layer = make().double()
    hq = layer.query_proj.in_features if isinstance(layer, AdditiveAttention) else (
        HK if layer.score == "dot" else HQ)
    q, k = torch.randn(B, hq, dtype=D64), torch.randn(B, S, HK, dtype=D64)
    mask = torch.tensor(MASK)
    ctx, wts = layer(q, k, mask)
    assert ctx.shape == (B, HK) and wts.shape == (B, S)
    torch.testing.assert_close(wts.sum(-1), torch.ones(B, dtype=D64))
    assert (wts[mask] == 0).all()
    # changing values at padded positions (as keys too) changes nothing
    k2 = k.clone()
    k2[mask] = 100.0
    ctx2, wts2 = layer(q, k2, mask)
    torch.testing.assert_close(ctx2, ctx)
    torch.testing.assert_close(wts2, wts)


def test_attention_query_with_time_axis_equals_one_step_at_a_time() -> None:
    """Reference: the (B, Hq) single-step path, looped over T, for a (B, T, Hq) query."""
    torch.manual_seed(0)
    q, k, mask = torch.randn(B, 4, HQ, dtype=D64), torch.randn(B, S, HK, dtype=D64), torch.tensor(MASK)
    for layer in (AdditiveAttention(HQ, HK, A).double(), LuongAttention(HQ, HK, "general").double(),
                  LuongAttention(HQ, HK, "concat").double()):
        ctx, wts = layer(q, k, mask)
        assert ctx.shape == (B, 4, HK) and wts.shape == (B, 4, S)
        for t in range(4):
            c1, w1 = layer(q[:, t], k, mask)
            torch.testing.assert_close(ctx[:, t], c1)
            torch.testing.assert_close(wts[:, t], w1)


def test_additive_attention_cached_key_projection_and_gradcheck() -> None:
    """Reference: the uncached call (keys_proj = U h computed inside) and torch.autograd.gradcheck (float64)."""
    torch.manual_seed(0)
    layer = AdditiveAttention(HQ, HK, A).double()
    q = torch.randn(B, HQ, dtype=D64, requires_grad=True)
    k = torch.randn(B, S, HK, dtype=D64, requires_grad=True)
    mask = torch.tensor(MASK)
    torch.testing.assert_close(layer(q, k, mask, keys_proj=layer.project_keys(k)), layer(q, k, mask))
    assert torch.autograd.gradcheck(lambda q_, k_: layer(q_, k_, mask), (q, k))


def test_attention_rejects_bad_inputs() -> None:
    q, k = torch.randn(2, 4), torch.randn(2, 5, 6)
    with pytest.raises(ValueError, match="dot"):
        multiplicative_attention(q, k, "dot")
    with pytest.raises(ValueError, match="score"):
        multiplicative_attention(q, k, "cosine")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bool"):
        LuongAttention(4, 6)(q, k, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        LuongAttention(4, 6)(q, k, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        LuongAttention(4, 6)(q.long(), k)
    with pytest.raises(ValueError, match="query_size == key_size"):
        LuongAttention(4, 6, "dot")
    with pytest.raises(ValueError, match="share B"):
        AdditiveAttention(4, 6)(torch.randn(3, 4), k)


# ------------------------------------------------------------------------------------------------ QRNN
def _np_fo_pool(z: np.ndarray, f: np.ndarray, o: np.ndarray, c0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Bradbury et al. 2017, eq. 4: c_t = f_t c_{t-1} + (1 - f_t) z_t, h_t = o_t c_t
    c, hs = c0.copy(), []
    for t in range(z.shape[1]):
        c = f[:, t] * c + (1 - f[:, t]) * z[:, t]
        hs.append(o[:, t] * c)
    return np.stack(hs, 1), c


def _gates(b: int, t: int, h: int, seed: int, dtype: torch.dtype = D64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.tanh(torch.randn(b, t, h, generator=g, dtype=dtype))
    f = torch.sigmoid(torch.randn(b, t, h, generator=g, dtype=dtype))
    o = torch.sigmoid(torch.randn(b, t, h, generator=g, dtype=dtype))
    c0 = torch.randn(b, h, generator=g, dtype=dtype)
    return [x.requires_grad_(True) for x in (z, f, o, c0)]


@pytest.mark.parametrize("length", [1, 2, 7, 13, 16])
def test_qrnn_fo_pool_parallel_equals_step_by_step_loop(length: int) -> None:
    """Reference: the sequential loop (impl="sequential") for outputs and gradients, and a NumPy loop for values."""
    z, f, o, c0 = _gates(2, length, 3, seed=length)
    h_par, c_par = qrnn_fo_pool(z, f, o, c0)
    h_seq, c_seq = qrnn_fo_pool(z, f, o, c0, impl="sequential")
    torch.testing.assert_close(h_par, h_seq, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_par, c_seq, rtol=1e-12, atol=1e-12)
    h_np, c_np = _np_fo_pool(*(x.detach().numpy() for x in (z, f, o, c0)))
    np.testing.assert_allclose(h_seq.detach().numpy(), h_np, rtol=1e-12)
    np.testing.assert_allclose(c_seq.detach().numpy(), c_np, rtol=1e-12)
    w = torch.randn(h_par.shape, generator=torch.Generator().manual_seed(1), dtype=D64)
    g_par = torch.autograd.grad((h_par * w).sum() + c_par.sum(), (z, f, o, c0))
    g_seq = torch.autograd.grad((h_seq * w).sum() + c_seq.sum(), (z, f, o, c0))
    for a, b in zip(g_par, g_seq):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_qrnn_fo_pool_default_c0_and_gradcheck() -> None:
    """Reference: c0 = 0 given explicitly; torch.autograd.gradcheck of the parallel scan (float64)."""
    z, f, o, c0 = _gates(2, 5, 3, seed=0)
    torch.testing.assert_close(qrnn_fo_pool(z, f, o)[0], qrnn_fo_pool(z, f, o, torch.zeros_like(c0))[0])
    assert torch.autograd.gradcheck(lambda *a: qrnn_fo_pool(*a), (z, f, o, c0))


def test_qrnn_fo_pool_long_sequence_float32_is_stable() -> None:
    """Reference: the float64 sequential loop. 1000 steps with f close to 1 (long memory) and close to 0."""
    g = torch.Generator().manual_seed(0)
    z = torch.tanh(torch.randn(2, 1000, 4, generator=g))
    f = torch.sigmoid(torch.randn(2, 1000, 4, generator=g) * 6 + torch.tensor([8.0, 0.0, -8.0, 3.0]))
    o = torch.sigmoid(torch.randn(2, 1000, 4, generator=g))
    h32, _ = qrnn_fo_pool(z, f, o)
    h64, _ = qrnn_fo_pool(z.double(), f.double(), o.double(), impl="sequential")
    torch.testing.assert_close(h32.double(), h64, rtol=1e-4, atol=1e-5)


def test_qrnn_layer_matches_numpy_masked_convolution() -> None:
    """Reference: NumPy eqs. 1-4 of Bradbury et al. 2017 for window 2: Z = tanh(W1 x_{t-1} + W2 x_t + b) (x_{-1} = 0),
    F, O likewise with sigmoid, then the fo-pooling loop."""
    torch.manual_seed(0)
    layer = QRNNLayer(3, 4, window=2).double()
    x = torch.randn(2, 6, 3, dtype=D64)
    h, c = layer(x)
    w = layer.conv.weight.detach().numpy()  # (3H, D, window): tap 0 multiplies x_{t-1}, tap 1 x_t
    bias = layer.conv.bias.detach().numpy()
    xn = x.numpy()
    prev = np.concatenate([np.zeros((2, 1, 3)), xn[:, :-1]], axis=1)
    pre = prev @ w[:, :, 0].T + xn @ w[:, :, 1].T + bias  # (B, T, 3H)
    zn, fn, on = np.split(pre, 3, axis=-1)
    sig = 1 / (1 + np.exp(-fn)), 1 / (1 + np.exp(-on))
    h_np, c_np = _np_fo_pool(np.tanh(zn), sig[0], sig[1], np.zeros((2, 4)))
    np.testing.assert_allclose(h.detach().numpy(), h_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.detach().numpy(), c_np, rtol=1e-10, atol=1e-12)


def test_qrnn_is_causal_and_stack_chains_layers() -> None:
    """Reference: causality (changing x_t leaves h_{<t} unchanged) and the explicit chain of the stack's layers."""
    torch.manual_seed(0)
    qrnn = QRNN(3, 5, num_layers=2, window=3).double()
    x = torch.randn(2, 8, 3, dtype=D64)
    h, c = qrnn(x)
    assert h.shape == (2, 8, 5) and c.shape == (2, 2, 5)
    x2 = x.clone()
    x2[:, 5] += 1.0
    h2, _ = qrnn(x2)
    torch.testing.assert_close(h2[:, :5], h[:, :5])
    assert not torch.allclose(h2[:, 5:], h[:, 5:])
    h1, c1 = qrnn.layers[0](x)
    hh, cc = qrnn.layers[1](h1)
    torch.testing.assert_close(h, hh)
    torch.testing.assert_close(c, torch.stack([c1, cc]))
    c0 = torch.randn(2, 2, 5, dtype=D64)
    h_c0, _ = qrnn(x, c0)
    torch.testing.assert_close(h_c0, qrnn.layers[1](qrnn.layers[0](x, c0[0])[0], c0[1])[0])


def test_qrnn_rejects_bad_inputs() -> None:
    z = torch.rand(2, 4, 3)
    with pytest.raises(ValueError, match="one shape"):
        qrnn_fo_pool(z, z[:, :3], z)
    with pytest.raises(ValueError, match="impl"):
        qrnn_fo_pool(z, z, z, impl="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="c0"):
        qrnn_fo_pool(z, z, z, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        QRNNLayer(3, 4)(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="window"):
        QRNNLayer(3, 4, window=0)


# ------------------------------------------------------------------------------------------------ IndRNN
def _indrnn_loop(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, u: torch.Tensor, h0: torch.Tensor
                 ) -> torch.Tensor:
    """Slow reference: eq. 2 of Li et al. 2018 one step at a time, with the input product inside the loop."""
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = torch.relu(x[:, t] @ w.T + b + u * h)
        hs.append(h)
    return torch.stack(hs, 1)


def test_indrnn_equals_step_by_step_loop_outputs_and_grads() -> None:
    """Reference: the slow per-step loop (outputs and gradients) and a NumPy loop (values)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, 4, generator=g, dtype=D64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=D64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=D64, requires_grad=True)
    u = torch.rand(5, generator=g, dtype=D64).requires_grad_(True)
    h0 = torch.rand(3, 5, generator=g, dtype=D64).requires_grad_(True)
    h, h_last = indrnn(x, w, b, u, h0)
    ref = _indrnn_loop(x, w, b, u, h0)
    torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_last, ref[:, -1])
    hn = h0.detach().numpy()
    for t in range(9):
        hn = np.maximum(x[:, t].detach().numpy() @ w.detach().numpy().T + b.detach().numpy() + u.detach().numpy() * hn,
                        0)
        np.testing.assert_allclose(h[:, t].detach().numpy(), hn, rtol=1e-12)
    wt = torch.randn(h.shape, generator=g, dtype=D64)
    ga = torch.autograd.grad((h * wt).sum(), (x, w, b, u, h0))
    gb = torch.autograd.grad((ref * wt).sum(), (x, w, b, u, h0))
    for a, bb in zip(ga, gb):
        torch.testing.assert_close(a, bb, rtol=1e-10, atol=1e-12)


def test_indrnn_tanh_and_gradcheck() -> None:
    """Reference: the tanh recurrence written out, and torch.autograd.gradcheck (float64, tanh is smooth)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, generator=g, dtype=D64, requires_grad=True)
    w = torch.randn(4, 3, generator=g, dtype=D64, requires_grad=True)
    u = torch.rand(4, generator=g, dtype=D64).requires_grad_(True)
    h, _ = indrnn(x, w, None, u, activation="tanh")
    hh = torch.zeros(2, 4, dtype=D64)
    for t in range(4):
        hh = torch.tanh(x[:, t] @ w.T + u * hh)
        torch.testing.assert_close(h[:, t], hh)
    assert torch.autograd.gradcheck(lambda *a: indrnn(a[0], a[1], None, a[2], activation="tanh")[0], (x, w, u))


def test_indrnn_bound_and_constraint_hold_after_optimizer_steps() -> None:
    """Reference: the bound gamma^(1/T) (Li et al. 2018, §3.1), so u_max^T = gamma; and |u| <= u_max after every
    step of an optimiser whose steps are large enough to leave the box without the clamp."""
    assert indrnn_max_recurrent_weight(100, gamma=2.0) == pytest.approx(2.0 ** (1 / 100))
    assert indrnn_max_recurrent_weight(50, gamma=3.0) ** 50 == pytest.approx(3.0)
    u_max = indrnn_max_recurrent_weight(10)
    torch.manual_seed(0)
    net = IndRNN(3, 6, num_layers=2, u_max=u_max)
    for layer in net.layers:
        assert (layer.u.abs() <= u_max).all()  # initialisation is inside the box
    x = torch.randn(4, 10, 3)

    def train(model: IndRNN, hook: bool) -> float:
        opt = torch.optim.SGD(model.parameters(), lr=5.0)
        if hook:
            model.constrain_after(opt)
        worst = 0.0
        for _ in range(5):
            opt.zero_grad()
            (-model(x)[0].sum()).backward()  # pushes u up: larger u -> larger relu outputs
            opt.step()
            worst = max(worst, max(float(layer.u.detach().abs().max()) for layer in model.layers))
        return worst

    free = IndRNN(3, 6, num_layers=2, u_max=u_max)
    free.load_state_dict(net.state_dict())
    assert train(free, hook=False) > u_max  # without the clamp the optimiser leaves the box
    assert train(net, hook=True) <= u_max
    # the explicit method does the same
    layer = IndRNNLayer(3, 6, u_max=0.5)
    with torch.no_grad():
        layer.u.fill_(3.0)
        layer.u[0] = -3.0
    layer.constrain_()
    assert (layer.u.abs() <= 0.5).all() and layer.u[0] == -0.5


def test_indrnn_stack_shapes_and_errors() -> None:
    torch.manual_seed(0)
    net = IndRNN(3, 5, num_layers=3)
    h, hn = net(torch.randn(2, 7, 3))
    assert h.shape == (2, 7, 5) and hn.shape == (3, 2, 5)
    torch.testing.assert_close(hn[-1], h[:, -1])
    with pytest.raises(ValueError, match="activation"):
        IndRNNLayer(3, 5, activation="sigmoid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="u_max"):
        IndRNNLayer(3, 5, u_max=0.0)
    with pytest.raises(ValueError, match="weight must be"):
        indrnn(torch.randn(2, 3, 4), torch.randn(5, 3), None, torch.rand(5))
    with pytest.raises(ValueError, match="h0"):
        net(torch.randn(2, 7, 3), torch.zeros(2, 2, 5))


# ------------------------------------------------------------------------------------------------ HM-LSTM
def test_hard_sigmoid_matches_numpy_and_torch() -> None:
    """Reference: max(0, min(1, (a x + 1) / 2)) in NumPy (Chung et al. 2017, §3.3)."""
    x = torch.linspace(-2, 2, 41, dtype=D64)
    for slope in (1.0, 2.5):
        expected = np.clip((slope * x.numpy() + 1) / 2, 0, 1)
        np.testing.assert_allclose(hard_sigmoid(x, slope).numpy(), expected, rtol=1e-12, atol=1e-15)
    assert hmlstm_slope(0) == 1.0 and hmlstm_slope(25) == pytest.approx(2.0) and hmlstm_slope(1000) == 5.0


@pytest.mark.parametrize("slope", [1.0, 3.0])
def test_boundary_straight_through_estimator(slope: float) -> None:
    """Forward: the hard step 1[(a x + 1) / 2 > 0.5] = 1[x > 0]. Backward: the hard sigmoid's gradient, a / 2 where
    |a x| < 1 and 0 elsewhere (NumPy closed form). Points avoid the kinks at x = 0 and |a x| = 1."""
    x_np = np.array([-1.7, -0.9, -0.31, -0.05, 0.07, 0.2, 0.29, 0.8, 1.3, 2.2])
    x = _t(x_np, grad=True)
    z = boundary_ste(x, slope)
    np.testing.assert_array_equal(z.detach().numpy(), (x_np > 0).astype(float))
    assert set(z.detach().unique().tolist()) <= {0.0, 1.0}
    (grad,) = torch.autograd.grad(z.sum(), x)
    np.testing.assert_allclose(grad.numpy(), np.where(np.abs(slope * x_np) < 1, slope / 2, 0.0))


def _np_ops(f, i, o, g, c_prev, h_prev, z_prev, z_below):  # noqa: ANN001, ANN202
    """Hand-written eqs. 2-3, one row at a time with if/else (COPY / UPDATE / FLUSH)."""
    c, h = np.zeros_like(c_prev), np.zeros_like(h_prev)
    for r in range(c_prev.shape[0]):
        if z_prev[r] == 1:  # FLUSH
            c[r] = i[r] * g[r]
            h[r] = o[r] * np.tanh(c[r])
        elif z_below[r] == 1:  # UPDATE
            c[r] = f[r] * c_prev[r] + i[r] * g[r]
            h[r] = o[r] * np.tanh(c[r])
        else:  # COPY
            c[r], h[r] = c_prev[r], h_prev[r]
    return c, h


def test_hmlstm_copy_update_flush_against_numpy() -> None:
    """Reference: eqs. 2-3 of Chung et al. 2017 written with explicit cases in NumPy. Rows: UPDATE (0, 1), COPY
    (0, 0), FLUSH (1, 0) and FLUSH (1, 1) for (z_{t-1}^l, z_t^{l-1})."""
    r = _rng(3)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    f, i, o = sig(r.normal(size=(4, 5))), sig(r.normal(size=(4, 5))), sig(r.normal(size=(4, 5)))
    g, c_prev, h_prev = np.tanh(r.normal(size=(4, 5))), r.normal(size=(4, 5)), r.normal(size=(4, 5))
    z_prev, z_below = np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])
    c, h = hmlstm_ops(*(_t(a) for a in (f, i, o, g, c_prev, h_prev, z_prev, z_below)))
    c_np, h_np = _np_ops(f, i, o, g, c_prev, h_prev, z_prev, z_below)
    np.testing.assert_allclose(c.numpy(), c_np, rtol=1e-12)
    np.testing.assert_allclose(h.numpy(), h_np, rtol=1e-12)
    # the three cases by name, to be explicit
    np.testing.assert_allclose(c.numpy()[0], f[0] * c_prev[0] + i[0] * g[0])  # UPDATE
    np.testing.assert_allclose(c.numpy()[1], c_prev[1])  # COPY keeps the cell ...
    np.testing.assert_allclose(h.numpy()[1], h_prev[1])  # ... and the hidden state
    np.testing.assert_allclose(c.numpy()[2], i[2] * g[2])  # FLUSH forgets c_{t-1}
    # gradients of the weighted-sum form: gradcheck in float64 (it is a polynomial in z, so z gets gradients too)
    ins = tuple(_t(a, grad=True) for a in (f, i, o, g, c_prev, h_prev, z_prev, z_below))
    assert torch.autograd.gradcheck(lambda *a: torch.cat(hmlstm_ops(*a), dim=-1), ins)


def _np_cell(hb, hp, cp, zp, zb, ha, wb, wr, wa, b, slope):  # noqa: ANN001, ANN202
    """Eqs. 4-7 in NumPy: s = U h_{t-1} + z_{t-1} U_a h^{l+1}_{t-1} + z^{l-1}_t W h^{l-1}_t + b."""
    n = hp.shape[1]
    s = hp @ wr.T + zb[:, None] * (hb @ wb.T) + b
    if wa is not None:
        s = s + zp[:, None] * (ha @ wa.T)
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    f, i, o, g = sig(s[:, :n]), sig(s[:, n:2 * n]), sig(s[:, 2 * n:3 * n]), np.tanh(s[:, 3 * n:4 * n])
    z = (np.clip((slope * s[:, 4 * n] + 1) / 2, 0, 1) > 0.5).astype(float)
    c, h = _np_ops(f, i, o, g, cp, hp, zp, zb)
    return h, c, z


def test_hmlstm_cell_matches_numpy() -> None:
    """Reference: the NumPy step _np_cell (eqs. 4-7 then 2-3)."""
    torch.manual_seed(0)
    cell = HMLSTMCell(3, 4, above_size=5, slope=2.0).double()
    r = _rng(4)
    hb, hp, cp, ha = r.normal(size=(4, 3)), r.normal(size=(4, 4)), r.normal(size=(4, 4)), r.normal(size=(4, 5))
    zp, zb = np.array([0.0, 0.0, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])
    h, c, z = cell(*(_t(a) for a in (hb, hp, cp, zp, zb, ha)))
    params = [p.detach().numpy() for p in (cell.w_below, cell.w_recurrent, cell.w_above, cell.bias)]
    h_np, c_np, z_np = _np_cell(hb, hp, cp, zp, zb, ha, *params, 2.0)
    np.testing.assert_allclose(h.detach().numpy(), h_np, rtol=1e-10)
    np.testing.assert_allclose(c.detach().numpy(), c_np, rtol=1e-10)
    np.testing.assert_array_equal(z.detach().numpy(), z_np)


def test_hmlstm_matches_numpy_unrolled_network() -> None:
    """Reference: a NumPy unroll of a 2-layer HM-LSTM (z^0 = 1, zero initial states, top-down input from step t-1),
    built from _np_cell."""
    torch.manual_seed(0)
    net = HMLSTM(3, (4, 5), slope=1.0).double()
    x = torch.randn(2, 7, 3, dtype=D64)
    # boundary biases chosen so that layer 2 meets all three operations (checked below)
    with torch.no_grad():
        net.cells[0].bias[-1] = 0.2
        net.cells[1].bias[-1] = -0.05
    hidden, z = net(x)
    assert [h.shape for h in hidden] == [(2, 7, 4), (2, 7, 5)] and z.shape == (2, 7, 2)
    z_prev = torch.cat([torch.zeros(2, 1, dtype=D64), z[:, :-1, 1]], dim=1)  # z_{t-1}^2
    flush, copy, update = z_prev, (1 - z_prev) * (1 - z[..., 0]), (1 - z_prev) * z[..., 0]
    assert flush.sum() > 0 and copy.sum() > 0 and update.sum() > 0
    assert 0 < z[..., 0].sum() < z[..., 0].numel()  # layer 1 both flushes and updates
    p = [[q.detach().numpy() if q is not None else None for q in (c.w_below, c.w_recurrent, c.w_above, c.bias)]
         for c in net.cells]
    xn = x.numpy()
    h = [np.zeros((2, 4)), np.zeros((2, 5))]
    c = [np.zeros((2, 4)), np.zeros((2, 5))]
    zz = [np.zeros(2), np.zeros(2)]
    for t in range(7):
        h_old = list(h)
        h[0], c[0], zz[0] = _np_cell(xn[:, t], h[0], c[0], zz[0], np.ones(2), h_old[1], *p[0], 1.0)
        h[1], c[1], zz[1] = _np_cell(h[0], h[1], c[1], zz[1], zz[0], None, *p[1], 1.0)
        np.testing.assert_allclose(hidden[0][:, t].detach().numpy(), h[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hidden[1][:, t].detach().numpy(), h[1], rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(z[:, t].detach().numpy(), np.stack(zz, -1))


def test_hmlstm_gradients_reach_every_parameter_and_slope_setter() -> None:
    """Reference: autograd finiteness (the straight-through path makes the boundary parameters trainable: the
    gradient of sum(z) w.r.t. the boundary bias is sum of slope/2 over unsaturated steps, not 0)."""
    torch.manual_seed(0)
    net = HMLSTM(3, (4, 4, 3))
    x = torch.randn(2, 6, 3, requires_grad=True)
    hidden, z = net(x)
    assert set(z.detach().unique().tolist()) <= {0.0, 1.0}
    loss = sum(h.sum() for h in hidden) + z.sum()
    loss.backward()
    for name, prm in net.named_parameters():
        assert prm.grad is not None and torch.isfinite(prm.grad).all(), name
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert net.cells[-1].w_above is None
    assert float(net.cells[0].bias.grad[-1].abs()) > 0
    net.slope = 3.0
    assert all(cell.slope == 3.0 for cell in net.cells)
    with pytest.raises(ValueError, match="slope"):
        net.slope = 0.0


def test_hmlstm_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="hidden_sizes"):
        HMLSTM(3, ())
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        HMLSTM(3, (4,))(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="both"):
        hmlstm_cell(torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4), torch.zeros(2), torch.ones(2), None,
                    torch.randn(17, 3), torch.randn(17, 4), torch.randn(17, 5), torch.randn(17))
    with pytest.raises(ValueError, match="slope"):
        boundary_ste(torch.randn(3), slope=-1.0)

