"""Selective state-space models: Mamba (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", arXiv:2312.00752; COLM 2024), in pure PyTorch.

Functional core: :func:`selective_scan` (the S6 recurrence) with three implementations: a fused C++ CPU kernel
(``_selective_scan_cpu.cpp``, built once and cached, see ``_scan_kernel.py``), a chunked parallel scan in pure
PyTorch (any device; the fallback) and a sequential reference (a Python loop over t).
Modules: :class:`Mamba` (the mixer: in_proj, causal depthwise conv, SiLU, selective SSM, SiLU gate, out_proj) and
:class:`MambaLayer` (pre-norm residual block around it). Both have a constant-memory recurrent ``step`` for
generation.

Notation (paper, Sec. 2-3): batch ``B``, channels ``Dm`` (= the expanded width E inside :class:`Mamba`), state size
``N``, length ``L``. For every channel d and state n the continuous system h' = A h + B x, y = C h is discretised
with step delta (zero-order hold for A, eq. 4):

    Abar_t = exp(delta_t * A),   Bbar_t * u_t ~= delta_t * B_t * u_t   (the paper's simplified Euler step for B)
    h_t = Abar_t * h_{t-1} + Bbar_t * u_t,   y_t = C_t . h_t + D * u_t   (eq. 2a-2b, diagonal A: all elementwise)

"Selective" (S6, Algorithm 2) means delta, B, C depend on the input (shapes (B, Dm, L), (B, N, L), (B, N, L));
the LTI case (S4D-like, Algorithm 1) has B, C of shape (Dm, N), shared over time and batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.layers import _scan_kernel
from tricklab.layers.spec import LayerSpec

MambaState = tuple[Tensor, Tensor]
"""(conv_state (B, E, d_conv - 1): the last d_conv - 1 conv inputs; ssm_state (B, E, N): h_{t-1})."""

ScanImpl = Literal["auto", "fused", "chunked", "parallel", "sequential"]
_IMPLS = ("auto", "fused", "chunked", "parallel", "sequential")  # "parallel": the chunked scan's old name
_LOG2E = 1.0 / math.log(2.0)


# ----------------------------------------------------------------------------------------------------------------
# functional core
# ----------------------------------------------------------------------------------------------------------------
def _check_tensor(name: str, t: object, ndim: int | tuple[int, ...]) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"selective_scan: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"selective_scan: {name} must be a real floating-point tensor, got dtype {t.dtype}; "
                        f"convert it with .float()")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if t.dim() not in dims:
        raise ValueError(f"selective_scan: {name} must have {' or '.join(map(str, dims))} dims, got shape "
                         f"{tuple(t.shape)}")
    return t


def _check_bc(name: str, t: Tensor, b: int, dm: int, n: int, length: int) -> None:
    sel, lti = (b, n, length), (dm, n)
    if tuple(t.shape) not in (sel, lti):
        raise ValueError(f"selective_scan: {name} must be (batch, N, L) = {sel} (input-dependent, selective) or "
                         f"(Dm, N) = {lti} (time-invariant), got {tuple(t.shape)}")


def auto_chunk_size(length: int) -> int:
    """Default chunk for the parallel scan: ``round(sqrt(L / 2))``, at least 1.

    The parallel path runs two Python loops of ``T`` steps over tensors of all ``L / T`` chunks at once and one
    loop of ``L / T`` steps over chunk states; ``2T + L/T`` Python steps is smallest at ``T = sqrt(L / 2)``
    (L = 2048: T = 32, 128 steps instead of 2048). Measured on the CPU in ``benchmarks/ssm_scan.py``.
    """
    return max(1, round(math.sqrt(length / 2)))


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    impl: ScanImpl = "auto",
    chunk_size: int | None = None,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba's selective scan (S6): ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``y_t = C_t . h_t + D u_t``.

    Args:
        u: inputs, (B, Dm, L).
        delta: step sizes before the optional bias/softplus, (B, Dm, L).
        A: (Dm, N) real state matrix (diagonal per channel); keep it negative (Mamba uses ``-exp(A_log)``) so that
            every decay ``exp(delta * A)`` is <= 1.
        B, C: (B, N, L) input-dependent (selective) or (Dm, N) time-invariant, each independently.
        D: optional (Dm,) skip, ``y += D * u``.
        z: optional (B, Dm, L) gate, ``y *= silu(z)`` (applied after the skip, as in Mamba's block).
        delta_bias: optional (Dm,) added to delta before the softplus.
        delta_softplus: apply ``softplus`` to ``delta (+ bias)`` (Mamba: yes; it makes delta > 0).
        impl: ``"auto"`` (default): the fused CPU kernel for CPU tensors when it builds, else (other devices, or
            the build failed: one warning per process) the chunked scan. ``"fused"``: the C++ kernel, an error
            if it cannot be built. ``"chunked"`` (alias ``"parallel"``): the chunked parallel scan in PyTorch.
            ``"sequential"``: the reference, a Python loop over t.
        chunk_size: chunked path: the chunk length (``None``: :func:`auto_chunk_size` (L)); fused path: the
            number of steps between the states saved for the backward (``None``: 64).
        initial_state: optional (B, Dm, N) h_0 (zeros if None), e.g. a state carried from a previous segment.
        return_last_state: also return h_L, (B, Dm, N).

    Returns:
        y (B, Dm, L) in u's dtype, or ``(y, last_state)`` if ``return_last_state``.

    Discretisation (paper eq. 4): ``Abar = exp(delta A)`` is the zero-order hold; ``Bbar = (delta A)^-1 (exp(delta A)
    - I) delta B`` is replaced by its first-order (Euler) form ``delta B``, as in the paper's released kernels.
    Half-precision inputs (e.g. under bfloat16 autocast) are computed and accumulated in float32 and the output
    cast back.
    """
    u = _check_tensor("u", u, 3)
    delta = _check_tensor("delta", delta, 3)
    A = _check_tensor("A", A, 2)
    B = _check_tensor("B", B, (2, 3))
    C = _check_tensor("C", C, (2, 3))
    b, dm, length = u.shape
    if tuple(delta.shape) != (b, dm, length):
        raise ValueError(f"selective_scan: delta must have u's shape {tuple(u.shape)} (batch, Dm, L), got "
                         f"{tuple(delta.shape)}")
    if A.shape[0] != dm:
        raise ValueError(f"selective_scan: A must be (Dm, N) with Dm = {dm} (u.shape[1]), got {tuple(A.shape)}")
    n = A.shape[1]
    _check_bc("B", B, b, dm, n, length)
    _check_bc("C", C, b, dm, n, length)
    if D is not None and tuple(_check_tensor("D", D, 1).shape) != (dm,):
        raise ValueError(f"selective_scan: D must be (Dm,) = ({dm},), got {tuple(D.shape)}")
    if z is not None and tuple(_check_tensor("z", z, 3).shape) != (b, dm, length):
        raise ValueError(f"selective_scan: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")
    if delta_bias is not None and tuple(_check_tensor("delta_bias", delta_bias, 1).shape) != (dm,):
        raise ValueError(f"selective_scan: delta_bias must be (Dm,) = ({dm},), got {tuple(delta_bias.shape)}")
    if initial_state is not None and tuple(_check_tensor("initial_state", initial_state, 3).shape) != (b, dm, n):
        raise ValueError(f"selective_scan: initial_state must be (batch, Dm, N) = {(b, dm, n)}, got "
                         f"{tuple(initial_state.shape)}")
    if impl not in _IMPLS:
        raise ValueError(f"selective_scan: impl must be one of {_IMPLS}, got {impl!r}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"selective_scan: chunk_size must be a positive int or None (auto), got {chunk_size!r}")

    out_dtype = u.dtype
    # half types lose the recurrence (decays ~1 - 1e-3 round to 1 in float16); compute in float32 like the CUDA kernel
    cdt = torch.promote_types(u.dtype, torch.float32)

    def cast(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(cdt)

    u, delta, A, B, C = u.to(cdt), delta.to(cdt), A.to(cdt), B.to(cdt), C.to(cdt)
    D, z, delta_bias, initial_state = cast(D), cast(z), cast(delta_bias), cast(initial_state)
    h0 = initial_state if initial_state is not None else u.new_zeros(b, dm, n)
    impl = _resolve_impl(impl, u)

    if impl == "fused":  # bias, softplus, skip and gate are fused into the kernel too
        y, h_last = _scan_kernel.fused_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, h0, chunk_size)
    else:
        if delta_bias is not None:
            delta = delta + delta_bias[:, None]
        if delta_softplus:
            delta = F.softplus(delta)
        if impl == "sequential":
            y, h_last = _scan_sequential(u, delta, A, B, C, h0)
        else:
            y, h_last = _scan_chunked(u, delta, A, B, C, h0, chunk_size or auto_chunk_size(length))
        if D is not None:
            y = y + D[:, None] * u
        if z is not None:
            y = y * F.silu(z)
    y = y.to(out_dtype)
    return (y, h_last.to(out_dtype)) if return_last_state else y


def _resolve_impl(impl: str, u: Tensor) -> str:
    """The implementation to run: "sequential", "fused" or "chunked" (see :func:`selective_scan`'s ``impl``)."""
    if impl in ("chunked", "parallel"):
        return "chunked"
    if impl == "sequential":
        return impl
    on_cpu = u.device.type == "cpu"
    if impl == "fused":
        if not on_cpu:
            raise ValueError(f"selective_scan: impl='fused' is a CPU kernel but the tensors are on {u.device}; use "
                             f"impl='chunked' (or 'auto', which picks it off the CPU)")
        _scan_kernel.load()  # raises FusedScanUnavailable with the reason
        return "fused"
    if not on_cpu:
        return "chunked"
    if _scan_kernel.fused_available():
        return "fused"
    _scan_kernel.warn_fallback_once()
    return "chunked"


def _scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """Reference: the recurrence as written, one Python step per time step. Returns (y (B, Dm, L), h_L)."""
    dA = torch.exp(delta[..., None] * A[:, None, :])  # (B, Dm, L, N): Abar_t = exp(delta_t A)
    if B.dim() == 3:
        dBu = (delta * u)[..., None] * B.transpose(1, 2)[:, None]  # (B, Dm, L, N): delta_t u_t B_t
    else:
        dBu = (delta * u)[..., None] * B[:, None, :]
    # C_t: (B, 1, N) per step (selective) or the fixed (Dm, N); both broadcast against h (B, Dm, N)
    c_steps = C.transpose(1, 2)[:, :, None].unbind(1) if C.dim() == 3 else [C] * u.shape[-1]
    ys = []
    # unbind (not dA[:, :, t]) so that the backward is one stack, not L zero-filled full-size copies
    for a_t, x_t, c_t in zip(dA.unbind(2), dBu.unbind(2), c_steps):
        h = a_t * h + x_t  # (B, Dm, N), eq. 2a
        ys.append((h * c_t).sum(-1))  # (B, Dm), eq. 2b
    y = torch.stack(ys, -1) if ys else u.new_zeros(u.shape)
    return y, h


def _scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor,
                  chunk: int) -> tuple[Tensor, Tensor]:
    """Chunked parallel scan. Returns (y (B, Dm, L), h_L).

    Split L into K = ceil(L / T) chunks of T steps (the tail padded with delta = 0, u = 0: decay exp(0) = 1 and no
    input, so the padding leaves the state unchanged). With Gamma the cumulative sum of delta, the log-decay from
    step s to t is the segment sum ``A (Gamma_t - Gamma_s)`` (<= 0), so

        h_t = exp(A (Gamma_t - Gamma_{t0})) H_in + sum_{t0 < s <= t} exp(A (Gamma_t - Gamma_s)) delta_s B_s u_s

    where H_in is the state entering the chunk (t0 its last step before). Three stages:
      1. local end states (H_in = 0) of all K chunks at once: T steps over (N, B, Dm, K) tensors;
      2. carry across chunks: H_in[k+1] = exp(A * sum_{chunk k} delta) H_in[k] + local_end[k] (the chunk's
         segment sum of log-decays), K steps over (N, B, Dm) tensors;
      3. rerun the T in-chunk steps of all chunks at once from their true H_in, reading y_t = C_t . h_t.
    Python steps: 2T + K instead of L. Everything exponentiated is a sum of log-decays <= 0 (a product of decays
    <= 1): no exp of a positive number and no division by a decay, unlike the ``exp(-Gamma)`` cumsum trick, which
    overflows once a chunk's total decay passes e^-88 in float32.

    Why not Mamba-2's masked matrix form inside the chunk (y = (L o C B^T) x with L_ts = exp(segsum))? With a
    separate A per (channel, state) as in Mamba-1, L is (Dm, N, T, T): T times more exponentials than the
    recurrence, which on a CPU costs more than the Python steps it saves (see docs/layers/ssm.md).
    """
    b, dm, length = u.shape
    n = A.shape[1]
    t_len = min(chunk, max(length, 1))
    k = -(-length // t_len) if length else 0
    pad = k * t_len - length
    if pad:
        u, delta = F.pad(u, (0, pad)), F.pad(delta, (0, pad))
        B = F.pad(B, (0, pad)) if B.dim() == 3 else B
        C = F.pad(C, (0, pad)) if C.dim() == 3 else C

    def time_major(t: Tensor) -> Tensor:  # (B, X, K*T) -> (T, B, X, K): step t of every chunk is one block
        return t.reshape(t.shape[0], t.shape[1], k, t_len).permute(3, 0, 1, 2).contiguous()

    def state_steps(t: Tensor) -> list[Tensor] | tuple[Tensor, ...]:
        # B or C as per-step (N, B, 1, K) blocks (selective) or one fixed (N, 1, Dm, 1) (time-invariant)
        if t.dim() == 3:
            return time_major(t).transpose(1, 2)[:, :, :, None].unbind(0)
        return [t.t()[:, None, :, None]] * t_len

    # State layout (N, B, Dm, K): N outermost so that every broadcast below runs over long contiguous (B, Dm, K)
    # rows (N = 16 innermost vectorises poorly), and y_t = sum over dim 0. Per-step blocks are separate small
    # tensors (N*B*Dm*K numbers): allocating whole (N, B, Dm, L) tensors on every call costs more in fresh-page
    # faults than the few extra Python steps do.
    dl = time_major(delta)  # (T, B, Dm, K)
    du = time_major(delta * u)
    # exp(delta A) = exp2(delta * A log2(e)): torch's exp2 kernel is ~3x faster than exp on AVX-512 CPUs
    a2 = (A * _LOG2E).t()[:, None, :, None]  # (N, 1, Dm, 1)
    b_steps, c_steps = state_steps(B), state_steps(C)

    # Without autograd (inference, generation prefill) the state updates run in place: same numbers, fewer
    # allocations. Stage 1's decays are kept for stage 3 either way (autograd saves them anyway) and dropped as
    # stage 3 consumes them.
    in_place = not (torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, h0)))
    decays: list[Tensor | None] = []

    def step(h: Tensor, a_t: Tensor, du_t: Tensor, b_t: Tensor) -> Tensor:
        # h_t = Abar_t h_{t-1} + delta_t u_t B_t, for all K chunks at once
        if in_place:
            return h.mul_(a_t).addcmul_(du_t, b_t)  # h is a fresh tensor owned here (zeros / stack)
        return (a_t * h).addcmul_(du_t, b_t)

    # 1. local end state of every chunk, from zero
    h = u.new_zeros(n, b, dm, k)
    for dl_t, du_t, b_t in zip(dl.unbind(0), du.unbind(0), b_steps):
        a_t = (dl_t * a2).exp2_()  # Abar_t = exp(delta_t A) <= 1, (N, B, Dm, K), in the product's buffer
        decays.append(a_t)
        h = step(h, a_t, du_t, b_t)
    # 2. chunk decay = exp(segment sum of delta A over the chunk) = exp(A * sum delta); carry the true state
    chunk_decay = torch.exp2(dl.sum(0) * a2)  # (N, B, Dm, K)
    carry, h_in = h0.permute(2, 0, 1), []  # (N, B, Dm)
    for local_end, decay in zip(h.unbind(3), chunk_decay.unbind(3)):
        h_in.append(carry)
        carry = torch.addcmul(local_end, decay, carry)
    # 3. the in-chunk steps again, now from the true entering state; y_t = C_t . h_t
    h = torch.stack(h_in, 3) if h_in else u.new_zeros(n, b, dm, 0)  # (N, B, Dm, K)
    ys = []
    for t, (du_t, b_t, c_t) in enumerate(zip(du.unbind(0), b_steps, c_steps)):
        a_t, decays[t] = decays[t], None
        h = step(h, a_t, du_t, b_t)  # type: ignore[arg-type]
        ys.append(torch.linalg.vecdot(h, c_t, dim=0))  # (B, Dm, K)
    y = torch.stack(ys, -1).reshape(b, dm, k * t_len)[..., :length]  # (B, Dm, K, T) -> (B, Dm, L)
    return y, carry.permute(1, 2, 0)


