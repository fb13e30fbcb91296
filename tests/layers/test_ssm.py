"""Tests for tricklab.layers.ssm: the selective scan and the Mamba blocks.

References used (named again at each test):
  * the sequential path (a Python loop over t, the recurrence as written) for the chunked parallel path and for
    the fused C++ kernel;
  * a NumPy loop of the paper's equations (eq. 2a-2b, 4) for the sequential path itself;
  * a NumPy convolution with the closed-form SSM kernel K_k = sum_n C_n Abar_n^k Bbar_n for the LTI case;
  * torch.autograd.gradcheck (central finite differences, float64) for the gradients;
  * the parallel forward for the recurrent ``step`` (generation must reproduce training).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tricklab.layers import _scan_kernel
from tricklab.layers.ssm import LAYER_SPECS, Mamba, MambaLayer, auto_chunk_size, selective_scan, selective_step

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


# ---------------------------------------------------------------------------------------- fused C++ kernel
OPTIONAL = ("D", "z", "delta_bias", "initial_state")


def _mixed_inputs(b: int, dm: int, n: int, length: int, sel_b: bool, sel_c: bool, seed: int = 0,
                  dtype: torch.dtype = F64) -> dict[str, torch.Tensor]:
    inp = _inputs(b, dm, n, length, True, seed, dtype)
    g = torch.Generator().manual_seed(seed + 1)
    for name, sel in (("B", sel_b), ("C", sel_c)):
        if not sel:
            inp[name] = torch.randn(dm, n, generator=g, dtype=dtype)
    return inp


def assert_same_scan(inp: dict[str, torch.Tensor], tol: float, **kw: object) -> None:
    """Fused against the sequential reference: output, final state and every input's gradient."""
    out_s, g_s = _run(inp, impl="sequential", **kw)
    out_f, g_f = _run(inp, impl="fused", **kw)
    torch.testing.assert_close(out_f, out_s, rtol=tol, atol=tol)
    for name, a, b in zip(inp, g_f, g_s):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, name=name: f"grad {name}: {m}")


# (batch, channels, N): N = 4 pads one vector; 16 is one float32 vector (two float64 ones), 20 three float64 ones
# (the run-time vector count); B and D stay small at L = 2048 to keep the sequential reference fast
SHAPES = {1: (2, 3, 4), 7: (2, 3, 20), 333: (3, 5, 16), 2048: (1, 2, 16)}


@pytest.mark.parametrize("length", [1, 7, 333, 2048])
@pytest.mark.parametrize(("sel_b", "sel_c"), [(True, True), (False, False), (True, False)])
def test_fused_equals_sequential(length: int, sel_b: bool, sel_c: bool) -> None:
    """Reference: the sequential path. The fused kernel (chunk 64, so L = 333 and 2048 recompute several chunks
    and L = 333 ends in a partial one) gives the output, final state and the gradients of u, delta, A, B, C, D,
    z, delta_bias and h_0 to 1e-10 in float64; selective, time-invariant and mixed B/C."""
    b, dm, n = SHAPES[length]
    assert_same_scan(_mixed_inputs(b, dm, n, length, sel_b, sel_c), 1e-10)


@pytest.mark.parametrize("drop", [(name,) for name in OPTIONAL] + [OPTIONAL])
@pytest.mark.parametrize("softplus", [True, False])
def test_fused_optional_terms(drop: tuple[str, ...], softplus: bool) -> None:
    """Reference: the sequential path. Without each of D, z, delta_bias, h_0 (and all of them), with and without
    the softplus, L = 333, chunk 50: same outputs and gradients of the inputs that remain, to 1e-10 (float64).
    Without softplus delta is used as given, so it is kept positive here (|delta|)."""
    inp = _mixed_inputs(2, 3, 5, 333, True, True, seed=4)
    for name in drop:
        inp.pop(name)
    if not softplus:
        inp["delta"] = inp["delta"].abs()
    assert_same_scan(inp, 1e-10, delta_softplus=softplus, chunk_size=50)


