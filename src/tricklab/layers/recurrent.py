"""Recurrent layers: attention for encoder-decoder RNNs, QRNN, IndRNN and the hierarchical multiscale LSTM.

Every layer is a pure function on tensors plus a thin ``nn.Module`` holding the parameters. Batch first: sequences
are ``(B, T, D)``. torch's own ``nn.LSTM`` and ``nn.GRU`` are registered as they are (``lstm``, ``gru``) and are not
re-implemented here.

* Additive attention (Bahdanau, Cho & Bengio 2015): ``score(s, h) = v^T tanh(W s + U h)``.
* Multiplicative attention (Luong, Pham & Manning 2015): ``dot`` ``s^T h``, ``general`` ``s^T W h`` and ``concat``
  ``v^T tanh(W [s; h])``. Both return a context ``(B, Hv)`` and weights ``(B, S)``, and take a source padding mask.
* QRNN (Bradbury, Merity, Xiong & Socher 2017): a causal convolution gives Z, F, O for all steps at once; only the
  element-wise fo-pooling ``c_t = f_t c_{t-1} + (1 - f_t) z_t`` is recurrent, computed here by a parallel scan.
* IndRNN (Li, Li, Cook, Zhu & Gao 2018): ``h_t = relu(W x_t + u * h_{t-1} + b)`` with one recurrent weight per unit,
  kept in ``|u| <= u_max`` by :meth:`IndRNNLayer.constrain_` after each optimiser step.
* HM-LSTM (Chung, Ahn & Bengio 2017): stacked LSTMs with a binary boundary detector per layer that chooses between
  COPY, UPDATE and FLUSH; trained with the straight-through estimator of a hard sigmoid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tricklab.layers.spec import LayerSpec

LuongScore = Literal["dot", "general", "concat"]
ScanImpl = Literal["parallel", "sequential"]
_LUONG_SCORES = ("dot", "general", "concat")
_SCAN_IMPLS = ("parallel", "sequential")
_ACTIVATIONS = ("relu", "tanh")


# ================================================================================================ validation
def _check_float(who: str, name: str, t: object, ndims: tuple[int, ...]) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{who}: {name} must be a floating-point tensor, got dtype {t.dtype}; convert it with .float()")
    if t.dim() not in ndims:
        raise ValueError(f"{who}: {name} must have {' or '.join(map(str, ndims))} dims, got shape {tuple(t.shape)}")
    return t


def _check_positive(who: str, **values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{who}: {name} must be a positive int, got {v!r}")


# ================================================================================================ attention
def _attention_inputs(who: str, query: Tensor, keys: Tensor, values: Tensor | None,
                      key_padding_mask: Tensor | None) -> tuple[Tensor, Tensor, bool]:
    """Validate and return ``query`` as (B, T, Hq), ``values`` (B, S, Hv) and whether the query had no T axis."""
    _check_float(who, "query", query, (2, 3))
    _check_float(who, "keys", keys, (3,))
    values = keys if values is None else _check_float(who, "values", values, (3,))
    b, s = keys.shape[0], keys.shape[1]
    if query.shape[0] != b or values.shape[:2] != keys.shape[:2]:
        raise ValueError(f"{who}: query (B, [T,] Hq), keys (B, S, Hk) and values (B, S, Hv) must share B (and S), got "
                         f"{tuple(query.shape)}, {tuple(keys.shape)}, {tuple(values.shape)}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, Tensor) or key_padding_mask.dtype != torch.bool:
            raise TypeError(f"{who}: key_padding_mask must be a bool tensor (True = padding), got "
                            f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}")
        if tuple(key_padding_mask.shape) != (b, s):
            raise ValueError(f"{who}: key_padding_mask must be (B, S) = {(b, s)}, got {tuple(key_padding_mask.shape)}")
    single = query.dim() == 2
    return (query.unsqueeze(1) if single else query), values, single


def _attend(scores: Tensor, values: Tensor, key_padding_mask: Tensor | None, single: bool) -> tuple[Tensor, Tensor]:
    """Softmax over the source axis of scores (B, T, S) -> weights; context = weights @ values (B, T, Hv).

    Padding keys get a score of -inf, hence a weight of exactly 0. A row whose keys are all padding has no defined
    softmax and comes out NaN (as in torch's attention): every source needs at least one real token.
    """
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, T, S), rows sum to 1
    context = weights @ values  # (B, T, S) @ (B, S, Hv) -> (B, T, Hv): c = sum_j a_j h_j
    if single:
        return context.squeeze(1), weights.squeeze(1)
    return context, weights


def additive_attention(query: Tensor, keys: Tensor, w_query: Tensor, w_key: Tensor, v: Tensor,
                       bias: Tensor | None = None, values: Tensor | None = None,
                       key_padding_mask: Tensor | None = None,
                       keys_proj: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Bahdanau attention: ``e_j = v^T tanh(W s + U h_j + b)``, ``a = softmax(e)``, ``context = sum_j a_j h_j``.

    Args:
        query: decoder state ``s``, (B, Hq) for one step or (B, T, Hq) for T steps at once.
        keys: encoder states ``h_j``, (B, S, Hk).
        w_query: ``W`` (A, Hq); w_key: ``U`` (A, Hk); v: (A,); bias: ``b`` (A,) or None.
        values: what the weights average, (B, S, Hv); default ``keys`` (as in the paper).
        key_padding_mask: (B, S) bool, True = padding (weight 0).
        keys_proj: ``U h`` (B, S, A) if already computed; a decoder computes it once per source, not per step.

    Returns:
        context (B, Hv) and weights (B, S) (with a T axis after B when the query has one).
    """
    who = "additive_attention"
    q3, values, single = _attention_inputs(who, query, keys, values, key_padding_mask)
    _check_float(who, "w_query", w_query, (2,))
    _check_float(who, "v", v, (1,))
    if keys_proj is None:
        _check_float(who, "w_key", w_key, (2,))
        keys_proj = F.linear(keys, w_key)  # (B, S, A)
    if w_query.shape[1] != q3.shape[-1] or keys_proj.shape[-1] != w_query.shape[0] or v.shape[0] != w_query.shape[0]:
        raise ValueError(f"{who}: W must be (A, Hq), U h (B, S, A) and v (A,); got W {tuple(w_query.shape)}, "
                         f"U h {tuple(keys_proj.shape)}, v {tuple(v.shape)} for a query of size {q3.shape[-1]}")
    q_proj = F.linear(q3, w_query, bias)  # (B, T, A)
    # (B, T, 1, A) + (B, 1, S, A) -> tanh -> (B, T, S, A) @ v (A,) -> (B, T, S)
    scores = torch.tanh(q_proj.unsqueeze(2) + keys_proj.unsqueeze(1)) @ v
    return _attend(scores, values, key_padding_mask, single)


def multiplicative_attention(query: Tensor, keys: Tensor, score: LuongScore = "general", weight: Tensor | None = None,
                             v: Tensor | None = None, values: Tensor | None = None,
                             key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Luong (global) attention with one of the paper's three scores (eq. 8):

    * ``dot``: ``s^T h`` (needs Hq == Hk; ``weight``, ``v`` unused);
    * ``general``: ``s^T W h`` with ``weight`` = W (Hq, Hk);
    * ``concat``: ``v^T tanh(W [s; h])`` with ``weight`` = W (A, Hq + Hk) and ``v`` (A,).

    Shapes, mask and returns as in :func:`additive_attention`.
    """
    who = "multiplicative_attention"
    if score not in _LUONG_SCORES:
        raise ValueError(f"{who}: score must be one of {_LUONG_SCORES}, got {score!r}")
    q3, values, single = _attention_inputs(who, query, keys, values, key_padding_mask)
    hq, hk = q3.shape[-1], keys.shape[-1]
    if score == "dot":
        if hq != hk:
            raise ValueError(f"{who}: score='dot' needs query and key sizes to match, got {hq} and {hk}; use 'general'")
        scores = q3 @ keys.transpose(1, 2)  # (B, T, Hq) @ (B, Hk, S) -> (B, T, S)
    elif score == "general":
        _check_float(who, "weight", weight, (2,))
        if tuple(weight.shape) != (hq, hk):
            raise ValueError(f"{who}: score='general' needs weight W of shape (Hq, Hk) = {(hq, hk)}, got "
                             f"{tuple(weight.shape)}")
        scores = (q3 @ weight) @ keys.transpose(1, 2)  # s^T W h: (B, T, Hk) @ (B, Hk, S) -> (B, T, S)
    else:
        _check_float(who, "weight", weight, (2,))
        _check_float(who, "v", v, (1,))
        if weight.shape[1] != hq + hk or v.shape[0] != weight.shape[0]:
            raise ValueError(f"{who}: score='concat' needs W (A, Hq + Hk) = (A, {hq + hk}) and v (A,), got W "
                             f"{tuple(weight.shape)} and v {tuple(v.shape)}")
        b, t, s = q3.shape[0], q3.shape[1], keys.shape[1]
        # [s; h] for every (query step, source position): (B, T, S, Hq + Hk), literally as the paper writes it
        pair = torch.cat([q3.unsqueeze(2).expand(b, t, s, hq), keys.unsqueeze(1).expand(b, t, s, hk)], dim=-1)
        scores = torch.tanh(F.linear(pair, weight)) @ v  # (B, T, S, A) @ (A,) -> (B, T, S)
    return _attend(scores, values, key_padding_mask, single)


class AdditiveAttention(nn.Module):
    """Bahdanau attention; ``forward(query, keys, key_padding_mask=None) -> (context, weights)``.

    ``query_proj`` is W (with the bias b), ``key_proj`` is U, ``v`` the scoring vector. Call :meth:`project_keys`
    once per source and pass the result as ``keys_proj`` to every decoding step.
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int | None = None, bias: bool = True) -> None:
        super().__init__()
        attn_size = key_size if attn_size is None else attn_size
        _check_positive("AdditiveAttention", query_size=query_size, key_size=key_size, attn_size=attn_size)
        self.query_proj = nn.Linear(query_size, attn_size, bias=bias)  # W s + b
        self.key_proj = nn.Linear(key_size, attn_size, bias=False)  # U h
        self.v = nn.Parameter(torch.empty(attn_size))
        bound = 1.0 / math.sqrt(attn_size)  # nn.Linear's default range for a layer with A inputs
        nn.init.uniform_(self.v, -bound, bound)

    def project_keys(self, keys: Tensor) -> Tensor:
        """``U h``: (B, S, Hk) -> (B, S, A)."""
        return self.key_proj(keys)

    def forward(self, query: Tensor, keys: Tensor, key_padding_mask: Tensor | None = None,
                values: Tensor | None = None, keys_proj: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return additive_attention(query, keys, self.query_proj.weight, self.key_proj.weight, self.v,
                                  self.query_proj.bias, values, key_padding_mask, keys_proj)


class LuongAttention(nn.Module):
    """Luong global attention, ``score`` in ``dot``, ``general``, ``concat``; forward as :class:`AdditiveAttention`.

    The paper's attentional hidden state ``tanh(W_c [c; s])`` belongs to the decoder (see models/seq2seq.py).
    """

    def __init__(self, query_size: int, key_size: int, score: LuongScore = "general",
                 attn_size: int | None = None) -> None:
        super().__init__()
        if score not in _LUONG_SCORES:
            raise ValueError(f"LuongAttention: score must be one of {_LUONG_SCORES}, got {score!r}")
        _check_positive("LuongAttention", query_size=query_size, key_size=key_size)
        if score == "dot" and query_size != key_size:
            raise ValueError(f"LuongAttention: score='dot' needs query_size == key_size, got {query_size} and "
                             f"{key_size}; use score='general'")
        self.score = score
        self.weight: nn.Parameter | None = None
        self.v: nn.Parameter | None = None
        if score == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size))
            nn.init.uniform_(self.weight, -1.0 / math.sqrt(key_size), 1.0 / math.sqrt(key_size))
        elif score == "concat":
            attn_size = key_size if attn_size is None else attn_size
            _check_positive("LuongAttention", attn_size=attn_size)
            self.weight = nn.Parameter(torch.empty(attn_size, query_size + key_size))
            self.v = nn.Parameter(torch.empty(attn_size))
            bound = 1.0 / math.sqrt(query_size + key_size)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.v, -1.0 / math.sqrt(attn_size), 1.0 / math.sqrt(attn_size))

    def forward(self, query: Tensor, keys: Tensor, key_padding_mask: Tensor | None = None,
                values: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return multiplicative_attention(query, keys, self.score, self.weight, self.v, values, key_padding_mask)

    def extra_repr(self) -> str:
        return f"score={self.score!r}"


# ================================================================================================ QRNN
def qrnn_fo_pool(z: Tensor, f: Tensor, o: Tensor, c0: Tensor | None = None,
                 impl: ScanImpl = "parallel") -> tuple[Tensor, Tensor]:
    """QRNN fo-pooling (Bradbury et al. 2017, eq. 4): ``c_t = f_t * c_{t-1} + (1 - f_t) * z_t``, ``h_t = o_t * c_t``.

    Args:
        z, f, o: (B, T, H) candidate (tanh), forget and output gates (sigmoid).
        c0: (B, H) initial cell, default 0.
        impl: ``"parallel"`` (default) a Hillis-Steele scan: ``c_t = a_t c_{t-1} + b_t`` with ``a = f`` and
            ``b = (1 - f) z`` is a composition of affine maps, associative as
            ``(a2, b2) o (a1, b1) = (a2 a1, a2 b1 + b2)``, so ceil(log2 T) element-wise rounds over all steps give
            every ``c_t``. It multiplies gates in [0, 1] only (no logs, no division), so it is as stable as the loop.
            ``"sequential"``: the step-by-step reference loop.

    Returns:
        h (B, T, H) and the last cell c_T (B, H).
    """
    who = "qrnn_fo_pool"
    for name, t in (("z", z), ("f", f), ("o", o)):
        _check_float(who, name, t, (3,))
    if f.shape != z.shape or o.shape != z.shape:
        raise ValueError(f"{who}: z, f, o must have one shape (B, T, H), got {tuple(z.shape)}, {tuple(f.shape)}, "
                         f"{tuple(o.shape)}")
    if z.shape[1] < 1:
        raise ValueError(f"{who}: the sequence is empty (T = 0)")
    if c0 is not None:
        _check_float(who, "c0", c0, (2,))
        if c0.shape != (z.shape[0], z.shape[2]):
            raise ValueError(f"{who}: c0 must be (B, H) = {(z.shape[0], z.shape[2])}, got {tuple(c0.shape)}")
    if impl not in _SCAN_IMPLS:
        raise ValueError(f"{who}: impl must be one of {_SCAN_IMPLS}, got {impl!r}")
    if impl == "sequential":
        c = torch.zeros_like(z[:, 0]) if c0 is None else c0
        cs = []
        for t in range(z.shape[1]):
            c = f[:, t] * c + (1 - f[:, t]) * z[:, t]
            cs.append(c)
        cells = torch.stack(cs, dim=1)
    else:
        a, b = f, (1 - f) * z  # (B, T, H) each: c_t = a_t c_{t-1} + b_t
        if c0 is not None:
            # fold c0 into step 0: c_0' = a_0 c0 + b_0, after which the recurrence starts from 0
            b = torch.cat([b[:, :1] + a[:, :1] * c0.unsqueeze(1), b[:, 1:]], dim=1)
        d, length = 1, z.shape[1]
        while d < length:
            # after this round, (a_t, b_t) composes the 2d steps t-2d+1..t; steps before 0 are the identity (1, 0)
            a_prev = F.pad(a[:, :-d], (0, 0, d, 0), value=1.0)
            b_prev = F.pad(b[:, :-d], (0, 0, d, 0), value=0.0)
            b = a * b_prev + b
            a = a * a_prev
            d *= 2
        cells = b  # (B, T, H): the composed map applied to c = 0
    return o * cells, cells[:, -1]


class QRNNLayer(nn.Module):
    """One QRNN layer with fo-pooling; ``forward(x (B, T, D), c0=None) -> (h (B, T, H), c_T (B, H))``.

    The masked convolution (eq. 1-3) is an ``nn.Conv1d`` of width ``window`` on the input padded with
    ``window - 1`` zeros on the left, so the gates at step t see only ``x_{t-window+1..t}``.
    """

    def __init__(self, input_size: int, hidden_size: int, window: int = 2, impl: ScanImpl = "parallel") -> None:
        super().__init__()
        _check_positive("QRNNLayer", input_size=input_size, hidden_size=hidden_size, window=window)
        if impl not in _SCAN_IMPLS:
            raise ValueError(f"QRNNLayer: impl must be one of {_SCAN_IMPLS}, got {impl!r}")
        self.input_size, self.hidden_size, self.window, self.impl = input_size, hidden_size, window, impl
        self.conv = nn.Conv1d(input_size, 3 * hidden_size, window)  # Z, F, O stacked on the channel axis

    def gates(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Z = tanh(W_z * X), F = sigmoid(W_f * X), O = sigmoid(W_o * X), each (B, T, H) (masked convolution)."""
        _check_float("QRNNLayer", "x", x, (3,))
        if x.shape[-1] != self.input_size:
            raise ValueError(f"QRNNLayer: expected x of shape (B, T, {self.input_size}), got {tuple(x.shape)}")
        xc = F.pad(x.transpose(1, 2), (self.window - 1, 0))  # (B, D, window - 1 + T): causal left padding
        zfo = self.conv(xc).transpose(1, 2)  # (B, T, 3H)
        z, f, o = zfo.chunk(3, dim=-1)
        return torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)

    def forward(self, x: Tensor, c0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, f, o = self.gates(x)
        return qrnn_fo_pool(z, f, o, c0, impl=self.impl)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, window={self.window}, impl={self.impl!r}"


class QRNN(nn.Module):
    """Stacked QRNN layers; ``forward(x (B, T, D), c0=None) -> (h (B, T, H), c_T (num_layers, B, H))``.

    ``dropout`` is applied to the outputs of every layer but the last (as ``nn.LSTM`` does).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2, window: int = 2,
                 dropout: float = 0.0, impl: ScanImpl = "parallel") -> None:
        super().__init__()
        _check_positive("QRNN", num_layers=num_layers)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"QRNN: dropout must be in [0, 1), got {dropout}")
        self.layers = nn.ModuleList(
            QRNNLayer(input_size if i == 0 else hidden_size, hidden_size, window, impl) for i in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, c0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if c0 is not None and (c0.dim() != 3 or c0.shape[0] != len(self.layers)):
            raise ValueError(f"QRNN: c0 must be (num_layers, B, H) with num_layers = {len(self.layers)}, got "
                             f"{tuple(c0.shape)}")
        finals = []
        for i, layer in enumerate(self.layers):
            x, c = layer(x, None if c0 is None else c0[i])
            finals.append(c)
            if i < len(self.layers) - 1:
                x = self.dropout(x)
        return x, torch.stack(finals)


# ================================================================================================ IndRNN
def indrnn_max_recurrent_weight(seq_len: int, gamma: float = 2.0) -> float:
    """The bound ``gamma ** (1 / T)`` on ``|u|`` (Li et al. 2018, §3.1).

    Through T steps of a ReLU IndRNN the gradient of one unit is scaled by ``u ** T`` (where the unit is active),
    so ``|u| <= gamma ** (1/T)`` keeps that growth under ``gamma``.
    """
    _check_positive("indrnn_max_recurrent_weight", seq_len=seq_len)
    if not gamma > 0:
        raise ValueError(f"indrnn_max_recurrent_weight: gamma must be > 0, got {gamma}")
    return float(gamma) ** (1.0 / seq_len)


def indrnn(x: Tensor, weight: Tensor, bias: Tensor | None, u: Tensor, h0: Tensor | None = None,
           activation: Literal["relu", "tanh"] = "relu") -> tuple[Tensor, Tensor]:
    """IndRNN (Li et al. 2018, eq. 2): ``h_t = act(W x_t + u * h_{t-1} + b)``, ``*`` element-wise.

    Args:
        x: (B, T, D); weight: W (H, D); bias: b (H,) or None; u: (H,) recurrent weights; h0: (B, H), default 0.

    Returns:
        h (B, T, H) and h_T (B, H).

    ``W x_t + b`` has no recurrence, so it is one matrix product over all T steps; the loop is element-wise.
    """
    who = "indrnn"
    _check_float(who, "x", x, (3,))
    _check_float(who, "weight", weight, (2,))
    _check_float(who, "u", u, (1,))
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if weight.shape[1] != x.shape[-1] or u.shape[0] != weight.shape[0]:
        raise ValueError(f"{who}: weight must be (H, D) with D = {x.shape[-1]} and u (H,), got weight "
                         f"{tuple(weight.shape)} and u {tuple(u.shape)}")
    if x.shape[1] < 1:
        raise ValueError(f"{who}: the sequence is empty (T = 0)")
    act = torch.relu if activation == "relu" else torch.tanh
    wx = F.linear(x, weight, bias)  # (B, T, H)
    h = torch.zeros_like(wx[:, 0]) if h0 is None else h0
    if h.shape != wx[:, 0].shape:
        raise ValueError(f"{who}: h0 must be (B, H) = {tuple(wx[:, 0].shape)}, got {tuple(h.shape)}")
    hs = []
    for t in range(wx.shape[1]):
        h = act(wx[:, t] + u * h)
        hs.append(h)
    return torch.stack(hs, dim=1), h


class IndRNNLayer(nn.Module):
    """One IndRNN layer; ``forward(x (B, T, D), h0=None) -> (h (B, T, H), h_T (B, H))``.

    The constraint ``|u| <= u_max`` is a **clamp after each optimiser step**, as in the paper (not a
    parametrisation): call :meth:`constrain_` after ``optimizer.step()``, or once :meth:`constrain_after(optimizer)`
    to have it done by an optimiser step hook. Pick ``u_max`` with :func:`indrnn_max_recurrent_weight`
    (``gamma ** (1/T)``); the default 1 stops the recurrent path from amplifying gradients at all.
    ``u`` starts uniform in ``[0, min(1, u_max)]``.
    """

    def __init__(self, input_size: int, hidden_size: int, u_max: float = 1.0,
                 activation: Literal["relu", "tanh"] = "relu", bias: bool = True) -> None:
        super().__init__()
        _check_positive("IndRNNLayer", input_size=input_size, hidden_size=hidden_size)
        if not float(u_max) > 0:
            raise ValueError(f"IndRNNLayer: u_max must be > 0, got {u_max}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"IndRNNLayer: activation must be one of {_ACTIVATIONS}, got {activation!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.u_max, self.activation = float(u_max), activation
        self.input_proj = nn.Linear(input_size, hidden_size, bias=bias)  # W x + b
        self.u = nn.Parameter(torch.empty(hidden_size))
        nn.init.uniform_(self.u, 0.0, min(1.0, self.u_max))

    @torch.no_grad()
    def constrain_(self) -> None:
        """Clamp ``u`` into ``[-u_max, u_max]`` in place."""
        self.u.clamp_(-self.u_max, self.u_max)

    def constrain_after(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Run :meth:`constrain_` after every ``optimizer.step()``; returns the hook's handle (``.remove()``)."""
        return optimizer.register_step_post_hook(lambda *_: self.constrain_())

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return indrnn(x, self.input_proj.weight, self.input_proj.bias, self.u, h0, self.activation)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, u_max={self.u_max:g}, activation={self.activation!r}"


class IndRNN(nn.Module):
    """Stacked IndRNN layers; ``forward(x (B, T, D), h0=None) -> (h (B, T, H), h_T (num_layers, B, H))``.

    :meth:`constrain_` and :meth:`constrain_after` act on every layer.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2, u_max: float = 1.0,
                 activation: Literal["relu", "tanh"] = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive("IndRNN", num_layers=num_layers)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"IndRNN: dropout must be in [0, 1), got {dropout}")
        self.layers = nn.ModuleList(IndRNNLayer(input_size if i == 0 else hidden_size, hidden_size, u_max, activation)
                                    for i in range(num_layers))
        self.dropout = nn.Dropout(dropout)

    @torch.no_grad()
    def constrain_(self) -> None:
        for layer in self.layers:
            layer.constrain_()

    def constrain_after(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        return optimizer.register_step_post_hook(lambda *_: self.constrain_())

    def forward(self, x: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if h0 is not None and (h0.dim() != 3 or h0.shape[0] != len(self.layers)):
            raise ValueError(f"IndRNN: h0 must be (num_layers, B, H) with num_layers = {len(self.layers)}, got "
                             f"{tuple(h0.shape)}")
        finals = []
        for i, layer in enumerate(self.layers):
            x, h = layer(x, None if h0 is None else h0[i])
            finals.append(h)
            if i < len(self.layers) - 1:
                x = self.dropout(x)
        return x, torch.stack(finals)


# ================================================================================================ HM-LSTM
def hard_sigmoid(x: Tensor, slope: float = 1.0) -> Tensor:
    """``max(0, min(1, (slope * x + 1) / 2))`` (Chung et al. 2017, §3.3); the slope is annealed upwards in training.

    torch's ``F.hardsigmoid(y) = clamp(y / 6 + 1/2, 0, 1)`` is the same function at ``y = 3 * slope * x``.
    """
    return F.hardsigmoid(3.0 * slope * x)


def boundary_ste(pre: Tensor, slope: float = 1.0) -> Tensor:
    """The binary boundary ``z = 1[hard_sigmoid(pre) > 0.5]`` with the straight-through estimator.

    Forward: the step function. Backward: the hard sigmoid's gradient (``slope / 2`` where ``|slope * pre| < 1``,
    else 0), i.e. the step is treated as the identity on ``z~``. ``z~ + (z - z~).detach()`` is exactly z in the
    forward pass: ``z~ > 0.5`` gives ``1 - z~`` exact (Sterbenz), else ``z - z~ = -z~``.
    """
    if not float(slope) > 0:
        raise ValueError(f"boundary_ste: slope must be > 0, got {slope}")
    soft = hard_sigmoid(pre, slope)
    hard = (soft > 0.5).to(soft.dtype)
    return soft + (hard - soft).detach()


def hmlstm_slope(epoch: int, rate: float = 0.04, max_slope: float = 5.0) -> float:
    """The paper's slope annealing, ``a = min(max_slope, 1 + rate * epoch)`` (§4.1: min(5, 1 + 0.04 N_epoch))."""
    return float(min(max_slope, 1.0 + rate * epoch))


def hmlstm_ops(f: Tensor, i: Tensor, o: Tensor, g: Tensor, c_prev: Tensor, h_prev: Tensor, z_prev: Tensor,
               z_below: Tensor) -> tuple[Tensor, Tensor]:
    """COPY / UPDATE / FLUSH of the HM-LSTM (Chung et al. 2017, eqs. 2-3), for one layer and one step.

    ``z_prev`` = z_{t-1}^l (this layer's last boundary), ``z_below`` = z_t^{l-1}, both (B,) or (B, 1) in {0, 1}::

        c_t = f * c_{t-1} + i * g   UPDATE  (z_prev = 0, z_below = 1)
              c_{t-1}               COPY    (z_prev = 0, z_below = 0)
              i * g                 FLUSH   (z_prev = 1)
        h_t = h_{t-1} if COPY else o * tanh(c_t)

    Written as a sum weighted by the (straight-through) boundaries so that gradients reach z.
    """
    z_prev = z_prev.reshape(-1, 1) if z_prev.dim() == 1 else z_prev  # (B, 1) broadcasts over units
    z_below = z_below.reshape(-1, 1) if z_below.dim() == 1 else z_below
    flush = z_prev
    update = (1 - z_prev) * z_below
    copy = (1 - z_prev) * (1 - z_below)
    c = update * (f * c_prev + i * g) + copy * c_prev + flush * (i * g)
    h = copy * h_prev + (1 - copy) * (o * torch.tanh(c))
    return c, h


def hmlstm_cell(h_below: Tensor, h_prev: Tensor, c_prev: Tensor, z_prev: Tensor, z_below: Tensor,
                h_above_prev: Tensor | None, w_below: Tensor, w_recurrent: Tensor, w_above: Tensor | None,
                bias: Tensor, slope: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """One HM-LSTM layer for one step (Chung et al. 2017, eqs. 4-7).

    Pre-activations (eq. 5): ``s = U_rec h_{t-1} + z_{t-1} U_above h_{t-1}^{l+1} + z_t^{l-1} W h_t^{l-1} + b``
    (the top-down term only after this layer's boundary, the bottom-up one only after the lower layer's), shape
    (B, 4H + 1), split as ``[f; i; o; g; z~] = [sigm; sigm; sigm; tanh; hard_sigm](s)`` (eq. 4); ``z`` is the
    binarised ``z~`` (eqs. 6-7, :func:`boundary_ste`). Then :func:`hmlstm_ops`.

    Args:
        h_below: (B, Hb) h_t^{l-1} (the input x_t for the first layer, with z_below = 1).
        h_prev, c_prev: (B, H); z_prev, z_below: (B,) in {0, 1}; h_above_prev: (B, Ha) or None for the top layer.
        w_below (4H + 1, Hb), w_recurrent (4H + 1, H), w_above (4H + 1, Ha) or None, bias (4H + 1,).

    Returns:
        h_t, c_t (B, H) and z_t (B,).
    """
    who = "hmlstm_cell"
    hidden = h_prev.shape[-1]
    if w_recurrent.shape != (4 * hidden + 1, hidden) or w_below.shape[0] != 4 * hidden + 1:
        raise ValueError(f"{who}: w_recurrent must be (4H + 1, H) = {(4 * hidden + 1, hidden)} and w_below "
                         f"(4H + 1, Hb), got {tuple(w_recurrent.shape)} and {tuple(w_below.shape)}")
    if (w_above is None) != (h_above_prev is None):
        raise ValueError(f"{who}: give both w_above and h_above_prev (a layer below the top) or neither (the top)")
    s = F.linear(h_prev, w_recurrent, bias) + z_below.unsqueeze(-1) * F.linear(h_below, w_below)
    if w_above is not None:
        s = s + z_prev.unsqueeze(-1) * F.linear(h_above_prev, w_above)
    f, i, o = torch.sigmoid(s[:, :3 * hidden]).chunk(3, dim=-1)
    g = torch.tanh(s[:, 3 * hidden:4 * hidden])
    z = boundary_ste(s[:, 4 * hidden], slope)  # (B,)
    c, h = hmlstm_ops(f, i, o, g, c_prev, h_prev, z_prev, z_below)
    return h, c, z


class HMLSTMCell(nn.Module):
    """Parameters of one HM-LSTM layer; ``forward(h_below, h_prev, c_prev, z_prev, z_below, h_above_prev=None)``.

    ``above_size`` is the hidden size of the layer above (None for the top layer, which gets no top-down input).
    ``slope`` is the hard sigmoid's slope; reassign it to anneal (:func:`hmlstm_slope`).
    """

    def __init__(self, input_size: int, hidden_size: int, above_size: int | None = None, slope: float = 1.0) -> None:
        super().__init__()
        _check_positive("HMLSTMCell", input_size=input_size, hidden_size=hidden_size)
        if above_size is not None:
            _check_positive("HMLSTMCell", above_size=above_size)
        self.input_size, self.hidden_size, self.above_size, self.slope = input_size, hidden_size, above_size, slope
        n = 4 * hidden_size + 1  # f, i, o, g and the boundary pre-activation
        self.w_below = nn.Parameter(torch.empty(n, input_size))
        self.w_recurrent = nn.Parameter(torch.empty(n, hidden_size))
        self.w_above = nn.Parameter(torch.empty(n, above_size)) if above_size is not None else None
        self.bias = nn.Parameter(torch.empty(n))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, h_below: Tensor, h_prev: Tensor, c_prev: Tensor, z_prev: Tensor, z_below: Tensor,
                h_above_prev: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return hmlstm_cell(h_below, h_prev, c_prev, z_prev, z_below, h_above_prev, self.w_below, self.w_recurrent,
                           self.w_above, self.bias, self.slope)


class HMLSTM(nn.Module):
    """Hierarchical multiscale LSTM; ``forward(x (B, T, D)) -> (hidden, boundaries)``.

    ``hidden`` is a tuple of per-layer hidden states ``(B, T, H_l)``; ``boundaries`` is ``(B, T, L)`` in {0, 1}
    (z_t^l). All states start at 0 and z_0^l = 0, so the first step is an UPDATE of layer 1. The first layer's
    "boundary below" is always 1 (every input is a new token). Layers are computed bottom-up at each step, reading
    the top-down state of step t - 1.

    ``slope`` sets every layer's hard-sigmoid slope (settable later through :attr:`slope`).
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], slope: float = 1.0) -> None:
        super().__init__()
        sizes = tuple(hidden_sizes)
        if not sizes:
            raise ValueError("HMLSTM: hidden_sizes must name at least one layer, e.g. (64, 64)")
        _check_positive("HMLSTM", input_size=input_size, **{f"hidden_sizes[{i}]": h for i, h in enumerate(sizes)})
        self.hidden_sizes = sizes
        self.cells = nn.ModuleList(
            HMLSTMCell(input_size if i == 0 else sizes[i - 1], h, sizes[i + 1] if i + 1 < len(sizes) else None, slope)
            for i, h in enumerate(sizes))

    @property
    def slope(self) -> float:
        return float(self.cells[0].slope)

    @slope.setter
    def slope(self, value: float) -> None:
        if not float(value) > 0:
            raise ValueError(f"HMLSTM: slope must be > 0, got {value}")
        for cell in self.cells:
            cell.slope = float(value)

    def forward(self, x: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        _check_float("HMLSTM", "x", x, (3,))
        if x.shape[-1] != self.cells[0].input_size:
            raise ValueError(f"HMLSTM: expected x of shape (B, T, {self.cells[0].input_size}), got {tuple(x.shape)}")
        b, length = x.shape[0], x.shape[1]
        h = [x.new_zeros(b, n) for n in self.hidden_sizes]
        c = [x.new_zeros(b, n) for n in self.hidden_sizes]
        z = [x.new_zeros(b) for _ in self.hidden_sizes]
        ones = x.new_ones(b)
        hs: list[list[Tensor]] = [[] for _ in self.hidden_sizes]
        zs: list[Tensor] = []
        for t in range(length):
            below, z_below = x[:, t], ones
            h_old = list(h)  # top-down input is h_{t-1}^{l+1}
            for layer, cell in enumerate(self.cells):
                above = h_old[layer + 1] if layer + 1 < len(self.cells) else None
                h[layer], c[layer], z[layer] = cell(below, h[layer], c[layer], z[layer], z_below, above)
                hs[layer].append(h[layer])
                below, z_below = h[layer], z[layer]
            zs.append(torch.stack(z, dim=-1))  # (B, L)
        return tuple(torch.stack(seq, dim=1) for seq in hs), torch.stack(zs, dim=1)


# ================================================================================================ specs
def _attn_example(query_size: int) -> object:
    def example(g: torch.Generator) -> tuple[Tensor, ...]:
        query = torch.randn(2, query_size, generator=g)
        keys = torch.randn(2, 5, 8, generator=g)
        mask = torch.tensor([[False, False, False, True, True], [False] * 5])  # row 0: 3 real tokens, 2 padding
        return query, keys, mask
    return example


def _seq(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(2, 6, 4, generator=g),)


def _hmlstm_cell_example(g: torch.Generator) -> tuple[Tensor, ...]:
    return (torch.randn(3, 4, generator=g), torch.randn(3, 8, generator=g), torch.randn(3, 8, generator=g),
            torch.tensor([0.0, 1.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]), torch.randn(3, 6, generator=g))


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("lstm", "recurrent", lambda: nn.LSTM(4, 8, batch_first=True), _seq,
              "torch's nn.LSTM, batch first (Hochreiter & Schmidhuber 1997)"),
    LayerSpec("gru", "recurrent", lambda: nn.GRU(4, 8, batch_first=True), _seq,
              "torch's nn.GRU, batch first (Cho et al. 2014)"),
    LayerSpec("additive_attention", "recurrent", lambda: AdditiveAttention(6, 8, 7), _attn_example(6),
              "Bahdanau attention v^T tanh(W s + U h), padding mask (Bahdanau, Cho & Bengio 2015)",
              grad_inputs=(0, 1)),
    LayerSpec("luong_attention_dot", "recurrent", lambda: LuongAttention(8, 8, "dot"), _attn_example(8),
              "Luong dot attention s^T h (Luong, Pham & Manning 2015)", grad_inputs=(0, 1)),
    LayerSpec("luong_attention_general", "recurrent", lambda: LuongAttention(6, 8, "general"), _attn_example(6),
              "Luong general attention s^T W h (Luong, Pham & Manning 2015)", grad_inputs=(0, 1)),
    LayerSpec("luong_attention_concat", "recurrent", lambda: LuongAttention(6, 8, "concat", 7), _attn_example(6),
              "Luong concat attention v^T tanh(W [s; h]) (Luong, Pham & Manning 2015)", grad_inputs=(0, 1)),
    LayerSpec("qrnn_layer", "recurrent", lambda: QRNNLayer(4, 8, window=2), _seq,
              "QRNN layer: causal conv gates + fo-pooling by parallel scan (Bradbury et al. 2017)"),
    LayerSpec("qrnn", "recurrent", lambda: QRNN(4, 8, num_layers=2), _seq, "stacked QRNN layers"),
    LayerSpec("indrnn_layer", "recurrent", lambda: IndRNNLayer(4, 8), _seq,
              "IndRNN layer relu(W x_t + u * h_{t-1} + b), |u| <= u_max (Li et al. 2018)"),
    LayerSpec("indrnn", "recurrent", lambda: IndRNN(4, 8, num_layers=2), _seq, "stacked IndRNN layers"),
    LayerSpec("hmlstm_cell", "recurrent", lambda: HMLSTMCell(4, 8, above_size=6), _hmlstm_cell_example,
              "one HM-LSTM layer step: COPY/UPDATE/FLUSH with a straight-through boundary (Chung et al. 2017)",
              grad_inputs=(0, 1, 2, 5)),
    LayerSpec("hmlstm", "recurrent", lambda: HMLSTM(4, (8, 6)), _seq,
              "hierarchical multiscale LSTM: per-layer states and boundaries (Chung, Ahn & Bengio 2017)"),
)

__all__ = [
    "LAYER_SPECS",
    "AdditiveAttention",
    "HMLSTM",
    "HMLSTMCell",
    "IndRNN",
    "IndRNNLayer",
    "LuongAttention",
    "QRNN",
    "QRNNLayer",
    "additive_attention",
    "boundary_ste",
    "hard_sigmoid",
    "hmlstm_cell",
    "hmlstm_ops",
    "hmlstm_slope",
    "indrnn",
    "indrnn_max_recurrent_weight",
    "multiplicative_attention",
    "qrnn_fo_pool",
]