# ----------------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------------
def selective_step(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    h: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = True,
    selective: bool = True,
    impl: Literal["auto", "fused", "torch"] = "auto",
) -> tuple[Tensor, Tensor]:
    """One step of the selective scan (generation): ``h' = exp(delta A) h + delta u B``, ``y = C . h' (+ D u)
    (* silu(z))``. Equals ``selective_scan`` on a length-1 sequence from state ``h``.

    Args:
        u, delta, z: (B, Dm); A: (Dm, N); h: (B, Dm, N); D, delta_bias: (Dm,).
        B, C: (B, N) this step's values if ``selective``, else the time-invariant (Dm, N).
        impl: ``"torch"``: a handful of differentiable tensor ops. ``"auto"``: the fused kernel's one-call step
            when nothing needs a gradient and the tensors are float32/float64 on the CPU (about 2x faster per
            token, ``benchmarks/mamba_efficiency.py``), else the tensor ops. ``"fused"``: the kernel, or an error.

    Returns:
        (y (B, Dm) in u's dtype, new state (B, Dm, N) in h's dtype); half precision is computed in float32.
    """
    if impl not in ("auto", "fused", "torch"):
        raise ValueError(f"selective_step: impl must be 'auto', 'fused' or 'torch', got {impl!r}")
    out_dtype, state_dtype = u.dtype, h.dtype
    cdt = torch.promote_types(u.dtype, torch.float32)
    if impl != "torch":
        tensors = [t for t in (h, u, delta, A, B, C, D, z, delta_bias) if t is not None]
        plain = u.device.type == "cpu" and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        if impl == "fused" or (plain and _scan_kernel.fused_available()):
            if not plain:
                raise ValueError("selective_step: impl='fused' is a CPU kernel without autograd; use impl='torch'")
            cast = [None if t is None else t.to(cdt) for t in (h, u, delta, A, B, C, D, z, delta_bias)]
            y, h_new = _scan_kernel.fused_step(*cast, delta_softplus, selective)  # type: ignore[arg-type]
            return y.to(out_dtype), h_new.to(state_dtype)
    u, delta, A, B, C, h = (t.to(cdt) for t in (u, delta, A, B, C, h))
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)
    if delta_softplus:
        delta = F.softplus(delta)
    b_t, c_t = (B[:, None, :], C[:, None, :]) if selective else (B, C)  # broadcast against h (B, Dm, N)
    h = torch.exp(delta[..., None] * A) * h + (delta * u)[..., None] * b_t  # (B, Dm, N), eq. 2a with eq. 4
    y = (h * c_t).sum(-1)  # (B, Dm), eq. 2b
    if D is not None:
        y = y + D.to(cdt) * u
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(out_dtype), h.to(state_dtype)


