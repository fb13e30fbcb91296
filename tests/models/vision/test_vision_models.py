"""Every vision classifier (tricklab.models.vision) at tiny width: output shapes at several input sizes, the layer
contract (finite outputs; every parameter gets a finite, non-zero gradient; torch.compile(backend="aot_eager")
gives the eager outputs; eval mode is deterministic and batch-independent), parameter counts against closed
forms, and clear errors for bad arguments. References: the model's own eager forward, closed-form counts."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError
from tricklab.models import MODELS, build_model, count_parameters
from tricklab.models.vision.common import make_divisible, pad_to_multiple

VISION = ("resnet", "mobilenetv2", "xception", "convnext", "vit", "swin", "hybrid")

# (name, kwargs): tiny versions so that every test stays fast on 2 cores
TINY: list[tuple[str, dict[str, Any]]] = [
    ("resnet", {"widths": (4, 8), "blocks": 1}),
    ("resnet", {"widths": (4, 8), "blocks": (1, 2), "preact": True, "drop_path": 0.1}),
    ("resnet", {"widths": (2, 4), "block": "bottleneck", "stem_stride": 2}),
    ("resnet", {"widths": (2, 4), "block": "bottleneck", "preact": True, "norm": "layer"}),
    ("resnet", {"widths": (4, 8), "channels_last": True}),
    ("mobilenetv2", {"width_mult": 0.25, "settings": [[1, 8, 1, 1], [2, 8, 2, 2], [2, 16, 1, 2]],
                     "last_channels": 16}),
    ("xception", {"stem": (4, 8), "entry_widths": (8, 16), "middle_blocks": 1, "exit_widths": (16, 16)}),
    ("convnext", {"dims": (8, 16), "depths": (1, 1), "layer_scale": 0.5}),
    ("vit", {"dim": 16, "depth": 2, "heads": 2, "patch_size": 7}),
    ("vit", {"dim": 16, "depth": 1, "heads": 2, "patch_size": 7, "pool": "mean", "pos": "sincos"}),
    ("swin", {"dims": (8, 16), "depths": (2, 2), "heads": (2, 2), "window": 4, "patch_size": 2}),
    ("hybrid", {"conv_widths": (4, 8, 8), "dim": 16, "depth": 1, "heads": 2}),
]
IDS = [f"{n}-{i}" for i, (n, _) in enumerate(TINY)]
SIZES = [(28, 28), (20, 20), (32, 24), (17, 23)]  # the built size, smaller, larger, odd non-square


def _build(name: str, kwargs: dict[str, Any], shape: tuple[int, ...] = (1, 28, 28), classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, shape, classes, **kwargs)


def test_all_vision_models_are_registered_and_covered() -> None:
    assert set(VISION) <= set(MODELS.names())
    assert {n for n, _ in TINY} == set(VISION)
    for n in VISION:
        assert MODELS.summary(n)


@pytest.mark.parametrize(("name", "kwargs"), TINY, ids=IDS)
def test_output_shapes_at_several_input_sizes(name: str, kwargs: dict) -> None:
    model = _build(name, kwargs).eval()
    with torch.no_grad():
        for h, w in SIZES:
            out = model(torch.randn(3, 1, h, w))
            assert out.shape == (3, 10), (name, h, w)
            assert torch.isfinite(out).all()
        # the built size may also come flat (B, C*H*W) or channel-less (B, H, W), as the lab's data sets give it
        assert model(torch.randn(2, 784)).shape == (2, 10)
        assert model(torch.randn(2, 28, 28)).shape == (2, 10)
    three = _build(name, kwargs, shape=(3, 16, 16), classes=4).eval()
    with torch.no_grad():
        assert three(torch.randn(2, 3, 16, 16)).shape == (2, 4)
        assert three(torch.randn(2, 3, 24, 20)).shape == (2, 4)


@pytest.mark.parametrize(("name", "kwargs"), TINY, ids=IDS)
def test_every_parameter_gets_a_finite_nonzero_gradient(name: str, kwargs: dict) -> None:
    model = _build(name, kwargs).train()
    x = torch.randn(8, 1, 28, 28)
    loss = F.cross_entropy(model(x), torch.arange(8) % 10)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


# one configuration per model, plus the pre-activation ResNet (compiling is the slow part of this file)
COMPILE = [0, 1, 5, 6, 7, 8, 10, 11]


@pytest.mark.parametrize(("name", "kwargs"), [TINY[i] for i in COMPILE], ids=[IDS[i] for i in COMPILE])
def test_torch_compile_matches_eager(name: str, kwargs: dict) -> None:
    model = _build(name, kwargs).eval()
    x = torch.randn(2, 1, 28, 28)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "kwargs"), TINY, ids=IDS)
def test_eval_is_deterministic_and_batch_independent(name: str, kwargs: dict) -> None:
    model = _build(name, kwargs)
    model(torch.randn(8, 1, 28, 28))  # one train-mode pass moves the BatchNorm statistics
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        a, b, one = model(x), model(x), model(x[:1])
    assert torch.equal(a, b)
    torch.testing.assert_close(one, a[:1], rtol=1e-5, atol=1e-5)


def test_resnet_parameter_count_matches_closed_form() -> None:
    """widths (4, 8), one basic block each, 1x28x28, 10 classes, counted layer by layer by hand."""
    model = build_model("resnet", (1, 28, 28), 10, widths=(4, 8), blocks=1)
    stem = 1 * 4 * 9 + 2 * 4                                 # conv (no bias) + BN
    block1 = (4 * 4 * 9 + 2 * 4) * 2                          # two conv3x3 + BN, identity shortcut
    block2 = (4 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8) + (4 * 8 + 2 * 8)  # + 1x1 projection + BN
    head = 8 * 10 + 10
    assert count_parameters(model) == stem + block1 + block2 + head
    bottleneck = build_model("resnet", (1, 28, 28), 10, widths=(2,), block="bottleneck")
    # stem 2 ch; bottleneck 2 -> mid 2 -> 8: 1x1 (2*2) + 3x3 (2*2*9) + 1x1 (2*8), BN on 2, 2, 8, projection 2 -> 8
    expected = (1 * 2 * 9 + 4) + (4 + 36 + 16 + 2 * (2 + 2 + 8)) + (2 * 8 + 16) + (8 * 10 + 10)
    assert count_parameters(bottleneck) == expected


def test_resnet_channels_last_equals_the_default_layout() -> None:
    """Reference: the same weights in the default NCHW layout."""
    torch.manual_seed(0)
    a = build_model("resnet", (1, 28, 28), 10, widths=(4, 8)).eval()
    b = build_model("resnet", (1, 28, 28), 10, widths=(4, 8), channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    assert b.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)


def test_resnet_structure_options() -> None:
    post = build_model("resnet", (1, 28, 28), 10, widths=(4, 8))
    pre = build_model("resnet", (1, 28, 28), 10, widths=(4, 8), preact=True)
    assert isinstance(post.stem[-1], nn.ReLU) and len(pre.stem) == 1  # pre-activation: no norm-ReLU in the stem
    assert isinstance(pre.final_norm, nn.BatchNorm2d)
    assert post.stem[0].stride == (1, 1)  # 28 px: full resolution in the first stage
    assert build_model("resnet", (3, 64, 64), 10).stem[0].stride == (2, 2)
    assert build_model("resnet", (1, 28, 28), 10, widths=(2, 4), block="bottleneck").num_features == 16


def test_mobilenetv2_widths_follow_the_width_multiplier() -> None:
    """make_divisible against values of the MobileNetV2 reference rule worked out by hand."""
    assert [make_divisible(v) for v in (32 * 0.75, 16 * 0.35, 24 * 1.4, 320 * 1.3, 9.0)] == [24, 8, 32, 416, 16]
    m = build_model("mobilenetv2", (1, 28, 28), 10, width_mult=0.5, settings=[[1, 16, 1, 1], [6, 24, 2, 2]],
                    last_channels=64)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert convs[0].out_channels == 16  # stem 32 * 0.5
    assert m.num_features == 64  # the last conv is not thinned below last_channels
    # the expansion conv of the first 24-wide block widens 8 -> 8 * 6 = 48 channels
    assert any(c.in_channels == 8 and c.out_channels == 48 and c.kernel_size == (1, 1) for c in convs)


def test_xception_uses_depthwise_separable_convs() -> None:
    from tricklab.layers.conv import DepthwiseSeparableConv2d

    m = build_model("xception", (1, 28, 28), 10, middle_blocks=2)
    seps = [s for s in m.modules() if isinstance(s, DepthwiseSeparableConv2d)]
    assert len(seps) == 2 * 2 + 2 * 3 + 2 + 1  # entry 2 blocks x 2, middle 2 x 3, exit block 2, final 1
    assert all(s.depthwise.groups == s.depthwise.in_channels for s in seps)


def test_convnext_block_layout() -> None:
    m = build_model("convnext", (1, 28, 28), 10, dims=(8, 16), depths=(1, 2), layer_scale=1e-6)
    block = m.stages[1][0]
    assert block.dwconv.kernel_size == (7, 7) and block.dwconv.groups == 16
    assert block.pwconv1.out_features == 64  # inverted bottleneck 4x
    torch.testing.assert_close(block.gamma, torch.full((16,), 1e-6))
    assert m.stem[0].stride == (2, 2) and m.downsample[0][1].stride == (2, 2)


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("resnet", {"block": "wide"}, "block"),
    ("resnet", {"widths": (8, 16), "blocks": (1, 2, 3)}, "blocks"),
    ("resnet", {"norm": "batchy"}, "norm"),
    ("resnet", {"drop_path": 1.0}, "drop_path"),
    ("mobilenetv2", {"width_mult": 0}, "width_mult"),
    ("mobilenetv2", {"settings": [[6, 24, 2]]}, "settings"),
    ("xception", {"stem": (8,)}, "two widths"),
    ("convnext", {"dims": (8, 16), "depths": (1,)}, "differ"),
    ("convnext", {"kernel_size": 4}, "odd"),
    ("vit", {"dim": 30, "heads": 4}, "divisible"),
    ("vit", {"pool": "max"}, "pool"),
    ("vit", {"pos": "sincos", "dim": 18, "heads": 2}, "sincos"),
    ("swin", {"dims": (8, 16), "depths": (2,), "heads": (2, 2)}, "one entry per stage"),
    ("swin", {"dims": (9,), "depths": (2,), "heads": (2,)}, "divisible"),
    ("hybrid", {"dim": 18, "heads": 2}, "divisible"),
])
def test_bad_arguments_raise_config_error(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_model(name, (1, 28, 28), 10, **kwargs)


def test_wrong_channel_count_is_a_clear_error() -> None:
    model = build_model("resnet", (1, 28, 28), 10, widths=(4,))
    with pytest.raises(ValueError, match="input channel"):
        model(torch.randn(2, 3, 28, 28))


def test_pad_to_multiple() -> None:
    x = torch.ones(1, 2, 5, 7)
    y, pads = pad_to_multiple(x, 4)
    assert y.shape == (1, 2, 8, 8) and pads == (3, 1)
    assert y[..., :5, :7].eq(1).all() and y[..., 5:, :].eq(0).all() and y[..., 7:].eq(0).all()
    z, pads = pad_to_multiple(torch.ones(1, 5, 7, 3), 7, dims=(1, 2))
    assert z.shape == (1, 7, 7, 3) and pads == (2, 0)
    assert pad_to_multiple(x, 1)[0] is x
