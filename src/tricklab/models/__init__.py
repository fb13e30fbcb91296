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



def _check_factory(name: str, obj: Any) -> Any:
    """A model from outside tricklab (a ``module:attribute`` reference or a plugin) must be callable."""
    if not callable(obj):
        raise ConfigError(f"model {name!r} is a {type(obj).__name__}, not a factory: name a function or an "
                          f"nn.Module class, called as factory(input_shape, num_classes, **model.args) or "
                          f"factory(**model.args)")
    return obj


MODELS: Registry[Callable[..., nn.Module]] = Registry("model", check=_check_factory)


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


_GIVEN = ("input_shape", "num_classes")


def _call_style(factory: Callable[..., Any]) -> str:
    """How a factory gets the data's shape and output count: ``"keywords"`` when it names parameters
    ``input_shape`` / ``num_classes`` (every registered factory does), ``"positional"`` when it takes two or
    more required positional parameters (``(input_shape, num_classes)``), else ``"none"`` (it is called with
    ``model.args`` only, e.g. an nn.Module class whose constructor takes its sizes as keywords)."""
    params = inspect.signature(factory).parameters.values()
    if any(p.name in _GIVEN and p.kind is not p.POSITIONAL_ONLY for p in params):
        return "keywords"
    required = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    return "positional" if len(required) >= 2 else "none"


def _given(factory: Callable[..., Any], input_shape: Any, num_classes: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The (args, kwargs) that carry the shape and output count to ``factory`` (see :func:`_call_style`)."""
    style = _call_style(factory)
    if style == "positional":
        return (input_shape, num_classes), {}
    if style == "keywords":
        names = inspect.signature(factory).parameters
        return (), {k: v for k, v in zip(_GIVEN, (input_shape, num_classes)) if k in names}
    return (), {}


def _user_parameters(factory: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters ``model.args`` may set: all but the shape and the output count."""
    params = list(inspect.signature(factory).parameters.values())
    style = _call_style(factory)
    if style == "positional":
        return params[2:]
    return [p for p in params if p.name not in _GIVEN] if style == "keywords" else params


def _describe_signature(name: str, factory: Callable[..., Any]) -> str:
    parts = []
    for p in _user_parameters(factory):
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
    return {p.name: p.default for p in _user_parameters(factory) if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def check_model_arguments(name: str, kwargs: dict[str, Any]) -> Callable[..., nn.Module]:
    """The factory of model ``name`` (registered, a plugin or ``module:attribute``), with ``kwargs`` checked
    against its signature before anything is built; a mismatch is a ConfigError listing what it accepts."""
    factory = MODELS.get(name)
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return factory  # a builtin or C callable without a signature: checked when called
    try:
        # Bind first, so that only signature mismatches (not TypeErrors raised inside the factory) are caught.
        args, given = _given(factory, (1,), 1)
        sig.bind(*args, **given, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}; {_describe_signature(name, factory)}") from None
    return factory


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` for examples of shape ``input_shape`` and ``num_classes`` outputs.

    ``name`` is a registered name, an installed plugin's name or a ``module:attribute`` reference to a
    factory of the user's (see :mod:`tricklab.plugins`), called as ``factory(input_shape=...,
    num_classes=..., **kwargs)`` with those of the two it names, else ``factory(input_shape, num_classes,
    **kwargs)`` when it takes two required positional parameters, else ``factory(**kwargs)``.

    Raises :class:`~tricklab.errors.UnknownNameError` (with a suggestion) for an unknown name and
    :class:`~tricklab.errors.ConfigError` (listing the accepted arguments) for unexpected or missing keyword
    arguments, invalid values, or a factory that returns something other than an ``nn.Module``.
    """
    factory = check_model_arguments(name, kwargs)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be a positive int, got {num_classes!r}")
    args, given = _given(factory, input_shape, num_classes)
    model = factory(*args, **given, **kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module; a model "
                          f"factory must return the network to train")
    return model


def describe_models() -> dict[str, str]:
    """Registered model names mapped to their one-line summaries."""
    return {n: MODELS.summary(n) for n in MODELS.names()}


# Importing the model modules registers them.
from tricklab.models import cnn1d, cnn2d, plain_mlp, resnet1d, resnet2d  # noqa: E402
from tricklab.models import gnn  # noqa: E402  (gcn, gat, graphsage, gcn_graph, gated_gnn)
from tricklab.models import bert, gpt, seq_lm  # noqa: E402  (gpt, lstm_lm, mamba_lm, bert, bert_classifier)
from tricklab.models import seq2seq  # noqa: E402  (seq2seq_rnn)
from tricklab.models import vision  # noqa: E402  (resnet, mobilenetv2, xception, convnext, vit, swin, hybrid)

__all__ = [
    "MODELS",
    "accepted_arguments",
    "bert",
    "build_model",
    "check_model_arguments",
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
    "vision",
]