def _inverse_softplus(x: Tensor) -> Tensor:
    # softplus(y) = x  <=>  y = x + log(1 - exp(-x)); expm1 keeps it exact for small x (dt ~ 1e-3)
    return x + torch.log(-torch.expm1(-x))


class Mamba(nn.Module):
    """The Mamba mixer (Gu & Dao 2023, Sec. 3.4, Fig. 3): a gated selective-SSM block, no norm, no residual.

    ``x (B, T, d_model)`` -> in_proj -> (x, z) each (B, T, E), E = expand * d_model; x -> causal depthwise
    Conv1d (kernel ``d_conv``, left context only) -> SiLU -> selective SSM with input-dependent
    ``delta = softplus(dt_proj(x_proj_dt(x)))``, ``B = x_proj_B(x)``, ``C = x_proj_C(x)`` (Algorithm 2) ->
    ``y * silu(z)`` -> out_proj -> (B, T, d_model).

    Initialisation as the paper: ``A = -exp(A_log)`` with S4D-real ``A_n = -(n + 1)`` per channel; ``D = 1``;
    dt_proj's bias set so that ``softplus(bias)`` is log-uniform in ``[dt_min, dt_max] = [1e-3, 1e-1]``;
    dt_proj's weight uniform in ``+-dt_rank^-0.5``.

    ``selective=False`` removes selection (the paper's Table 1 ablation): delta (E,), B (E, N) and C (E, N) become
    learned input-independent parameters, an LTI S4D-real layer with the same conv, gate and projections.

    Generation: ``init_state(batch)`` -> ``(conv_state (B, E, d_conv - 1), ssm_state (B, E, N))``;
    ``step(x_t (B, d_model), state) -> (y_t, new_state)`` costs O(E * (N + d_conv)) memory whatever the position.
    ``forward_with_state(x, state)`` runs a whole segment in parallel and returns the state after it (prefill).

    Args:
        d_model: model width D.
        d_state: SSM state size N per channel.
        d_conv: causal depthwise convolution width.
        expand: E = expand * d_model.
        dt_rank: rank R of the delta projection; None = ceil(d_model / 16) (the paper's "auto").
        selective: input-dependent delta, B, C (S6, True) or learned constants (LTI, False).
        dt_min, dt_max, dt_init_floor: the delta initialisation range and floor.
        bias: bias in in_proj and out_proj (Mamba: no). conv_bias: bias in the conv (Mamba: yes).
        impl, chunk_size: passed to :func:`selective_scan` in ``forward``.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | None = None,
        selective: bool = True,
        *,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_init_floor: float = 1e-4,
        bias: bool = False,
        conv_bias: bool = True,
        impl: ScanImpl = "auto",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state), ("d_conv", d_conv), ("expand", expand)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"Mamba: {name} must be a positive int, got {val!r}")
        if dt_rank is None or dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
            raise ValueError(f"Mamba: dt_rank must be a positive int or None (= ceil(d_model / 16)), got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"Mamba: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if impl not in _IMPLS:
            raise ValueError(f"Mamba: impl must be one of {_IMPLS}, got {impl!r}")
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = e = expand * d_model
        self.dt_rank, self.selective = dt_rank, bool(selective)
        self.impl, self.chunk_size = impl, chunk_size

        self.in_proj = nn.Linear(d_model, 2 * e, bias=bias)
        # depthwise, padded by d_conv - 1 on both sides and cropped to the first T outputs = causal
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1, bias=conv_bias)
        # dt initialised log-uniform in [dt_min, dt_max] (paper Sec. 3.6 / released code), stored pre-softplus
        dt = torch.exp(torch.rand(e) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt_bias = _inverse_softplus(dt.clamp(min=dt_init_floor))
        if self.selective:
            self.x_proj = nn.Linear(e, dt_rank + 2 * d_state, bias=False)  # -> (dt, B, C)
            self.dt_proj = nn.Linear(dt_rank, e, bias=True)
            with torch.no_grad():
                nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
                self.dt_proj.bias.copy_(dt_bias)
        else:
            # S4D-style LTI parameters: B = 1, C ~ N(0, 1/N) so that y = C . h keeps O(1) scale
            self.dt_bias = nn.Parameter(dt_bias)
            self.B = nn.Parameter(torch.ones(e, d_state))
            self.C = nn.Parameter(torch.randn(e, d_state) * d_state**-0.5)
        # S4D-real: A_n = -(n + 1), kept as log(-A) so that A stays negative under any update
        self.A_log = nn.Parameter(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]  # (the paper excludes A and D from WD)
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_proj = nn.Linear(e, d_model, bias=bias)

    # -- helpers ----------------------------------------------------------------------------------------------
    def _check_x(self, x: Tensor, ndim: int, what: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"Mamba: {what} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != ndim or x.shape[-1] != self.d_model:
            want = "(batch, seq_len, d_model)" if ndim == 3 else "(batch, d_model)"
            raise ValueError(f"Mamba: {what} must be {want} with d_model = {self.d_model}, got {tuple(x.shape)}")

    def _ssm_params(self, xc: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(delta before bias/softplus (B, E, L), delta_bias (E,), B, C) from the conv output xc (B, L, E).

        delta, B and C are transposed views of (B, L, .) projections: the fused scan reads such strided rows
        directly, so nothing is copied into a (B, E, L) layout."""
        if not self.selective:
            b, length, e = xc.shape
            return xc.new_zeros(()).expand(b, e, length), self.dt_bias, self.B, self.C
        dbc = self.x_proj(xc)  # (B, L, R + 2N)
        dt, b_sel, c_sel = dbc.split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (B, E, L); bias added inside the scan
        return delta, self.dt_proj.bias, b_sel.transpose(1, 2), c_sel.transpose(1, 2)

    def _causal_conv(self, xp: Tensor, length: int) -> Tensor:
        """Depthwise causal conv over time, channels last: xp (B, d_conv - 1 + L, E) = left context then the
        inputs -> (B, L, E), ``out_t = bias + sum_j w_j * x_{t - (d_conv - 1) + j}`` (what ``self.conv1d`` computes
        with its left padding, as d_conv shifted multiply-adds: no transposes to the (B, E, L) layout conv1d
        needs, and cheaper than its backward on the CPU, see benchmarks/mamba_vs_attention.py)."""
        k = self.d_conv
        w = self.conv1d.weight[:, 0, :]  # (E, k)
        bias = self.conv1d.bias if self.conv1d.bias is not None else xp.new_zeros(())
        out = torch.addcmul(bias, xp[:, k - 1:k - 1 + length], w[:, k - 1])
        for j in range(k - 1):
            out = torch.addcmul(out, xp[:, j:j + length], w[:, j])
        return out

    def _mix(self, x: Tensor, state: MambaState | None, want_state: bool) -> tuple[Tensor, MambaState | None]:
        length, k = x.shape[1], self.d_conv
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # (B, L, E) each, channels last throughout
        if state is None:
            xp, h0 = F.pad(xs, (0, 0, k - 1, 0)), None  # left context = zeros
        else:
            conv_state, h0 = state
            xp = torch.cat([conv_state.transpose(1, 2).to(xs.dtype), xs], dim=1)  # the stored left context
        xc = F.silu(self._causal_conv(xp, length))  # (B, L, E): output t sees inputs t - d_conv + 1 .. t
        new_conv = xp[:, xp.shape[1] - (k - 1):].transpose(1, 2) if want_state else None  # (B, E, d_conv - 1)
        delta, delta_bias, b_, c_ = self._ssm_params(xc)
        a = -torch.exp(self.A_log)  # A < 0 always: every decay exp(delta A) <= 1
        out = selective_scan(xc.transpose(1, 2), delta, a, b_, c_, self.D, z.transpose(1, 2), delta_bias,
                             delta_softplus=True, impl=self.impl, chunk_size=self.chunk_size, initial_state=h0,
                             return_last_state=want_state)
        # y (B, E, L): the fused scan writes it in u's channels-last layout, so the transpose back is free
        if want_state:
            y, h_last = out  # type: ignore[misc]
            return self.out_proj(y.transpose(1, 2)), (new_conv, h_last)  # type: ignore[return-value]
        return self.out_proj(out.transpose(1, 2)), None  # type: ignore[union-attr]

    def _check_state(self, state: object, batch: int) -> MambaState:
        want = ((batch, self.d_inner, self.d_conv - 1), (batch, self.d_inner, self.d_state))
        if (not isinstance(state, (tuple, list)) or len(state) != 2
                or not all(isinstance(s, Tensor) for s in state)
                or tuple(tuple(s.shape) for s in state) != want):
            got = ([tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__ for s in state]
                   if isinstance(state, (tuple, list)) else type(state).__name__)
            raise ValueError(f"Mamba: state must be (conv_state {want[0]}, ssm_state {want[1]}) as init_state("
                             f"{batch}) returns, got {got}")
        return state[0], state[1]

    # -- public API ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model), all positions in parallel (causal)."""
        self._check_x(x, 3, "x")
        return self._mix(x, None, False)[0]

    def forward_with_state(self, x: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        """Parallel forward over a segment that continues from ``state`` (None = the start); returns the state
        after the segment, so ``step`` can go on from there (prompt prefill)."""
        self._check_x(x, 3, "x")
        if state is not None:
            state = self._check_state(state, x.shape[0])
        y, new_state = self._mix(x, state, True)
        assert new_state is not None
        return y, new_state

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> MambaState:
        """Zero state before the first token: (conv_state (B, E, d_conv - 1), ssm_state (B, E, N))."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Mamba.init_state: batch_size must be a positive int, got {batch_size!r}")
        ref = self.A_log
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        return (torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
                torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype))

    def step(self, x_t: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One token: x_t (B, d_model) -> (y_t (B, d_model), new_state); the state is not modified in place."""
        self._check_x(x_t, 2, "x_t")
        conv_state, h = self._check_state(state, x_t.shape[0])
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, E)
        window = torch.cat([conv_state, xs[..., None]], dim=-1)  # (B, E, d_conv): the conv's receptive field
        xc = (window * self.conv1d.weight[:, 0, :]).sum(-1)
        if self.conv1d.bias is not None:
            xc = xc + self.conv1d.bias
        xc = F.silu(xc)  # (B, E)
        delta, delta_bias, b_, c_ = self._ssm_params(xc[:, None])  # as for a length-1 segment
        if self.selective:
            delta, b_, c_ = delta[..., 0], b_[..., 0], c_[..., 0]  # (B, E), (B, N), (B, N)
        else:
            delta = delta[..., 0]
        a = -torch.exp(self.A_log)  # A < 0 always: every decay exp(delta A) <= 1
        # the recurrence for one step from state h (selective_scan on L = 1, without its per-call overhead)
        y, h = selective_step(xc, delta, a, b_, c_, h, self.D, z, delta_bias, delta_softplus=True,
                              selective=self.selective, impl="auto" if self.impl in ("auto", "fused") else "torch")
        return self.out_proj(y), (window[..., 1:], h)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
                f"dt_rank={self.dt_rank}, selective={self.selective}")


