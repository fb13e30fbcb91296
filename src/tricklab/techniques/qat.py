"""Quantization-aware training (QAT) as a technique: train with fake-quantized int8 layers, end with the int8 model.

At ``fit_start`` every linear / convolution layer of the model is wrapped, in place, in
``tricklab.compress.quantize.FakeQuant`` (the same parameter objects inside, so the optimizer built before keeps
training them): during training each such layer computes ``op(fq(x), fq(W)) + b`` with

    fq(r) = S (clamp(round(r / S) + Z, q_min, q_max) - Z)

(Jacob et al. 2018, eq. 1; weights symmetric per output channel in [-127, 127], the layer's input affine per
tensor in [0, 255] from an exponential moving average of its observed range), and the gradient passes straight
through the rounding (1 inside the clamp range, 0 outside; Bengio et al. 2013). The network learns weights that
survive the rounding. At ``fit_end`` (``convert=True``) each FakeQuant layer is replaced, in place, by an
``Int8Layer`` holding int8 weights and the input's scale and zero point: the model evaluated and saved after
training is the int8 model, whose outputs equal the fake-quantized forward within one quantization step.

The observers' ranges are model buffers (``input_min``, ``input_max``): checkpoints hold them and an
interrupted run resumes exactly. The final checkpoint is written before the conversion (``after``
checkpointing), so it holds the trainable fake-quant model.
"""

from __future__ import annotations

from typing import ClassVar

from tricklab.compress.quantize import FakeQuant, prepare, quantizable_layers
from tricklab.compress.quantize import convert as convert_to_int8
from tricklab.errors import ConfigError
from tricklab.techniques.registry import register_technique
from tricklab.train.state import TrainState
from tricklab.train.technique import Technique


@register_technique
class QAT(Technique):
    """Quantization-aware training: fake-quantized int8 linear/conv layers in training, the int8 model at the end."""

    name: ClassVar[str] = "qat"
    # model.structure: the layers are wrapped at fit_start and replaced by int8 layers at fit_end; norm_stats: the
    # observers' range buffers are added with the wrappers; params: the converted model's parameters are the
    # int8 weights (the float ones leave the model)
    writes = frozenset({"model.structure", "norm_stats", "params"})
    # the final checkpoint must hold the model training can resume (fake quant), not the converted one; the
    # data flow cannot say it (checkpointing declares no slot)
    after: ClassVar[frozenset[str]] = frozenset({"checkpointing"})

    def __init__(self, momentum: float = 0.01, skip: list[str] | tuple[str, ...] = (), convert: bool = True) -> None:
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 < momentum <= 1.0:
            raise ConfigError(f"qat momentum (of the observers' moving average) must be in (0, 1], got {momentum!r}")
        if isinstance(skip, str):
            skip = [skip]
        if not isinstance(convert, bool):
            raise ConfigError(f"qat convert must be true or false, got {convert!r}")
        self.momentum, self.skip, self.convert = float(momentum), tuple(skip), convert

    def on_fit_start(self, state: TrainState) -> None:
        model = state.raw_model
        if any(isinstance(m, FakeQuant) for m in model.modules()):
            return  # prepared already (a second fit on the same model)
        if "" in quantizable_layers(model, self.skip):
            raise ConfigError(f"qat wraps the layers of a model in place; the model is itself one "
                              f"{type(model).__name__} layer: wrap it in nn.Sequential(...)")
        prepare(model, mode="ema", skip=self.skip, inplace=True)
        for m in model.modules():
            if isinstance(m, FakeQuant):
                m.momentum = self.momentum

    def on_fit_end(self, state: TrainState) -> None:
        model = state.raw_model
        if self.convert and any(isinstance(m, FakeQuant) for m in model.modules()):
            training = model.training
            convert_to_int8(model, inplace=True)
            model.train(training)  # convert sets evaluation mode; the mode stays the trainer's to set
