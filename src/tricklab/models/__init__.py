"""Reference architectures for the first tasks, behind one registry.

Every model is built by a factory ``factory(input_shape, num_classes, **kwargs) -> nn.Module`` registered in
:data:`MODELS`. ``input_shape`` is the shape of one example without the batch dimension, e.g. ``(40,)`` or
``(1, 40)`` for MNIST-1D and ``(1, 28, 28)`` for Fashion-MNIST. Use :func:`build_model` rather than calling
factories directly: it validates the keyword arguments against the factory's signature and answers a typo
with a :class:`~tricklab.errors.ConfigError` that lists the accepted arguments.

Registered models (see ``docs/models.md``):

* ``mlp``      - the MNIST-1D paper's 3-layer MLP (Greydanus 2020).
* ``cnn``      - the MNIST-1D paper's 3-conv ConvNet (Greydanus 2020).
* ``resnet1d`` - a small 1-D ResNet with basic blocks and BatchNorm (He et al. 2016, in 1-D).
* ``cnn2d``    - a small 2-block CNN for Fashion-MNIST (1x28x28) and sklearn digits (1x8x8).
* ``plain_mlp`` - a deep plain MLP (no norm, no skip) to study initialisation (depth 30 by default).
* ``resnet2d`` - a small 2-D ResNet (He et al. 2016) for 1x28x28 / 1x8x8, optional DropBlock and stochastic depth.
* ``gpt``, ``lstm_lm``, ``mamba_lm``, ``hybrid_lm``, ``bert``, ``bert_classifier`` - sequence models on int64 token ids
  (docs/models-sequence.md).
* ``seq2seq_rnn`` - GRU/LSTM encoder-decoder with Bahdanau/Luong attention (models/seq2seq.py).
* ``gcn``, ``gat``, ``graphsage``, ``gcn_graph``, ``gated_gnn`` - graph networks on a ``Graph`` (models/gnn.py).

Importing this package imports torch and nothing optional.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from tricklab.errors import ConfigError
from tricklab.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


# ---------------------------------------------------------------------------------------------------------
# Small helpers shared by the model modules (defined before those modules are imported below).
# ---------------------------------------------------------------------------------------------------------


def as_shape(input_shape: Sequence[int] | int, *, model: str, ndim: tuple[int, ...]) -> tuple[int, ...]:
    """Return ``input_shape`` as a tuple of positive ints with a length in ``ndim``, else raise ConfigError."""
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"model {model!r}: input_shape must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) not in ndim or any(d <= 0 for d in shape):
        lengths = " or ".join(str(n) for n in ndim)
        raise ConfigError(
            f"model {model!r}: input_shape must have {lengths} positive dimensions "
            f"(one example, no batch dimension), got {shape}"
        )
    return shape


def as_int_tuple(values: Sequence[int] | int, *, model: str, name: str, what: str) -> tuple[int, ...]:
    """``values`` (one int or a list of ints, e.g. stage widths) as a non-empty tuple of positive ints, else
    ConfigError naming the model and the argument; ``what`` names one item in the message ("stage")."""
    if isinstance(values, int):
        values = (values,)
    try:
        out = tuple(values)
    except TypeError:
        raise ConfigError(f"model {model!r}: {name} must be a list of ints, got {values!r}") from None
    if not out:
        raise ConfigError(f"model {model!r}: {name} must name at least one {what}")
    for v in out:
        check_positive(model, **{name: v})
    return out


def check_positive(model: str, **values: int) -> None:
    """Raise ConfigError unless every given value is an int >= 1."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model {model!r}: {name} must be a positive int, got {value!r}")


def count_parameters(model: nn.Module, *, trainable_only: bool = True) -> int:
    """Number of (trainable) scalar parameters in ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _describe_signature(name: str, factory: Callable[..., Any]) -> str:
    params = list(inspect.signature(factory).parameters.values())
    parts = []
    for p in params[2:]:  # skip input_shape, num_classes
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
        elif p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
        elif p.default is p.empty:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={p.default!r}")
    return f"model {name!r} accepts: {', '.join(parts) if parts else '(no keyword arguments)'}"


def accepted_arguments(name: str) -> dict[str, Any]:
    """The keyword arguments that model ``name`` accepts, mapped to their defaults (``inspect._empty`` if none)."""
    factory = MODELS.get(name)
    params = list(inspect.signature(factory).parameters.values())[2:]
    return {p.name: p.default for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build registered model ``name`` for examples of shape ``input_shape`` and ``num_classes`` outputs.

    Raises :class:`~tricklab.errors.UnknownNameError` (with a suggestion) for an unknown name and
    :class:`~tricklab.errors.ConfigError` (listing the accepted arguments) for unexpected or missing keyword
    arguments or invalid values.
    """
    factory = MODELS.get(name)
    try:
        # Bind first, so that only signature mismatches (not TypeErrors raised inside the factory) are caught.
        inspect.signature(factory).bind(input_shape, num_classes, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}; {_describe_signature(name, factory)}") from None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be a positive int, got {num_classes!r}")
    return factory(input_shape, num_classes, **kwargs)


def describe_models() -> dict[str, str]:
    """Registered model names mapped to their one-line summaries."""
    return {n: MODELS.summary(n) for n in MODELS.names()}


# Importing the model modules registers them.
from tricklab.models import cnn1d, cnn2d, plain_mlp, resnet1d, resnet2d  # noqa: E402
from tricklab.models import gnn  # noqa: E402  (gcn, gat, graphsage, gcn_graph, gated_gnn)
from tricklab.models import bert, gpt, seq_lm  # noqa: E402  (gpt, lstm_lm, mamba_lm, bert, bert_classifier)
from tricklab.models import seq2seq  # noqa: E402  (seq2seq_rnn)

__all__ = [
    "MODELS",
    "accepted_arguments",
    "bert",
    "build_model",
    "cnn1d",
    "cnn2d",
    "count_parameters",
    "describe_models",
    "gnn",
    "gpt",
    "plain_mlp",
    "resnet1d",
    "resnet2d",
    "seq2seq",
    "seq_lm",
]
