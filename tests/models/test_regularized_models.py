"""Models with dropout-family regularizers: resnet1d / cnn2d options (drop_block, drop_path) and resnet2d.

References: frozen copies of the pre-regularizer resnet1d and cnn2d (``_Legacy*`` below, the code as it was
before the options were added) for "the defaults reproduce today's models exactly" (same init from the same
seed, same train-mode outputs and gradients); the closed-form parameter count of resnet2d; Huang et al.'s linear
decay rule p_l = l / L * p_L; eager execution as the reference for torch.compile.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import tricklab.models.resnet2d  # noqa: F401  (registers "resnet2d" until tricklab.models imports it)
from tricklab.errors import ConfigError
from tricklab.layers.dropout import DropBlock, DropPath
from tricklab.layers.norms import NORM_KINDS
from tricklab.models import build_model, count_parameters
from tricklab.models.resnet2d import BasicBlock2d
from tricklab.techniques.dropblock_schedule import find_drop_blocks


# ------------------------------------------------------------------------------ frozen pre-change models
class _LegacyBlock1d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, k, stride=stride, padding=k // 2, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, k, stride=1, padding=k // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.shortcut = (nn.Sequential(nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class _LegacyResNet1d(nn.Module):
    def __init__(self, cin: int, classes: int, widths: tuple[int, ...], blocks: int, k: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(cin, widths[0], k, padding=k // 2, bias=False),
                                  nn.BatchNorm1d(widths[0]), nn.ReLU())
        stages, prev = [], widths[0]
        for i, w in enumerate(widths):
            stage = []
            for j in range(blocks):
                stage.append(_LegacyBlock1d(prev, w, k, 2 if (i > 0 and j == 0) else 1))
                prev = w
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(prev, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


class _LegacyCNN2d(nn.Module):
    def __init__(self, c: int, classes: int, channels: tuple[int, ...], hw: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in channels:
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if hw >= 2:
                layers.append(nn.MaxPool2d(2))
                hw //= 2
            c = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.pool(self.features(x)).flatten(1)))


def _same_model(new: nn.Module, old: nn.Module, x: Tensor) -> None:
    """Same state (keys and values), same train-mode outputs and parameter gradients."""
    sd_new, sd_old = new.state_dict(), old.state_dict()
    assert list(sd_new) == list(sd_old)
    for k in sd_new:
        assert torch.equal(sd_new[k], sd_old[k]), k
    y = torch.arange(x.shape[0]) % 5
    out_new, out_old = new(x), old(x)
    assert torch.equal(out_new, out_old)
    F.cross_entropy(out_new, y).backward()
    F.cross_entropy(out_old, y).backward()
    for (n, a), b in zip(new.named_parameters(), old.parameters()):
        assert torch.equal(a.grad, b.grad), n


@pytest.mark.parametrize("kwargs", [{}, {"drop_block": 0.0, "drop_path": 0.0}])
def test_resnet1d_defaults_reproduce_the_plain_model(kwargs: dict) -> None:
    """Reference: _LegacyResNet1d, the model before the options existed, built from the same seed."""
    torch.manual_seed(0)
    new = build_model("resnet1d", (1, 40), 5, widths=(8, 16, 16), **kwargs)
    torch.manual_seed(0)
    old = _LegacyResNet1d(1, 5, (8, 16, 16), 2, 3)
    assert not any(isinstance(m, (DropBlock, DropPath)) for m in new.modules())
    _same_model(new, old, torch.randn(6, 1, 40, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8)])
def test_cnn2d_defaults_reproduce_the_plain_model(shape: tuple[int, ...]) -> None:
    """Reference: _LegacyCNN2d, the model before drop_block existed, built from the same seed."""
    torch.manual_seed(0)
    new = build_model("cnn2d", shape, 5, channels=(4, 8), drop_block=0.0)
    torch.manual_seed(0)
    old = _LegacyCNN2d(1, 5, (4, 8), shape[-1])
    assert not any(isinstance(m, DropBlock) for m in new.modules())
    _same_model(new, old, torch.randn(6, *shape, generator=torch.Generator().manual_seed(1)))


# ---------------------------------------------------------------------------------- placement and rates
def test_resnet1d_regularizer_placement_and_linear_depth_rule() -> None:
    """DropBlock only in the last two stages (3 per projection block, 2 otherwise); DropPath rate of block l of L
    is drop_path * l / L (Huang et al. 2016, linear decay rule)."""
    model = build_model("resnet1d", (40,), 10, widths=(8, 16, 32), blocks_per_stage=2, drop_block=0.15,
                        block_size=4, drop_path=0.3)
    stages = list(model.stages)
    assert not find_drop_blocks(stages[0])
    assert len(find_drop_blocks(stages[1])) == len(find_drop_blocks(stages[2])) == 3 + 2
    assert all(m.drop_prob == 0.15 and m.block_size == 4 and m.dim == 1 for m in find_drop_blocks(model).values())
    rates = [m.p for m in model.modules() if isinstance(m, DropPath)]
    assert rates == pytest.approx([0.3 * depth / 6 for depth in range(1, 7)])


def test_cnn2d_dropblock_after_each_block() -> None:
    model = build_model("cnn2d", (1, 28, 28), 10, drop_block=0.1, block_size=5)
    blocks = list(find_drop_blocks(model).values())
    assert len(blocks) == 2 and all(b.block_size == 5 and b.dim == 2 for b in blocks)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "Sequential", "MaxPool2d"] * 2  # the plain model's indices
    assert [type(m).__name__ for m in model.features[2]] == ["ReLU", "DropBlock"]
    assert list(model.state_dict()) == list(build_model("cnn2d", (1, 28, 28), 10).state_dict())


@pytest.mark.parametrize(("name", "shape", "kwargs"), [
    ("resnet1d", (1, 40), {"widths": (8, 16), "drop_block": 0.2, "block_size": 3, "drop_path": 0.2}),
    ("cnn2d", (1, 8, 8), {"channels": (8, 16), "drop_block": 0.2}),
    ("resnet2d", (1, 8, 8), {"widths": (8, 16, 16), "drop_block": 0.2, "drop_path": 0.2}),
    ("resnet2d", (1, 28, 28), {"drop_block": 0.1, "block_size": 3, "drop_path": 0.1}),
])
def test_regularized_models_train_and_are_plain_in_eval(name: str, shape: tuple, kwargs: dict) -> None:
    """Train mode: finite outputs, every parameter a finite non-zero gradient, outputs differ from the plain
    model. Eval mode: exactly the plain model's outputs with the same weights (reference: the model built with
    the regularizers off and the same state dict: DropBlock and DropPath are identities in eval)."""
    torch.manual_seed(0)
    model = build_model(name, shape, 10, **kwargs).train()
    x = torch.randn(16, *shape, generator=torch.Generator().manual_seed(2))
    y = torch.arange(16) % 10
    out = model(x)
    assert out.shape == (16, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    plain_kwargs = {k: v for k, v in kwargs.items() if k not in ("drop_block", "drop_path", "block_size")}
    plain = build_model(name, shape, 10, **plain_kwargs)
    plain.load_state_dict(model.state_dict())  # same keys: the regularizers hold no state
    plain.train()
    assert not torch.allclose(plain(x), model(x))
    plain.load_state_dict(model.state_dict())  # the train-mode calls above moved the two BN statistics apart
    model.eval()
    plain.eval()
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


# ------------------------------------------------------------------------------------------------ resnet2d
def test_resnet2d_parameter_count_closed_form_and_shapes() -> None:
    """Reference: closed-form count for widths (16, 32, 64), one block per stage, BatchNorm, 10 classes."""
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias)
    stem = 9 * 1 * 16 + bn(16)
    b1 = 9 * 16 * 16 + 9 * 16 * 16 + 2 * bn(16)
    b2 = 9 * 16 * 32 + 9 * 32 * 32 + 2 * bn(32) + 16 * 32 + bn(32)
    b3 = 9 * 32 * 64 + 9 * 64 * 64 + 2 * bn(64) + 32 * 64 + bn(64)
    fc = 64 * 10 + 10
    closed = stem + b1 + b2 + b3 + fc
    assert closed == 77_754
    torch.manual_seed(0)
    model = build_model("resnet2d", (1, 28, 28), 10)
    assert count_parameters(model) == closed
    assert model.stem[0].stride == (2, 2)
    assert build_model("resnet2d", (8, 8), 10).stem[0].stride == (1, 1)
    for batch in [(3, 1, 28, 28), (3, 28, 28), (3, 784)]:
        assert model(torch.randn(*batch)).shape == (3, 10)
    feats = model.stages(model.stem(torch.randn(2, 1, 28, 28)))
    assert feats.shape == (2, 64, 4, 4)
    assert count_parameters(build_model("resnet2d", (1, 28, 28), 10, blocks_per_stage=2)) == 174_970


@pytest.mark.parametrize("norm", NORM_KINDS)
def test_resnet2d_norm_options(norm: str) -> None:
    torch.manual_seed(0)
    model = build_model("resnet2d", (1, 8, 8), 4, widths=(8, 16, 16), norm=norm)
    out = model(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 4) and torch.isfinite(out).all()
    block = model.stages[1][0]
    assert isinstance(block, BasicBlock2d)
    assert (block.conv1.bias is not None) == (norm == "none")  # a norm makes the conv bias redundant


def test_resnet2d_compile_matches_eager() -> None:
    """Reference: eager execution (eval mode, regularizers on but inactive)."""
    torch.manual_seed(0)
    model = build_model("resnet2d", (1, 8, 8), 10, widths=(8, 16, 16), drop_block=0.1, drop_path=0.1).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), model(x), rtol=1e-5, atol=1e-5)


def _separable_2d(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """4 classes: a bright 3x3 patch in one quadrant of an 8x8 image, randomly shifted by one pixel, plus noise."""
    y = torch.randint(4, (n,), generator=gen)
    x = 0.3 * torch.randn(n, 1, 8, 8, generator=gen)
    dy, dx = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 2, (n,), generator=gen)
    for i in range(n):
        r, c = 4 * (int(y[i]) // 2) + int(dy[i]), 4 * (int(y[i]) % 2) + int(dx[i])
        x[i, 0, r : r + 3, c : c + 3] += 1.0
    return x, y


def test_resnet2d_with_regularizers_learns_a_separable_problem(classifier_accuracy: Callable[..., float]) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train = _separable_2d(512, gen)
    test = _separable_2d(256, gen)
    model = build_model("resnet2d", (1, 8, 8), 4, widths=(8, 16, 16), drop_block=0.1, drop_path=0.1)
    acc = classifier_accuracy(model, train, test, steps=60, batch_size=32, gen=gen)
    assert acc > 0.9, acc


@pytest.mark.parametrize(("name", "kwargs"), [
    ("resnet1d", {"drop_block": 1.0}), ("resnet1d", {"drop_path": -0.1}), ("resnet1d", {"block_size": 0}),
    ("cnn2d", {"drop_block": 1.5}), ("cnn2d", {"block_size": 0}),
    ("resnet2d", {"drop_block": 1.0}), ("resnet2d", {"drop_path": True}), ("resnet2d", {"norm": "batchy"}),
    ("resnet2d", {"widths": ()}), ("resnet2d", {"block_size": 0}), ("resnet2d", {"norm": "group", "widths": (12,)}),
])
def test_bad_regularizer_arguments_raise_config_error(name: str, kwargs: dict) -> None:
    shape = (40,) if name == "resnet1d" else (1, 8, 8)
    with pytest.raises(ConfigError):
        build_model(name, shape, 10, **kwargs)