def test_fused_softplus_threshold_matches_torch() -> None:
    """Reference: F.softplus (threshold 20: x itself above it) through the sequential path, for delta + bias on
    both sides of the threshold and far below it (softplus(-30) ~ 1e-13); outputs and gradients to 1e-12."""
    inp = _mixed_inputs(1, 2, 3, 9, True, True, seed=5)
    inp["delta"] = torch.tensor([-30.0, -5.0, -0.1, 0.0, 0.3, 19.9, 20.0, 20.1, 35.0], dtype=F64).repeat(1, 2, 1)
    inp["delta_bias"] = torch.zeros(2, dtype=F64)
    inp["A"] = -torch.rand(2, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 0.01
    assert_same_scan(inp, 1e-12)


@pytest.mark.parametrize(("n", "length"), [(16, 600), (40, 77)])
def test_fused_float32_close_to_float64_reference(n: int, length: int) -> None:
    """Reference: the float64 sequential path. The float32 kernel (N = 16: one vector, kept in registers; N = 40:
    three, the run-time path) stays within float32 rounding, outputs and gradients to 1e-4."""
    inp64 = _inputs(2, 3, n, length, seed=6)
    inp64["delta"] = inp64["delta"] - 3.0  # slow decays: long memory
    out64, g64 = _run(inp64, impl="sequential")
    out32, g32 = _run({k: v.float() for k, v in inp64.items()}, impl="fused")
    torch.testing.assert_close(out32.double(), out64, rtol=1e-4, atol=1e-4)
    for a, b in zip(g32, g64):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4)


def test_fused_strong_decay_and_no_grad() -> None:
    """Reference: the sequential path. Decays far below float32's range (log-decay ~ -2500 per step) stay finite
    and exact; without autograd the kernel keeps no states and gives bit-identical outputs."""
    inp = _inputs(1, 3, 4, 50, dtype=torch.float32)
    inp["delta"] = inp["delta"].abs() * 50.0
    inp["A"] = inp["A"] * 20.0
    out_s, g_s = _run(inp, impl="sequential")
    out_f, g_f = _run(inp, impl="fused", chunk_size=16)
    assert torch.isfinite(out_f).all() and all(torch.isfinite(g).all() for g in g_f)
    torch.testing.assert_close(out_f, out_s, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_f, g_s):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        y0, h0 = selective_scan(**inp, impl="fused", chunk_size=16, return_last_state=True)  # type: ignore[misc]
    assert torch.equal(torch.cat([y0.flatten(), h0.flatten()]), out_f)


def test_fused_reads_strided_inputs() -> None:
    """Reference: the sequential path on contiguous copies. The Mamba block hands the kernel transposed views of
    (B, L, E) activations (u, delta, and z as a chunk of a wider tensor, not even dense); the kernel reads their
    rows in place and gives the same outputs and gradients (float64, 1e-10), its output in u's layout."""
    inp = _inputs(2, 3, 4, 37, seed=8)
    leaves = {k: v.clone().requires_grad_(True) for k, v in inp.items()}
    wide = torch.cat([leaves["u"], leaves["z"]], dim=1).transpose(1, 2).contiguous()  # (B, L, 2E), as in_proj
    strided = dict(leaves, u=wide[..., :3].transpose(1, 2), z=wide[..., 3:].transpose(1, 2),
                   delta=leaves["delta"].transpose(1, 2).contiguous().transpose(1, 2))
    assert not strided["u"].is_contiguous() and strided["u"].stride(1) == 1
    y, h = selective_scan(**strided, impl="fused", return_last_state=True)  # type: ignore[misc]
    y_ref, h_ref = selective_scan(**leaves, impl="sequential", return_last_state=True)  # type: ignore[misc]
    assert y.transpose(1, 2).is_contiguous()
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
    w = torch.randn(y.shape, dtype=F64, generator=torch.Generator().manual_seed(9)).transpose(1, 2).contiguous()
    w = w.transpose(1, 2)  # a strided output gradient too
    g = torch.autograd.grad((y * w).sum() + h.sum(), list(leaves.values()))
    g_ref = torch.autograd.grad((y_ref * w).sum() + h_ref.sum(), list(leaves.values()))
    for name, a, b in zip(leaves, g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"grad {name}: {m}")


def test_fused_propagates_nan() -> None:
    """Reference: IEEE arithmetic, as the sequential path shows it. A NaN in delta reaches the outputs from that
    step on (the kernel's exp must not turn it into a finite number) and the gradients."""
    inp = _inputs(1, 2, 3, 6, dtype=torch.float32)
    inp["delta"][0, 1, 3] = float("nan")
    for impl in ("sequential", "fused"):
        out, grads = _run(inp, impl=impl)
        y = out[: 2 * 6].reshape(2, 6)
        assert torch.isnan(y[1, 3:]).all() and not torch.isnan(y[0]).any() and not torch.isnan(y[1, :3]).any(), impl
        assert torch.isnan(grads[0]).any(), impl


