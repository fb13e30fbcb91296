"""Receptive-field calculator for chains of convolution and pooling layers (1-D and 2-D).

For each layer, per spatial axis, with kernel k, stride s, padding p (left side) and dilation d, the effective
kernel is k_e = d*(k-1) + 1 and (Araujo, Norris & Sim 2019, "Computing Receptive Fields of Convolutional Neural
Networks", Distill; Dumoulin & Visin 2016):

    j_out     = j_in * s                            (distance in input pixels between adjacent output units)
    r_out     = r_in + (k_e - 1) * j_in             (receptive-field size in input pixels)
    start_out = start_in + ((k_e - 1)/2 - p) * j_in (centre of output unit 0's field, input pixel coordinates)

starting from j = 1, r = 1, start = 0 at the input. Output unit u's field is centred at start + u*j and covers
[start + u*j - (r-1)/2, start + u*j + (r-1)/2]. For a unit whose field lies inside the input this is exactly the
span of the input positions it depends on (dilation can leave holes inside the span). Near the border the part in
the padding reads zeros, and zero padding of *intermediate* maps can shrink the true dependence further, so there
the field clipped to the input is an upper bound.

The layers are found by running one forward pass on zeros with forward hooks on every leaf module, so the order
is the execution order. The model must be a chain (each layer consumes the previous layer's map); residual or
multi-branch models need the field of each path computed separately. Point-wise layers (activations, dropout,
identity, batch/group norm) leave the field unchanged; normalisation statistics are treated as constants, as is
usual for receptive fields.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import torch
from torch import Tensor, nn

_POINTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softsign, nn.Tanhshrink,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm,
)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class LayerRF:
    """Receptive field after one layer, one entry per spatial axis (length 1 for 1-D, (h, w) for 2-D).

    Attributes:
        name: the layer's qualified name in the model (``"features.3"``).
        kind: the layer's class name.
        kernel, stride, padding, dilation: the layer's geometry per axis (padding = left/top side).
        size: receptive-field size r in input pixels.
        jump: input-pixel distance j between neighbouring output units.
        start: centre of output unit 0's field in input pixel coordinates (may be negative or half-integer).
        output_shape: spatial shape of the layer's output.
    """

    name: str
    kind: str
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    size: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[float, ...]
    output_shape: tuple[int, ...]

    def center(self, index: Sequence[int]) -> tuple[float, ...]:
        """Centre of output unit ``index``'s field: start + index * jump, per axis."""
        self._check_index(index)
        return tuple(s + i * j for s, i, j in zip(self.start, index, self.jump))

    def region(self, index: Sequence[int]) -> tuple[tuple[float, float], ...]:
        """Inclusive input interval [centre - (r-1)/2, centre + (r-1)/2] per axis, not clipped to the input."""
        return tuple((c - (r - 1) / 2, c + (r - 1) / 2) for c, r in zip(self.center(index), self.size))

    def _check_index(self, index: Sequence[int]) -> None:
        if len(index) != len(self.size):
            raise ValueError(f"index {tuple(index)} must have one entry per spatial axis ({len(self.size)})")


