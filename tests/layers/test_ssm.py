"""Tests for tricklab.layers.ssm: the selective scan and the Mamba blocks.

References used (named again at each test):
  * the sequential path (a Python loop over t, the recurrence as written) for the chunked parallel path;
  * a NumPy loop of the paper's equations (eq. 2a-2b, 4) for the sequential path itself;
  * a NumPy convolution with the closed-form SSM kernel K_k = sum_n C_n Abar_n^k Bbar_n for the LTI case;
  * torch.autograd.gradcheck (central finite differences, float64) for the gradients;
  * the parallel forward for the recurrent ``step`` (generation must reproduce training).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.layers.ssm import LAYER_SPECS, Mamba, MambaLayer, auto_chunk_size, selective_scan

F64 = torch.float64


def _inputs(b: int, dm: int, n: int, length: int, selective: bool = True, seed: int = 0,
            dtype: torch.dtype = F64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=dtype)

    bc = (b, n, length) if selective else (dm, n)
    return {
        "u": r(b, dm, length), "delta": r(b, dm, length) - 1.0,
        "A": -torch.exp(r(dm, n)),  # negative, as Mamba's A = -exp(A_log)
        "B": r(*bc), "C": r(*bc), "D": r(dm), "z": r(b, dm, length), "delta_bias": 0.5 * r(dm),
        "initial_state": r(b, dm, n),
    }


def _run(inp: dict[str, torch.Tensor], **kw: object) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Output, last state and the gradients of a fixed random functional of both w.r.t. every input."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inp.items()}
    y, h = selective_scan(**leaves, return_last_state=True, **kw)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(99)
    # drawn in float64 and cast, so that float32 and float64 runs weigh their outputs identically
    wy, wh = (torch.randn(t.shape, generator=g, dtype=F64).to(t.dtype) for t in (y, h))
    grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), list(leaves.values()))
    return torch.cat([y.flatten(), h.flatten()]).detach(), grads


# ------------------------------------------------------------------------------------------- selective_scan
@pytest.mark.parametrize("length", [1, 7, 64, 257])
@pytest.mark.parametrize("selective", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 16, 5])
def test_parallel_equals_sequential(length: int, selective: bool, chunk_size: int | None) -> None:
    """Reference: the sequential path. Outputs, final state and gradients of u, delta, A, B, C, D, z, delta_bias
    and h_0 agree in float64, incl. lengths that are not a multiple of the chunk (7, 257 with chunks 16, 5)."""
    inp = _inputs(2, 3, 4, length, selective)
    out_s, g_s = _run(inp, impl="sequential")
    out_p, g_p = _run(inp, impl="parallel", chunk_size=chunk_size)
    torch.testing.assert_close(out_p, out_s, rtol=1e-10, atol=1e-10)
    for name, a, b in zip(inp, g_p, g_s):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda m, name=name: f"grad {name}: {m}")


def _numpy_scan(u: np.ndarray, delta: np.ndarray, A: np.ndarray, B: np.ndarray, C: np.ndarray, D: np.ndarray,
                z: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """The paper's equations, one scalar state at a time: delta already softplus'd; B, C (b, n, L)."""
    b, dm, length = u.shape
    y = np.zeros_like(u)
    for i in range(b):
        for d in range(dm):
            h = h0[i, d].copy()
            for t in range(length):
                h = np.exp(delta[i, d, t] * A[d]) * h + delta[i, d, t] * B[i, :, t] * u[i, d, t]  # eq. 4, 2a
                y[i, d, t] = C[i, :, t] @ h + D[d] * u[i, d, t]  # eq. 2b + skip
    return y * (z / (1.0 + np.exp(-z)))  # gate: y * silu(z)


@pytest.mark.parametrize("impl", ["sequential", "parallel"])
def test_scan_matches_numpy_equations(impl: str) -> None:
    """Reference: a NumPy loop over (batch, channel, t) of h_t = exp(delta A) h + delta B u, y = C h + D u,
    y * silu(z), with delta = softplus(delta + bias) computed as log1p(exp(.))."""
    inp = _inputs(2, 3, 4, 13)
    delta_np = np.log1p(np.exp(inp["delta"].numpy() + inp["delta_bias"].numpy()[:, None]))
    want = _numpy_scan(inp["u"].numpy(), delta_np, inp["A"].numpy(), inp["B"].numpy(), inp["C"].numpy(),
                       inp["D"].numpy(), inp["z"].numpy(), inp["initial_state"].numpy())
    got = selective_scan(**inp, impl=impl, chunk_size=4)  # type: ignore[arg-type]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-11, atol=1e-11)


def test_lti_scan_is_a_convolution() -> None:
    """Reference: the LTI SSM as a convolution (S4's view). With constant delta, B, C and h_0 = 0,
    y = K * u + D u with kernel K_k = sum_n C_n exp(delta A_n)^k delta B_n (NumPy, np.convolve per channel)."""
    b, dm, n, length = 2, 3, 5, 40
    inp = _inputs(b, dm, n, length, selective=False)
    delta_c = np.array([0.05, 0.2, 0.7])  # per-channel constant step (already positive)
    delta = torch.tensor(delta_c, dtype=F64)[None, :, None].expand(b, dm, length).contiguous()
    y = selective_scan(inp["u"], delta, inp["A"], inp["B"], inp["C"], inp["D"], delta_softplus=False)
    A, B, C, u, D = (inp[k].numpy() for k in ("A", "B", "C", "u", "D"))
    k = np.arange(length)
    for d in range(dm):
        kernel = (C[d] * delta_c[d] * B[d] * np.exp(np.outer(k, delta_c[d] * A[d]))).sum(1)  # (L,)
        for i in range(b):
            want = np.convolve(u[i, d], kernel)[:length] + D[d] * u[i, d]
            np.testing.assert_allclose(y[i, d].numpy(), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("selective", [True, False])
def test_scan_gradcheck(selective: bool) -> None:
    """Reference: torch.autograd.gradcheck (finite differences) of the parallel path, float64, L = 7 with
    chunks of 3, every input differentiable."""
    inp = _inputs(1, 2, 3, 7, selective)
    names = list(inp)

    def f(*xs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return selective_scan(**dict(zip(names, xs)), chunk_size=3, return_last_state=True)  # type: ignore[return-value]

    assert torch.autograd.gradcheck(f, tuple(v.clone().requires_grad_(True) for v in inp.values()))


def test_float32_parallel_close_to_float64_reference() -> None:
    """Reference: the float64 sequential path. The float32 chunked scan stays within float32 rounding over a long
    sequence (L = 1000, slow decays delta ~ 1e-3 that carry the state far), outputs and gradients."""
    inp64 = _inputs(1, 4, 8, 1000)
    inp64["delta"] = inp64["delta"] - 5.0  # softplus(-6 +- 1) ~ 2.5e-3: long memory
    inp32 = {k: v.float() for k, v in inp64.items()}
    out64, g64 = _run(inp64, impl="sequential")
    out32, g32 = _run(inp32, impl="parallel")
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def test_strong_decay_stays_finite_and_exact() -> None:
    """Reference: the sequential path. Very large steps (delta ~ 50, A up to -50: log-decay -2500 per step, far
    beyond exp's float32 range) must not overflow: the chunked scan only exponentiates sums <= 0."""
    inp = _inputs(1, 3, 4, 50, dtype=torch.float32)
    inp["delta"] = inp["delta"].abs() * 50.0
    inp["A"] = inp["A"] * 20.0
    out_s, g_s = _run(inp, impl="sequential")
    out_p, g_p = _run(inp, impl="parallel", chunk_size=16)
    assert torch.isfinite(out_p).all() and all(torch.isfinite(g).all() for g in g_p)
    torch.testing.assert_close(out_p, out_s, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_p, g_s):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_no_grad_path_is_identical_and_leaves_inputs_alone() -> None:
    """Reference: the autograd path of the same function. Without autograd the chunked scan runs in place; it must
    give bit-identical outputs and final states and must not modify any input (initial_state included)."""
    inp = _inputs(2, 3, 4, 37, dtype=torch.float32)
    before = {k: v.clone() for k, v in inp.items()}
    with torch.no_grad():
        y0, h0 = selective_scan(**inp, chunk_size=6, return_last_state=True)  # type: ignore[misc]
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}
    y1, h1 = selective_scan(**leaves, chunk_size=6, return_last_state=True)  # type: ignore[misc]
    assert torch.equal(y0, y1.detach()) and torch.equal(h0, h1.detach())
    assert all(torch.equal(inp[k], before[k]) for k in inp)


def test_half_precision_computes_in_float32() -> None:
    """Reference: the float32 scan of the same (bfloat16-rounded) inputs; output dtype follows u."""
    inp = {k: v.to(torch.bfloat16) for k, v in _inputs(1, 3, 4, 20, dtype=torch.float32).items()}
    y16 = selective_scan(**inp)  # type: ignore[arg-type]
    y32 = selective_scan(**{k: v.float() for k, v in inp.items()})  # type: ignore[arg-type]
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32.to(torch.bfloat16).float(), rtol=0, atol=0)