def test_fused_threads_agree() -> None:
    """Reference: the same kernel on one thread. With two threads (rows split between them, per-thread dB/dC
    accumulators summed at the end) outputs are identical and gradients equal up to summation order."""
    inp = _mixed_inputs(2, 8, 16, 300, True, True, seed=7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        out1, g1 = _run(inp, impl="fused")
        torch.set_num_threads(2)
        out2, g2 = _run(inp, impl="fused")
    finally:
        torch.set_num_threads(before)
    assert torch.equal(out1, out2)
    for a, b in zip(g2, g1):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_fused_bfloat16_computes_in_float32() -> None:
    """Reference: the float32 fused scan of the same bfloat16-rounded inputs. bfloat16 inputs (as autocast gives
    the layer) are scanned and accumulated in float32 and only the output is rounded: identical to rounding the
    float32 result."""
    inp = {k: v.to(torch.bfloat16) for k, v in _inputs(2, 3, 16, 200, dtype=torch.float32).items()}
    y16 = selective_scan(**inp, impl="fused")  # type: ignore[arg-type]
    y32 = selective_scan(**{k: v.float() for k, v in inp.items()}, impl="fused")  # type: ignore[arg-type]
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), y32.to(torch.bfloat16).float(), rtol=0, atol=0)


def test_fused_refuses_other_devices() -> None:
    inp = {k: v.to("meta") for k, v in _inputs(1, 2, 3, 4, dtype=torch.float32).items()}
    with pytest.raises(ValueError, match="CPU kernel"):
        selective_scan(**inp, impl="fused")  # type: ignore[arg-type]


