"""Int8 quantization of linear and convolution layers: static (calibrated), quantization-aware training (QAT)
and dynamic (torchao).

The scheme (Jacob et al., "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
Inference", CVPR 2018, eq. 1 ``r = S (q - Z)``; Krishnamoorthi, arXiv:1806.08342):

* weights: symmetric, per output channel, int8 in [-127, 127]: ``S_w[c] = max |W[c]| / 127``, ``Z_w = 0``;
* the input of every quantized layer: affine, per tensor, uint8 in [0, 255]: from the observed range
  ``[min(a, 0), max(b, 0)]``, ``S_x = (b - a) / 255`` and ``Z_x = round(-a / S_x)`` (zero exactly representable);
* biases, normalisation layers and everything between quantized layers stay float32.

``fake_quant(r) = S (clamp(round(r / S) + Z, q_min, q_max) - Z)`` simulates the rounding in float; its gradient
is the straight-through estimator (1 inside the clamp range, 0 outside; Bengio et al. 2013), torch's
``fake_quantize_per_*_affine``.

* :func:`prepare` wraps every ``nn.Linear`` / ``nn.Conv{1,2,3}d`` in a :class:`FakeQuant` layer (the original
  layer and its parameters inside, so an optimizer built before keeps working) with a range observer on its
  input: min/max over the calibration batches (static), or an exponential moving average during training (QAT).
* :func:`convert` replaces each by an :class:`Int8Layer` that stores int8 weights (a quarter of the bytes) and the
  input's scale and zero point, and computes ``op(S_x (q_x - Z_x), S_w q_w) + b``: the arithmetic of the fake
  quantized forward, with the integers stored. On this CPU the product runs in float32 on the dequantized
  values (a reference kernel: the size falls, the speed does not); int8 kernels come from ONNX Runtime or
  torchao (:func:`quantize_dynamic`).
* :func:`quantize_static` = prepare, calibrate, convert.

A layer with parameters that is neither quantized nor a normalisation layer (an LSTM, an embedding, attention)
is refused by name, with the fix (``skip=[name]`` keeps it float).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError, UserError

__all__ = ["QUANTIZED", "FakeQuant", "Int8Layer", "prepare", "calibrate", "convert", "quantize_static",
           "quantize_dynamic", "quantizable_layers", "fake_quantize_input", "weight_scale", "input_qparams"]

#: layer types quantized to int8
QUANTIZED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# layers with parameters that may stay float next to int8 layers (cheap, per-channel affine maps)
_FLOAT_OK: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.PReLU)
Q_MIN, Q_MAX = 0, 255  # activations (uint8)
W_MAX = 127  # weights (symmetric int8)
_CONV_FN = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}


def weight_scale(w: torch.Tensor) -> torch.Tensor:
    """S_w per output channel: max |W[c]| / 127, (C_out,) float32 (a tiny floor keeps an all-zero channel valid)."""
    return (w.detach().abs().flatten(1).amax(1) / W_MAX).clamp_min(1e-12).float()


def input_qparams(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S_x, Z_x) of an observed range [lo, hi], widened to contain 0 so that 0 is exact (uint8)."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = ((hi - lo) / (Q_MAX - Q_MIN)).clamp_min(1e-8).float()
    zero = torch.clamp(torch.round(Q_MIN - lo / scale), Q_MIN, Q_MAX).to(torch.int32)
    return scale, zero


def fake_quantize_input(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """S (clamp(round(x / S) + Z, 0, 255) - Z), straight-through gradient inside the range."""
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, Q_MIN, Q_MAX)


def _fake_quantize_weight(w: torch.Tensor) -> torch.Tensor:
    scale = weight_scale(w)
    return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0,
                                                  -W_MAX, W_MAX)


def _apply(layer: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(x, w, b)
    return layer._conv_forward(x, w, b)  # type: ignore[operator]  # stride, padding, dilation, groups, mode


class FakeQuant(nn.Module):
    """A linear/conv layer with fake-quantized input and weights and an observer of its input range.

    ``mode``: ``"minmax"`` (running min/max, for calibration) or ``"ema"`` (moving average with ``momentum``, for
    QAT). ``observing`` / ``quantizing`` switch the observer and the fake quantization (both on by default)."""

    def __init__(self, layer: nn.Module, mode: str = "ema", momentum: float = 0.01) -> None:
        super().__init__()
        if mode not in ("minmax", "ema"):
            raise ConfigError(f"observer mode must be 'minmax' or 'ema', got {mode!r}")
        self.layer, self.mode, self.momentum = layer, mode, float(momentum)
        self.observing, self.quantizing = True, True
        self.register_buffer("input_min", torch.tensor(float("inf")))
        self.register_buffer("input_max", torch.tensor(float("-inf")))

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        lo, hi = x.detach().min().float(), x.detach().max().float()
        if not torch.isfinite(self.input_min):  # the first batch sets the range
            self.input_min.copy_(lo)
            self.input_max.copy_(hi)
        elif self.mode == "minmax":
            self.input_min.copy_(torch.minimum(self.input_min, lo))
            self.input_max.copy_(torch.maximum(self.input_max, hi))
        else:
            self.input_min.lerp_(lo, self.momentum)
            self.input_max.lerp_(hi, self.momentum)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.isfinite(self.input_min):
            raise UserError("a FakeQuant layer has observed no input yet: calibrate (run batches through the "
                            "prepared model) or train it before using or converting it")
        return input_qparams(self.input_min, self.input_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # observe in training (QAT) and while calibrating (observing on, quantizing off), never on frozen eval
        if self.observing and (self.training or not self.quantizing):
            self._observe(x)
        if not self.quantizing:
            return self.layer(x)
        scale, zero = self.qparams()
        return _apply(self.layer, fake_quantize_input(x, scale, zero), _fake_quantize_weight(self.layer.weight),
                      self.layer.bias)


class Int8Layer(nn.Module):
    """A converted layer: int8 weights ``weight_q`` (a frozen parameter) with per-channel ``weight_scale``, the
    input's ``input_scale`` and ``input_zero_point``, a float bias; the layer's configuration (stride, padding,
    ...) from the original."""

    def __init__(self, fake: FakeQuant) -> None:
        super().__init__()
        layer = fake.layer
        w = layer.weight.detach()
        scale = weight_scale(w)
        shape = (-1,) + (1,) * (w.dim() - 1)
        # a frozen int8 Parameter (not a buffer), the bias a frozen float one: they still count as the model's
        # parameters (the lab's ``parameters`` and ``nonzero_parameters``); the same keys and bytes on disk
        q = torch.clamp(torch.round(w / scale.view(shape)), -W_MAX, W_MAX).to(torch.int8)
        self.weight_q = nn.Parameter(q, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        s, z = fake.qparams()
        self.register_buffer("input_scale", s.clone())
        self.register_buffer("input_zero_point", z.clone())
        self.register_parameter("bias", None if layer.bias is None else
                                nn.Parameter(layer.bias.detach().clone(), requires_grad=False))  # float, frozen
        # the original layer without its parameters keeps the configuration (and _conv_forward)
        self.config = copy.copy(layer)
        self.config._parameters = {}
        self.kind = type(layer).__name__

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """q_x = clamp(round(x / S_x) + Z_x, 0, 255), as uint8."""
        q = torch.round(x * (1.0 / self.input_scale)) + self.input_zero_point
        return q.clamp(Q_MIN, Q_MAX).to(torch.uint8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantize_input(x)
        x_hat = (q.float() - self.input_zero_point) * self.input_scale  # S_x (q_x - Z_x)
        shape = (-1,) + (1,) * (self.weight_q.dim() - 1)
        w_hat = self.weight_q.float() * self.weight_scale.view(shape)  # S_w q_w
        return _apply(self.config, x_hat, w_hat, self.bias)

    def extra_repr(self) -> str:
        return f"{self.kind}, weight {tuple(self.weight_q.shape)} int8"


def quantizable_layers(model: nn.Module, skip: Iterable[str] = ()) -> list[str]:
    """Names of the layers :func:`prepare` wraps; raises UserError naming a layer that cannot be quantized."""
    skip = set(skip)
    names = []
    for name, m in model.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(m, QUANTIZED):
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.padding_mode != "zeros":
                raise UserError(f"layer {name!r} ({type(m).__name__}) cannot be quantized: padding_mode "
                                f"{m.padding_mode!r} (only 'zeros'); pass skip=[{name!r}] to keep it float")
            names.append(name)
        elif isinstance(m, _FLOAT_OK) or isinstance(m, (FakeQuant, Int8Layer)):
            continue
        elif any(True for _ in m.parameters(recurse=False)):
            raise UserError(f"layer {name!r} ({type(m).__name__}) cannot be quantized: int8 covers nn.Linear and "
                            f"nn.Conv1d/2d/3d (normalisation layers stay float); pass skip=[{name!r}] to keep it "
                            f"float")
    if not names:
        raise UserError(f"{type(model).__name__} has no linear or convolution layer to quantize")
    return names


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    if not name:
        return new
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)
    return model


def prepare(model: nn.Module, mode: str = "ema", skip: Sequence[str] = (), inplace: bool = False) -> nn.Module:
    """Wrap every quantizable layer in :class:`FakeQuant` (``mode="ema"`` for QAT, ``"minmax"`` to calibrate)."""
    names = quantizable_layers(model, skip)
    out = model if inplace else copy.deepcopy(model)
    for name in names:
        out = _replace(out, name, FakeQuant(out.get_submodule(name) if name else out, mode=mode))
    return out


@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable[Any]) -> nn.Module:
    """Observe the input ranges on ``batches`` (inputs, or (inputs, targets) pairs) in evaluation mode, then
    switch the fake quantization on. Returns ``prepared``."""
    fakes = [m for m in prepared.modules() if isinstance(m, FakeQuant)]
    was_training = prepared.training
    prepared.eval()
    for m in fakes:
        m.quantizing = False
    seen = 0
    for batch in batches:
        prepared(batch[0] if isinstance(batch, (tuple, list)) else batch)
        seen += 1
    for m in fakes:
        m.quantizing = True
    prepared.train(was_training)
    if not seen:
        raise UserError("calibration needs at least one batch of inputs")
    return prepared


@torch.no_grad()
def convert(prepared: nn.Module, inplace: bool = False) -> nn.Module:
    """A copy of a prepared (calibrated or QAT-trained) model with every FakeQuant layer replaced by an
    :class:`Int8Layer`, in evaluation mode; ``inplace=True`` replaces them in ``prepared`` itself (a model that
    is itself one FakeQuant layer is still returned as a new module)."""
    out = prepared if inplace else copy.deepcopy(prepared)
    names = [n for n, m in out.named_modules() if isinstance(m, FakeQuant)]
    if not names:
        raise UserError("convert expects a model returned by prepare() (no FakeQuant layer found)")
    for name in names:
        out = _replace(out, name, Int8Layer(out.get_submodule(name) if name else out))
    return out.eval()


def quantize_static(model: nn.Module, batches: Iterable[Any], skip: Sequence[str] = ()) -> nn.Module:
    """Post-training static int8: prepare with min/max observers, calibrate on ``batches``, convert."""
    return convert(calibrate(prepare(model, mode="minmax", skip=skip), batches))


def quantize_dynamic(model: nn.Module) -> nn.Module:
    """Post-training dynamic int8 with torchao (``Int8DynamicActivationInt8WeightConfig``): int8 weights, the
    activations quantized per token at run time. torchao quantizes ``nn.Linear`` layers only; convolutions stay
    float32. Returns a quantized copy in evaluation mode."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError:
        raise UserError("dynamic int8 quantization needs torchao: pip install 'tricklab[quant]'") from None
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise UserError(f"{type(model).__name__} has no nn.Linear layer: torchao's dynamic int8 quantizes linear "
                        f"layers only (use quantize_static for convolutions)")
    out = copy.deepcopy(model).eval()
    quantize_(out, Int8DynamicActivationInt8WeightConfig())
    return out