class MambaLayer(nn.Module):
    """Pre-norm residual Mamba block: ``x + Mamba(norm(x))``, norm = RMSNorm (default, as the paper's LMs) or
    LayerNorm (torch's own modules). Same ``forward`` / ``forward_with_state`` / ``init_state`` / ``step`` as
    :class:`Mamba`; ``**mamba_kw`` go to :class:`Mamba`."""

    def __init__(self, d_model: int, norm: Literal["rms", "layer"] = "rms", eps: float = 1e-5,
                 **mamba_kw: object) -> None:
        super().__init__()
        if norm == "rms":
            self.norm: nn.Module = nn.RMSNorm(d_model, eps=eps)
        elif norm == "layer":
            self.norm = nn.LayerNorm(d_model, eps=eps)
        else:
            raise ValueError(f"MambaLayer: norm must be 'rms' or 'layer', got {norm!r}")
        self.mixer = Mamba(d_model, **mamba_kw)  # type: ignore[arg-type]

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, d_model) -> x + Mamba(norm(x)), (B, T, d_model)."""
        return x + self.mixer(self.norm(x))

    def forward_with_state(self, x: Tensor, state: MambaState | None = None) -> tuple[Tensor, MambaState]:
        y, new_state = self.mixer.forward_with_state(self.norm(x), state)
        return x + y, new_state

    def init_state(self, batch_size: int, device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> MambaState:
        return self.mixer.init_state(batch_size, device=device, dtype=dtype)

    def step(self, x_t: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """x_t (B, d_model) -> (x_t + Mamba.step(norm(x_t)), new_state)."""
        y, new_state = self.mixer.step(self.norm(x_t), state)
        return x_t + y, new_state


# ----------------------------------------------------------------------------------------------------------------
# layer registry
# ----------------------------------------------------------------------------------------------------------------
def _seq(gen: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 11, 16, generator=gen),)  # (B, T, D); T = 11 is not a multiple of the chunk


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("mamba", "ssm", lambda: Mamba(16, d_state=4, d_conv=3, chunk_size=4), _seq,
              "Mamba selective-SSM mixer, input-dependent delta/B/C, chunked scan (Gu & Dao 2023)"),
    LayerSpec("mamba_lti", "ssm", lambda: Mamba(16, d_state=4, d_conv=3, selective=False, chunk_size=4), _seq,
              "Mamba block without selection: learned constant delta/B/C, an LTI S4D-real SSM (Table 1 ablation)"),
    LayerSpec("mamba_layer", "ssm", lambda: MambaLayer(16, d_state=4, d_conv=3), _seq,
              "pre-norm residual Mamba block: x + Mamba(RMSNorm(x))"),
)

__all__ = ["LAYER_SPECS", "Mamba", "MambaLayer", "MambaState", "ScanImpl", "auto_chunk_size", "selective_scan",
           "selective_step"]