def test_optional_terms_default_off() -> None:
    """Reference: the sequential path with the optional terms written out by hand: without D, z, delta_bias,
    softplus and h_0 the scan is the bare recurrence; adding D u and * silu(z) afterwards gives the full one."""
    inp = _inputs(2, 3, 4, 9)
    u, delta, A, B, C, D, z = (inp[k] for k in ("u", "delta", "A", "B", "C", "D", "z"))
    dpos = F.softplus(delta)
    bare = selective_scan(u, dpos, A, B, C, delta_softplus=False, impl="sequential")
    full = selective_scan(u, delta, A, B, C, D, z, impl="parallel", chunk_size=4)
    torch.testing.assert_close(full, (bare + D[:, None] * u) * F.silu(z))


def test_auto_chunk_size() -> None:
    """Reference: the formula round(sqrt(L / 2)), at least 1."""
    for length in (0, 1, 2, 100, 2048, 4096):
        assert auto_chunk_size(length) == max(1, round(math.sqrt(length / 2)))
    assert auto_chunk_size(2048) == 32


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"u": torch.zeros(2, 3)}, ValueError, "u must have 3 dims"),
        ({"u": [1.0]}, TypeError, "u must be a torch.Tensor"),
        ({"u": torch.zeros(2, 3, 5, dtype=torch.long)}, TypeError, "real floating-point"),
        ({"delta": torch.zeros(2, 3, 4)}, ValueError, "delta must have u's shape"),
        ({"A": torch.zeros(4, 4)}, ValueError, "A must be"),
        ({"B": torch.zeros(2, 4, 6)}, ValueError, "B must be"),
        ({"C": torch.zeros(3, 5)}, ValueError, "C must be"),
        ({"D": torch.zeros(4)}, ValueError, "D must be"),
        ({"z": torch.zeros(2, 3, 4)}, ValueError, "z must have"),
        ({"delta_bias": torch.zeros(2)}, ValueError, "delta_bias must be"),
        ({"initial_state": torch.zeros(2, 3, 5)}, ValueError, "initial_state must be"),
        ({"impl": "cuda"}, ValueError, "impl must be one of"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
    ],
)
def test_scan_bad_input(change: dict[str, object], exc: type[Exception], match: str) -> None:
    kw: dict[str, object] = {"u": torch.zeros(2, 3, 5), "delta": torch.zeros(2, 3, 5), "A": -torch.ones(3, 4),
                             "B": torch.zeros(2, 4, 5), "C": torch.zeros(3, 4)}
    kw.update(change)
    with pytest.raises(exc, match=match):
        selective_scan(**kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- Mamba
def test_mamba_init_follows_the_paper() -> None:
    """Reference: the paper's initialisation. A_n = -(n + 1) (S4D-real), D = 1, softplus(dt bias) log-uniform in
    [1e-3, 1e-1], dt_rank = ceil(d_model / 16), E = expand * d_model, conv kernel d_conv depthwise."""
    torch.manual_seed(0)
    m = Mamba(40, d_state=6, d_conv=3, expand=2)
    assert (m.d_inner, m.dt_rank) == (80, math.ceil(40 / 16))
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1.0, 7.0).repeat(80, 1))
    torch.testing.assert_close(m.D.detach(), torch.ones(80))
    dt = F.softplus(m.dt_proj.bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    assert m.conv1d.weight.shape == (80, 1, 3) and m.conv1d.groups == 80
    assert m.x_proj.out_features == m.dt_rank + 2 * 6 and m.in_proj.out_features == 160
    lti = Mamba(40, d_state=6, selective=False)
    assert not hasattr(lti, "x_proj") and lti.B.shape == lti.C.shape == (80, 6) and lti.dt_bias.shape == (80,)


@pytest.mark.parametrize("selective", [True, False])
def test_mamba_parallel_equals_sequential_module(selective: bool) -> None:
    """Reference: the same Mamba with impl="sequential". Outputs and every parameter gradient agree (float64)."""
    torch.manual_seed(0)
    fast = Mamba(12, d_state=4, d_conv=3, selective=selective, chunk_size=4).double()
    slow = Mamba(12, d_state=4, d_conv=3, selective=selective, impl="sequential").double()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 19, 12, dtype=F64, generator=torch.Generator().manual_seed(1))
    outs = []
    for m in (fast, slow):
        y = m(x)
        grads = torch.autograd.grad((y * torch.cos(y)).sum(), list(m.parameters()))
        outs.append((y, grads))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-10)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_mamba_is_causal() -> None:
    """Reference: causality by construction. d y_t / d x_s = 0 for s > t (autograd Jacobian), and changing the
    future leaves the past unchanged."""
    torch.manual_seed(0)
    m = Mamba(8, d_state=4, d_conv=3, chunk_size=3).double()
    x = torch.randn(1, 10, 8, dtype=F64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda v: m(v).sum(-1), x)  # (1, 10, 1, 10, 8)
    per_pair = jac[0, :, 0].abs().sum(-1)  # (t, s)
    assert per_pair.triu(1).abs().max() == 0 and per_pair.diagonal().min() > 0
    x2 = x.detach().clone()
    x2[:, 6:] += 1.0
    torch.testing.assert_close(m(x2)[:, :6], m(x.detach())[:, :6], rtol=0, atol=0)


