"""Int8 quantization (tricklab.compress.quantize). References: the fake-quantized forward of the QAT model (the
converted int8 model must equal it within one quantization step), NumPy's round/clamp for the quantize-dequantize
formula r = S (q - Z) and its straight-through gradient, and the fp32 model (static and dynamic int8 outputs within
the error one rounding step per input allows); model_size_bytes for the size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tricklab.compress.quantize import (
    FakeQuant,
    Int8Layer,
    calibrate,
    convert,
    input_qparams,
    prepare,
    quantize_dynamic,
    quantize_static,
)
from tricklab.data import InMemoryLoader
from tricklab.errors import UserError
from tricklab.evaluate.cost import model_size_bytes
from tricklab.models import build_model
from tricklab.train import Trainer

CASES = {"mlp": ((40,), {}), "cnn": ((40,), {}), "cnn2d": ((1, 12, 12), {"channels": [6, 8]})}


def _model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    shape, args = CASES[name]
    torch.manual_seed(0)
    return build_model(name, shape, 10, **args), shape


def _qat(name: str) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """A model prepared for QAT and trained a few steps with the trainer (its observers and weights moved)."""
    model, shape = _model(name)
    prepared = prepare(model, mode="ema")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, *shape, generator=g), torch.randint(0, 10, (96,), generator=g)
    Trainer(prepared, torch.optim.Adam(prepared.parameters(), lr=1e-2), InMemoryLoader(x, y, 32, seed=0),
            max_steps=6, log_every=6).fit()
    return prepared.eval(), model, torch.randn(50, *shape, generator=g)


def _inputs_of(model: nn.Module, kind: type[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda _m, a: seen.append(a[0].detach())) for m in model.modules()
             if isinstance(m, kind)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("name", list(CASES))
def test_qat_fake_quant_forward_equals_the_converted_int8_model_within_one_step(name: str) -> None:
    prepared, _, x = _qat(name)
    converted = convert(prepared)
    assert not any(isinstance(m, FakeQuant) for m in converted.modules())
    assert not any(True for m in converted.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))
                   for _ in m.parameters(recurse=False))  # no float weights left
    int8 = [m for m in converted.modules() if isinstance(m, Int8Layer)]
    assert int8 and all(m.weight_q.dtype == torch.int8 for m in int8)
    with torch.no_grad():
        fake, real = prepared(x), converted(x)
    # every layer's input codes: the converted model's uint8 codes against round(x / S) + Z of the fake path
    fakes = [m for m in prepared.modules() if isinstance(m, FakeQuant)]
    for fq, q8, a, b in zip(fakes, int8, _inputs_of(prepared, FakeQuant, x), _inputs_of(converted, Int8Layer, x)):
        s, z = fq.qparams()
        codes_fake = np.clip(np.round(a.numpy() / s.item()) + z.item(), 0, 255)
        assert np.abs(q8.quantize_input(b).numpy().astype(np.int64) - codes_fake).max() <= 1
    # one input step S_x of the last layer moves an output by at most S_x max_c ||W_c||_1
    last = int8[-1]
    w = last.weight_q.float() * last.weight_scale.view(-1, *([1] * (last.weight_q.dim() - 1)))
    step = float(last.input_scale) * float(w.abs().flatten(1).sum(1).max())
    assert float((fake - real).abs().max()) <= step
    torch.testing.assert_close(real, fake, rtol=0, atol=1e-5)  # in practice identical arithmetic


def test_fake_quant_forward_and_gradient_match_numpy() -> None:
    """q/dq of the input and of the weights by the formulas of Jacob et al., and the straight-through gradient."""
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    fq = FakeQuant(layer, mode="minmax")
    x = torch.randn(8, 6) * 2
    fq.eval()
    fq.quantizing = False
    fq(x[:4])  # calibrate on half the batch: the other half has values outside the range (clamped)
    fq.quantizing = True
    xr = x.clone().requires_grad_()
    out = fq(xr)
    out.sum().backward()
    lo, hi = min(float(x[:4].min()), 0.0), max(float(x[:4].max()), 0.0)
    s = np.float32((hi - lo) / 255)
    z = np.clip(np.round(-lo / s), 0, 255)
    xn = x.numpy()
    q = np.clip(np.round(xn * np.float32(1 / s)) + z, 0, 255)
    x_hat = (q - z) * s
    wn = layer.weight.detach().numpy()
    sw = np.abs(wn).max(1) / 127
    w_hat = np.clip(np.round(wn / sw[:, None]), -127, 127) * sw[:, None]
    ref = x_hat @ w_hat.T + layer.bias.detach().numpy()
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    inside = (np.round(xn / s) + z >= 0) & (np.round(xn / s) + z <= 255)
    assert not inside.all()  # the check covers clamped inputs
    np.testing.assert_allclose(xr.grad.numpy(), inside * w_hat.sum(0)[None, :], rtol=1e-5, atol=1e-6)
    # weights: straight through (symmetric per-channel scale covers every weight)
    np.testing.assert_allclose(layer.weight.grad.numpy(), np.repeat(x_hat.sum(0)[None, :], 4, 0), rtol=1e-5)


def test_input_qparams_keep_zero_exact() -> None:
    s, z = input_qparams(torch.tensor(0.5), torch.tensor(3.0))  # range widened to [0, 3]
    assert z.item() == 0 and s.item() == pytest.approx(3.0 / 255)
    s, z = input_qparams(torch.tensor(-1.0), torch.tensor(1.0))
    assert float((0 - z) * s + z * s) == 0.0 and 0 < z.item() < 255


@pytest.mark.parametrize("name", list(CASES))
def test_static_int8_is_close_to_fp32_and_a_quarter_of_the_size(name: str) -> None:
    model, shape = _model(name)
    model.eval()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(64, *shape, generator=g) for _ in range(4)]
    q = quantize_static(model, batches)
    x = torch.randn(64, *shape, generator=g)
    with torch.no_grad():
        ref, out = model(x), q(x)
    # error of a few rounding steps, far below the spread of the logits
    assert float((ref - out).abs().max()) < 0.05 * float(ref.abs().max()) + 1e-3
    # int8 weights: a quarter of the bytes; biases, scales, norm layers and the header stay (the tiny test cnn2d
    # has more of those than weights, so its size is checked at its default widths, 32 and 64 channels)
    if name == "cnn2d":
        model = build_model("cnn2d", shape, 10).eval()
        q = quantize_static(model, batches)
    assert model_size_bytes(q) / model_size_bytes(model) < 0.35  # measured: mlp 0.29, cnn 0.34, cnn2d 0.29


def test_dynamic_int8_with_torchao_is_close_to_fp32() -> None:
    pytest.importorskip("torchao")
    model, shape = _model("mlp")
    model.eval()
    x = torch.randn(32, *shape)
    with torch.no_grad():
        torch.testing.assert_close(quantize_dynamic(model)(x), model(x), rtol=0, atol=0.02)


def test_what_cannot_be_quantized_is_named() -> None:
    class Rnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.head = nn.GRU(4, 8, batch_first=True), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    with pytest.raises(UserError, match=r"layer 'rnn' \(GRU\) cannot be quantized.*skip=\['rnn'\]"):
        prepare(Rnn())
    prepared = prepare(Rnn(), skip=["rnn"])
    assert isinstance(prepared.head, FakeQuant) and isinstance(prepared.rnn, nn.GRU)
    with pytest.raises(UserError, match="observed no input"):
        convert(prepared)
    with pytest.raises(UserError, match="no FakeQuant"):
        convert(Rnn())
    with pytest.raises(UserError, match="at least one batch"):
        calibrate(prepare(nn.Linear(2, 2)), [])
    with pytest.raises(UserError, match="linear layers only"):
        quantize_dynamic(nn.Sequential(nn.Conv1d(1, 2, 3)))