def test_fallback_warns_once_when_the_build_fails(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Reference: the chunked path. With an empty cache and a build that fails (simulated: the compiler step
    raises), impl="auto" runs the chunked scan with exactly one warning that gives the reason, and the build is
    not retried; impl="fused" raises FusedScanUnavailable with the same reason."""
    calls = []

    def broken_compile(so_path: Path, build_dir: Path) -> None:
        calls.append(so_path)
        raise RuntimeError("error: g++ not found (simulated)")

    monkeypatch.setenv("TRICKLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_scan_kernel, "_STATE", {"loaded": False, "error": None, "warned": False})
    monkeypatch.setattr(_scan_kernel, "_compile", broken_compile)
    inp = _inputs(1, 3, 4, 20, dtype=torch.float32)
    want = selective_scan(**inp, impl="chunked")  # type: ignore[arg-type]
    with pytest.warns(RuntimeWarning, match=r"fused CPU kernel is unavailable.*g\+\+ not found") as record:
        got = selective_scan(**inp)  # type: ignore[arg-type]
    assert len([w for w in record if issubclass(w.category, RuntimeWarning)]) == 1
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call must not warn again
        selective_scan(**inp)  # type: ignore[arg-type]
        Mamba(8, d_state=4)(torch.randn(1, 5, 8))
    with pytest.raises(_scan_kernel.FusedScanUnavailable, match=r"g\+\+ not found"):
        selective_scan(**inp, impl="fused")  # type: ignore[arg-type]
    assert len(calls) == 1  # remembered, not retried


_LOAD_SCRIPT = """
import sys, time, torch
from tricklab.layers import _scan_kernel as K
t0 = time.perf_counter()
K.load()
u = torch.ones(1, 2, 5)
y, h = K.fused_scan(u, u, -torch.ones(2, 3), torch.ones(1, 3, 5), torch.ones(1, 3, 5), None, None, None, True,
                    torch.zeros(1, 2, 3))
print(f"ok {float(y.sum()):.6f} {time.perf_counter() - t0:.2f}")
"""


def _load_in_subprocess(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _LOAD_SCRIPT], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def test_second_process_reuses_the_compiled_kernel() -> None:
    """Reference: the output of this process. A new process finds the cached library, prints nothing on stderr
    (no compile message, no warning) and computes the same numbers."""
    _scan_kernel.load()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = _load_in_subprocess(env)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    u = torch.ones(1, 2, 5)
    y, _ = _scan_kernel.fused_scan(u, u, -torch.ones(2, 3), torch.ones(1, 3, 5), torch.ones(1, 3, 5), None, None,
                                   None, True, torch.zeros(1, 2, 3))
    assert out.split()[:2] == ["ok", f"{float(y.sum()):.6f}"]
    assert err.strip() == "", err


@pytest.mark.slow
def test_two_processes_building_at_once(tmp_path: Path) -> None:
    """Reference: the process lock's contract. Two processes started together on an empty cache: one compiles
    (one "compiling" message in all), the other waits for it and loads the result; both compute the same numbers
    and one library file is left in the cache."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "TRICKLAB_CACHE_DIR": str(tmp_path)}
    procs = [_load_in_subprocess(env) for _ in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert results[0][0].split()[1] == results[1][0].split()[1]
    assert sum(err.count("compiling the fused selective-scan kernel") for _, err in results) == 1
    assert len(list((tmp_path / "extensions").glob("selective_scan_*.so"))) == 1


@pytest.mark.parametrize("selective", [True, False])
def test_selective_step_equals_one_scan_step(selective: bool) -> None:
    """Reference: selective_scan (sequential) on a length-1 sequence from the same state: output, new state and
    every input's gradient (float64)."""
    inp = _inputs(2, 3, 4, 1, selective)
    names = ["u", "delta", "A", "B", "C", "initial_state", "D", "z", "delta_bias"]
    leaves = {k: inp[k].clone().requires_grad_(True) for k in names}
    y_ref, h_ref = selective_scan(**leaves, impl="sequential", return_last_state=True)  # type: ignore[misc]
    sq = {k: (v[..., 0] if k in ("u", "delta", "z") or (selective and k in ("B", "C")) else v)
          for k, v in leaves.items()}
    y, h = selective_step(sq["u"], sq["delta"], sq["A"], sq["B"], sq["C"], sq["initial_state"], sq["D"], sq["z"],
                          sq["delta_bias"], selective=selective)
    torch.testing.assert_close(y, y_ref[..., 0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(h.shape, dtype=F64, generator=torch.Generator().manual_seed(3))
    g = torch.autograd.grad(y.sum() + (h * w).sum(), list(leaves.values()))
    g_ref = torch.autograd.grad(y_ref.sum() + (h_ref * w).sum(), list(leaves.values()))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("selective", [True, False])
@pytest.mark.parametrize(("n", "dtype"), [(4, F64), (20, F64), (16, torch.float32), (40, torch.float32)])
def test_fused_step_equals_torch_step(selective: bool, n: int, dtype: torch.dtype) -> None:
    """Reference: selective_step's tensor-op path (itself checked against selective_scan above). The kernel's
    one-call step (used for generation without autograd) gives the same output and new state, with and without
    D, z and delta_bias, for state sizes that do and do not fill whole vectors; the given state is unchanged."""
    inp = _inputs(3, 5, n, 1, selective, dtype=dtype)
    sq = {k: (v[..., 0] if k in ("u", "delta", "z") or (selective and k in ("B", "C")) else v)
          for k, v in inp.items()}
    tol = 1e-12 if dtype == F64 else 1e-5
    for extras in ({"D": sq["D"], "z": sq["z"], "delta_bias": sq["delta_bias"]}, {}):
        args = (sq["u"], sq["delta"], sq["A"], sq["B"], sq["C"], sq["initial_state"])
        h_before = sq["initial_state"].clone()
        with torch.no_grad():
            y_f, h_f = selective_step(*args, **extras, selective=selective, impl="fused")  # type: ignore[arg-type]
            y_t, h_t = selective_step(*args, **extras, selective=selective, impl="torch")  # type: ignore[arg-type]
        torch.testing.assert_close(y_f, y_t, rtol=tol, atol=tol)
        torch.testing.assert_close(h_f, h_t, rtol=tol, atol=tol)
        assert torch.equal(sq["initial_state"], h_before)
    with pytest.raises(ValueError, match="without autograd"):
        selective_step(*(t.requires_grad_(True) if i == 0 else t for i, t in enumerate(args)),
                       selective=selective, impl="fused")


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
@pytest.mark.parametrize("impl", ["chunked", "fused"])
def test_mamba_parallel_equals_sequential_module(selective: bool, impl: str) -> None:
    """Reference: the same Mamba with impl="sequential". Outputs and every parameter gradient agree (float64)."""
    torch.manual_seed(0)
    fast = Mamba(12, d_state=4, d_conv=3, selective=selective, chunk_size=4, impl=impl).double()  # type: ignore[arg-type]
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


def test_mamba_layer_equals_mambapy_block() -> None:
    """Reference: mambapy 1.2's ResidualBlock (a pure-PyTorch Mamba with a Blelloch parallel scan, test-only
    dependency). Its state dict has our MambaLayer's names; with the same weights both give the same outputs and
    the same gradients of the input and every parameter (float64). mambapy casts A_log and D to float32
    (``.float()``): A is rounded to float32 in its forward and the A_log and D gradients come back rounded to
    float32, so gradients are compared at float32's precision (rtol 1e-6), the outputs at 1e-10."""
    mambapy = pytest.importorskip("mambapy.mamba")
    torch.manual_seed(0)
    ref = mambapy.ResidualBlock(mambapy.MambaConfig(d_model=16, n_layers=1, d_state=8)).double()
    ours = MambaLayer(16, d_state=8).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 32, 16, dtype=F64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    y, y_ref = ours(x), ref(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    w = torch.randn(y.shape, dtype=F64, generator=torch.Generator().manual_seed(5))
    names = [name for name, _ in ours.named_parameters()]
    theirs = dict(ref.named_parameters())
    g = torch.autograd.grad((y * w).sum(), [x, *ours.parameters()])
    g_ref = torch.autograd.grad((y_ref * w).sum(), [x, *(theirs[name] for name in names)])
    for name, a, b in zip(["x", *names], g, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8, msg=lambda m, name=name: f"grad {name}: {m}")


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