def _unroll(m: Mamba | MambaLayer, x: torch.Tensor) -> torch.Tensor:
    state = m.init_state(x.shape[0], dtype=x.dtype)
    ys = []
    for t in range(x.shape[1]):
        y_t, state = m.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1)


@pytest.mark.parametrize("cls", [Mamba, MambaLayer])
@pytest.mark.parametrize("selective", [True, False])
def test_step_reproduces_forward(cls: type, selective: bool) -> None:
    """Reference: the parallel forward. Stepping token by token from init_state gives the same outputs (float32
    to 1e-5) and, in float64, the same parameter gradients."""
    torch.manual_seed(0)
    m = cls(16, d_state=8, d_conv=4, selective=selective, chunk_size=5)
    x = torch.randn(2, 23, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(_unroll(m, x), m(x), rtol=1e-5, atol=1e-5)
    m = m.double()
    x = x.double()
    y_par, y_step = m(x), _unroll(m, x)
    g_par = torch.autograd.grad(y_par.square().sum(), list(m.parameters()))
    g_step = torch.autograd.grad(y_step.square().sum(), list(m.parameters()))
    for a, b in zip(g_step, g_par):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_step_state_has_constant_size() -> None:
    """Reference: the recurrent state's definition: conv_state (B, E, d_conv - 1), ssm_state (B, E, N), the same
    shapes after any number of tokens; step does not modify the state it is given."""
    torch.manual_seed(0)
    m = MambaLayer(8, d_state=5, d_conv=4, expand=3)
    state = m.init_state(3)
    assert [tuple(s.shape) for s in state] == [(3, 24, 3), (3, 24, 5)]
    first = tuple(s.clone() for s in state)
    with torch.no_grad():
        for _ in range(30):
            _, new = m.step(torch.randn(3, 8), state)
            assert [s.shape for s in new] == [s.shape for s in first]
            state = new
    assert all(torch.equal(a, b) for a, b in zip(m.init_state(3), first))
    assert not torch.equal(state[1], first[1])


@pytest.mark.parametrize("cls", [Mamba, MambaLayer])
def test_forward_with_state_continues_a_segment(cls: type) -> None:
    """Reference: the forward over the whole sequence and the stepped state. Prefilling in two segments gives the
    same outputs, and the state after the prefill equals the state after stepping through the same tokens;
    stepping on from it continues the sequence."""
    torch.manual_seed(0)
    m = cls(12, d_state=4, d_conv=3, chunk_size=4).double()
    x = torch.randn(2, 17, 12, dtype=F64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = m(x)
        y1, s1 = m.forward_with_state(x[:, :9])
        y2, s2 = m.forward_with_state(x[:, 9:16], s1)
        y3, _ = m.step(x[:, 16], s2)
        torch.testing.assert_close(torch.cat([y1, y2, y3[:, None]], 1), full, rtol=1e-10, atol=1e-10)
        state = m.init_state(2, dtype=F64)
        for t in range(16):
            _, state = m.step(x[:, t], state)
        for a, b in zip(s2, state):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mamba_layer_is_prenorm_residual() -> None:
    """Reference: the definition x + Mamba(RMSNorm(x)) with torch's nn.RMSNorm / nn.LayerNorm."""
    torch.manual_seed(0)
    layer = MambaLayer(10, d_state=4)
    assert isinstance(layer.norm, torch.nn.RMSNorm)
    x = torch.randn(2, 6, 10)
    torch.testing.assert_close(layer(x), x + layer.mixer(layer.norm(x)))
    assert isinstance(MambaLayer(10, norm="layer").norm, torch.nn.LayerNorm)


def test_mamba_bad_input() -> None:
    with pytest.raises(ValueError, match="d_state must be a positive int"):
        Mamba(8, d_state=0)
    with pytest.raises(ValueError, match="dt_rank must be"):
        Mamba(8, dt_rank=-1)
    with pytest.raises(ValueError, match="impl must be one of"):
        Mamba(8, impl="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="norm must be"):
        MambaLayer(8, norm="batch")  # type: ignore[arg-type]
    m = Mamba(8, d_state=4)
    with pytest.raises(ValueError, match=r"\(batch, seq_len, d_model\) with d_model = 8"):
        m(torch.zeros(2, 5, 7))
    with pytest.raises(ValueError, match=r"\(batch, d_model\)"):
        m.step(torch.zeros(2, 5, 8), m.init_state(2))
    with pytest.raises(ValueError, match="state must be"):
        m.step(torch.zeros(3, 8), m.init_state(2))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        m.init_state(0)


def test_layer_specs_build_and_run() -> None:
    """Reference: the layer contract (tests/contracts/test_layers.py) in small: finite outputs of the input's shape
    and a finite gradient for every parameter."""
    assert {s.name for s in LAYER_SPECS} == {"mamba", "mamba_lti", "mamba_layer"}
    for spec in LAYER_SPECS:
        assert spec.family == "ssm"
        torch.manual_seed(0)
        layer = spec.build()
        (x,) = spec.example(torch.Generator().manual_seed(0))
        y = layer(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        y.sum().backward()
        for name, p in layer.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{spec.name}.{name}"