def _tuple(v: int | str | Sequence[int], n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    out = tuple(v)
    return out * n if len(out) == 1 else out


def _geometry(module: nn.Module, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]) -> tuple[
        tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(kernel, stride, padding, dilation) of a spatial layer; None for a point-wise one; raises otherwise."""
    n = len(in_spatial)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        k, s, d = _tuple(module.kernel_size, n), _tuple(module.stride, n), _tuple(module.dilation, n)
        if isinstance(module.padding, str):
            # 'valid' = 0; 'same' pads d*(k-1) in total with the smaller half on the left (as F.conv does)
            p = tuple(0 if module.padding == "valid" else di * (ki - 1) // 2 for ki, di in zip(k, d))
        else:
            p = _tuple(module.padding, n)
        return k, s, p, d
    if isinstance(module, _POOLS):
        k = _tuple(module.kernel_size, n)
        s = _tuple(module.stride if module.stride is not None else module.kernel_size, n)
        p = _tuple(module.padding, n)
        d = _tuple(getattr(module, "dilation", 1), n)
        return k, s, p, d
    if isinstance(module, _ADAPTIVE):
        # adaptive pooling is a regular pool only when every bin has the same width: k = s = in / out
        if any(i % o for i, o in zip(in_spatial, out_spatial)):
            raise ValueError(f"{type(module).__name__} maps {in_spatial} to {out_spatial}, which is not a whole "
                             f"factor, so its bins differ in width and no single receptive field applies")
        k = tuple(i // o for i, o in zip(in_spatial, out_spatial))
        return k, k, (0,) * n, (1,) * n
    if isinstance(module, _POINTWISE):
        if out_spatial != in_spatial:
            raise ValueError(f"{type(module).__name__} changed the spatial shape {in_spatial} -> {out_spatial}")
        return None
    raise ValueError(
        f"receptive_field: don't know the geometry of {type(module).__name__}; it handles Conv1d/2d, "
        f"Max/AvgPool1d/2d, whole-factor adaptive pools and point-wise layers. Declare a layer that acts on each "
        f"position separately with pointwise=({type(module).__name__},); layers that mix all positions (attention, "
        f"squeeze-excite, Linear over space) have no finite receptive field")


def receptive_field(model: nn.Module, input_shape: Sequence[int],
                    pointwise: tuple[type[nn.Module], ...] = ()) -> list[LayerRF]:
    """Receptive field after every conv / pool layer of ``model``, in execution order.

    Args:
        model: a chain of layers (``nn.Sequential`` or a module that calls its layers one after another).
        input_shape: full input shape including batch and channels, ``(N, C, L)`` or ``(N, C, H, W)``.
        pointwise: extra module types to treat as point-wise (field unchanged).

    Returns one :class:`LayerRF` per spatial layer; point-wise layers are skipped. Layers after the map loses its
    spatial axes (``Flatten``, a global pool to rank 2) are not reported.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"receptive_field: model must be an nn.Module, got {type(model).__name__}")
    shape = tuple(input_shape)
    if len(shape) not in (3, 4) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise ValueError(f"receptive_field: input_shape must be (N, C, L) or (N, C, H, W) with positive ints, got "
                         f"{tuple(input_shape)}; include the batch dimension")
    ndim = len(shape) - 2
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        x = args[0] if args else None
        if isinstance(x, Tensor) and isinstance(output, Tensor):
            calls.append((names.get(module, type(module).__name__), module, tuple(x.shape), tuple(output.shape)))

    # Hook the leaves, and treat a module that owns parameters of its own next to children (e.g. a deformable
    # conv with its offset-predicting conv) as one opaque layer: its children do not tell what it computes.
    leaves: list[nn.Module] = []
    opaque: list[str] = []
    for qual, m in model.named_modules():
        if any(qual.startswith(o + ".") or o == "" for o in opaque):
            continue
        has_children = any(True for _ in m.children())
        if not has_children:
            leaves.append(m)
        elif any(True for _ in m.parameters(recurse=False)):
            leaves.append(m)
            opaque.append(qual)
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()  # no running-statistics update, no dropout; batch-norm works on a batch of 1
        with torch.no_grad():
            model(torch.zeros(shape, dtype=next((p.dtype for p in model.parameters()), torch.float32)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    size, jump, start = [1] * ndim, [1] * ndim, [0.0] * ndim
    current = shape[2:]
    out: list[LayerRF] = []
    for name, module, in_shape, out_shape in calls:
        if len(in_shape) != ndim + 2:
            break  # the spatial map is gone (flatten, global pool): nothing further has a field
        in_spatial, out_spatial = in_shape[2:], (out_shape[2:] if len(out_shape) == ndim + 2 else ())
        if in_spatial != current:
            raise ValueError(f"receptive_field: layer {name!r} ({type(module).__name__}) reads a map of spatial shape "
                             f"{in_spatial}, but the previous layer produced {current}; the model is not a chain "
                             f"(residual or multi-branch), so compute the field of each path separately")
        if isinstance(module, pointwise):
            continue
        if not out_spatial:
            if isinstance(module, _ADAPTIVE) or isinstance(module, nn.Flatten):
                break
            raise ValueError(f"receptive_field: {name!r} ({type(module).__name__}) removed the spatial axes")
        geom = _geometry(module, in_spatial, out_spatial)
        current = out_spatial
        if geom is None:
            continue
        k, s, p, d = geom
        for a in range(ndim):
            k_eff = d[a] * (k[a] - 1) + 1
            start[a] = start[a] + ((k_eff - 1) / 2 - p[a]) * jump[a]
            size[a] = size[a] + (k_eff - 1) * jump[a]
            jump[a] = jump[a] * s[a]
        out.append(LayerRF(name, type(module).__name__, k, s, p, d, tuple(size), tuple(jump), tuple(start),
                           out_spatial))
    return out


def _fmt(v: tuple[float, ...] | tuple[int, ...]) -> str:
    return "x".join(str(int(x)) if float(x).is_integer() else f"{x:g}" for x in v)


def format_receptive_fields(fields: Sequence[LayerRF]) -> str:
    """A plain-text table: layer, type, kernel/stride/padding/dilation, output size, field size, jump, start."""
    head = ("layer", "type", "k", "s", "p", "d", "output", "rf size", "jump", "start")
    rows = [head]
    for f in fields:
        rows.append((f.name, f.kind, _fmt(f.kernel), _fmt(f.stride), _fmt(f.padding), _fmt(f.dilation),
                     _fmt(f.output_shape), _fmt(f.size), _fmt(f.jump), _fmt(f.start)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_receptive_fields(model_or_fields: nn.Module | Sequence[LayerRF], input_shape: Sequence[int] | None = None,
                           file: TextIO | None = None) -> str:
    """Print (and return) the table of :func:`format_receptive_fields` for a model + input shape, or for fields
    already computed."""
    if isinstance(model_or_fields, nn.Module):
        if input_shape is None:
            raise ValueError("print_receptive_fields: pass input_shape=(N, C, H, W) with a model")
        fields = receptive_field(model_or_fields, input_shape)
    else:
        fields = list(model_or_fields)
        if not all(isinstance(f, LayerRF) for f in fields):
            raise TypeError("print_receptive_fields: expected an nn.Module or a sequence of LayerRF")
    table = format_receptive_fields(fields)
    print(table, file=file if file is not None else sys.stdout)
    return table


def input_gradient_support(model: nn.Module, input_shape: Sequence[int], index: Sequence[int],
                           channel: int = 0) -> list[tuple[int, int]]:
    """Empirical field: the inclusive [min, max] input positions per axis where d out[0, channel, *index] / d x
    is non-zero, x = ones. Meaningful when no cancellation occurs (e.g. positive weights, average pooling);
    used to check :func:`receptive_field`."""
    x = torch.ones(tuple(input_shape), dtype=next((p.dtype for p in model.parameters()), torch.float64),
                   requires_grad=True)
    was_training = model.training
    model.eval()
    try:
        y = model(x)
    finally:
        model.train(was_training)
    (g,) = torch.autograd.grad(y[(0, channel, *index)], x)
    nz = g[0].abs().sum(0).nonzero()
    if nz.numel() == 0:
        raise ValueError("input_gradient_support: the gradient is zero everywhere (cancellation or dead units)")
    return [(int(nz[:, a].min()), int(nz[:, a].max())) for a in range(nz.shape[1])]


__all__ = ["LayerRF", "format_receptive_fields", "input_gradient_support", "print_receptive_fields",
           "receptive_field"]
