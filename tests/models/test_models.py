"""Tests for tricklab.models: shapes, gradients, parameter counts, determinism, compile, errors, learning."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.errors import ConfigError, UnknownNameError
from tricklab.models import MODELS, accepted_arguments, build_model, count_parameters

NUM_CLASSES = 10
B = 4

# (name, input_shape, kwargs, list of batch shapes the model must accept)
CASES: list[tuple[str, tuple[int, ...], dict, list[tuple[int, ...]]]] = [
    ("mlp", (40,), {}, [(B, 40), (B, 1, 40)]),
    ("mlp", (1, 40), {"hidden": 32}, [(B, 40), (B, 1, 40)]),
    ("cnn", (40,), {}, [(B, 40), (B, 1, 40)]),
    ("cnn", (1, 40), {"channels": 8}, [(B, 40), (B, 1, 40)]),
    ("cnn", (2, 33), {}, [(B, 2, 33), (B, 66)]),
    ("resnet1d", (40,), {}, [(B, 40), (B, 1, 40)]),
    ("resnet1d", (1, 40), {"widths": (8, 16), "blocks_per_stage": 1, "kernel_size": 5}, [(B, 40), (B, 1, 40)]),
    ("resnet1d", (3, 17), {"widths": [8, 16, 32]}, [(B, 3, 17)]),
    ("cnn2d", (1, 28, 28), {}, [(B, 1, 28, 28), (B, 28 * 28), (B, 28, 28)]),
    ("cnn2d", (1, 8, 8), {}, [(B, 1, 8, 8), (B, 64)]),
    ("cnn2d", (8, 8), {"channels": (8, 16), "dropout": 0.5, "pool_size": 2}, [(B, 1, 8, 8), (B, 8, 8), (B, 64)]),
    ("cnn2d", (3, 3, 3), {"channels": [4, 4, 4]}, [(B, 3, 3, 3), (B, 27)]),
    ("cnn2d", (1, 8, 8), {"drop_block": 0.1, "block_size": 2}, [(B, 1, 8, 8), (B, 64)]),
    ("resnet1d", (1, 40), {"widths": (8, 16), "drop_block": 0.1, "drop_path": 0.2}, [(B, 40), (B, 1, 40)]),
    ("resnet2d", (1, 28, 28), {}, [(B, 1, 28, 28), (B, 28 * 28), (B, 28, 28)]),
    ("resnet2d", (1, 8, 8), {"widths": (8, 16, 16), "drop_block": 0.1, "drop_path": 0.1}, [(B, 1, 8, 8), (B, 64)]),
]
IDS = [f"{n}-{'x'.join(map(str, s))}-{i}" for i, (n, s, _, _) in enumerate(CASES)]


GRAPH_MODELS = {"gcn", "gat", "graphsage", "gcn_graph", "gated_gnn"}  # take a Graph: tests/models/test_gnn.py
# tested in their own files: plain_mlp (test_plain_mlp.py); token models take int64 ids (test_gpt.py,
# test_seq_lm.py, test_bert.py, test_seq2seq.py; albert: tests/paradigms/generative/test_bert_variants.py)
ELSEWHERE = {"plain_mlp", "gpt", "lstm_lm", "mamba_lm", "hybrid_lm", "bert", "bert_classifier", "seq2seq_rnn",
             "albert"}
# the vision classifiers: tests/models/vision/ (shapes at several sizes, compile, Swin / ViT references)
ELSEWHERE |= {"resnet", "mobilenetv2", "xception", "convnext", "vit", "swin", "hybrid"}


def test_every_registered_model_is_covered() -> None:
    assert set(MODELS.names()) == {"mlp", "cnn", "resnet1d", "cnn2d", "resnet2d"} | GRAPH_MODELS | ELSEWHERE
    assert {c[0] for c in CASES} == set(MODELS.names()) - GRAPH_MODELS - ELSEWHERE
    for name in MODELS.names():
        assert MODELS.summary(name), f"{name} has no summary"


@pytest.mark.parametrize(("name", "shape", "kwargs", "batches"), CASES, ids=IDS)
def test_output_shape_and_finite(name: str, shape: tuple, kwargs: dict, batches: list) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES, **kwargs)
    for batch_shape in batches:
        out = model(torch.randn(*batch_shape))
        assert out.shape == (batch_shape[0], NUM_CLASSES)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "shape", "kwargs", "batches"), CASES, ids=IDS)
def test_every_parameter_gets_a_nonzero_gradient(name: str, shape: tuple, kwargs: dict, batches: list) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES, **kwargs).train()
    x = torch.randn(16, *batches[0][1:])
    y = torch.arange(16) % NUM_CLASSES
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} has no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} has an all-zero gradient"


@pytest.mark.parametrize(("name", "shape", "kwargs", "batches"), CASES, ids=IDS)
def test_eval_mode_is_deterministic(name: str, shape: tuple, kwargs: dict, batches: list) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES, **kwargs)
    model(torch.randn(8, *batches[0][1:]))  # one train-mode pass moves BatchNorm running stats
    model.eval()
    x = torch.randn(*batches[0])
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a, b)
    # the same example gives the same logits whatever else is in the batch
    with torch.no_grad():
        single = model(x[:1])
    torch.testing.assert_close(single, a[:1], rtol=1e-5, atol=1e-5)


def test_paper_cnn_parameter_count_matches_closed_form() -> None:
    model = build_model("cnn", (40,), 10)
    closed_form = (1 * 25 * 5 + 25) + (25 * 25 * 3 + 25) + (25 * 25 * 3 + 25) + (125 * 10 + 10)
    assert closed_form == 5210
    assert count_parameters(model) == closed_form
    assert model.flat_features == 125
    # same for the (1, L) spelling of the shape
    assert count_parameters(build_model("cnn", (1, 40), 10)) == closed_form


def test_paper_cnn_layers_match_the_paper() -> None:
    model = build_model("cnn", (40,), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    got = [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs]
    assert got == [(1, 25, 5, 2, 1), (25, 25, 3, 2, 1), (25, 25, 3, 2, 1)]
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(125, 10)]


def test_paper_mlp_parameter_count() -> None:
    model = build_model("mlp", (40,), 10)
    assert count_parameters(model) == (40 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)
    assert len([m for m in model.modules() if isinstance(m, nn.Linear)]) == 3


def test_resnet1d_structure() -> None:
    model = build_model("resnet1d", (40,), 10, widths=(32, 64, 128), blocks_per_stage=2)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    # stem + 2 per block (6 blocks) + 2 projection shortcuts
    assert len(bns) == 1 + 12 + 2
    assert model.fc.in_features == 128
    one = build_model("resnet1d", (40,), 10, blocks_per_stage=1)
    assert count_parameters(one) < count_parameters(model)


def test_cnn2d_feature_shapes() -> None:
    assert build_model("cnn2d", (1, 28, 28), 10).feature_shape == (64, 7, 7)
    assert build_model("cnn2d", (1, 8, 8), 10).feature_shape == (64, 2, 2)
    assert build_model("cnn2d", (1, 1, 1), 3)(torch.randn(2, 1, 1, 1)).shape == (2, 3)


COMPILE_CASES = [("mlp", (40,), {}), ("cnn", (40,), {}), ("resnet1d", (40,), {"widths": (8, 16)}),
                 ("cnn2d", (1, 8, 8), {"channels": (8, 16)})]


@pytest.mark.parametrize(("name", "shape", "kwargs"), COMPILE_CASES, ids=[c[0] for c in COMPILE_CASES])
def test_torch_compile_matches_eager(name: str, shape: tuple, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES, **kwargs).eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_wrong_kwarg_raises_config_error_listing_accepted_args() -> None:
    with pytest.raises(ConfigError) as info:
        build_model("cnn", (40,), 10, chanels=32)
    msg = str(info.value)
    assert "chanels" in msg and "channels=25" in msg
    with pytest.raises(ConfigError) as info:
        build_model("resnet1d", (40,), 10, depth=3)
    msg = str(info.value)
    for arg in ("widths", "blocks_per_stage", "kernel_size"):
        assert arg in msg
    assert accepted_arguments("cnn2d") == {"channels": (32, 64), "dropout": 0.0, "pool_size": 1, "drop_block": 0.0,
                                           "block_size": 3}


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("cnn", (3,), {"channels": 0}),
        ("cnn", (1, 2), {}),  # too short for three strided convolutions
        ("cnn", (1, 1, 40), {}),
        ("resnet1d", (40,), {"kernel_size": 4}),
        ("resnet1d", (40,), {"widths": ()}),
        ("cnn2d", (40,), {}),
        ("cnn2d", (1, 8, 8), {"dropout": 1.5}),
        ("mlp", (0,), {}),
    ],
)
def test_bad_values_raise_config_error(name: str, shape: tuple, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        build_model(name, shape, 10, **kwargs)


def test_bad_num_classes_raises_config_error() -> None:
    with pytest.raises(ConfigError):
        build_model("mlp", (40,), 0)


def test_unknown_name_raises_with_suggestion() -> None:
    with pytest.raises(UnknownNameError) as info:
        build_model("resnet1", (40,), 10)
    assert "resnet1d" in str(info.value)
    assert "did you mean" in str(info.value)


def test_names_are_case_insensitive() -> None:
    assert count_parameters(build_model("CNN", (40,), 10)) == 5210


def test_import_loads_nothing_optional() -> None:
    code = (
        "import sys, tricklab.models; "
        "bad = [m for m in ('mnist1d', 'scipy', 'sklearn', 'matplotlib', 'yaml', 'rich', 'safetensors') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _separable_1d(n: int, length: int, num_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each class is a Gaussian bump at its own position, randomly shifted by up to 2 steps, plus noise."""
    y = torch.randint(num_classes, (n,), generator=gen)
    centres = (torch.arange(num_classes) + 0.5) * length / num_classes  # (C,)
    shift = torch.randint(-2, 3, (n,), generator=gen).float()
    pos = torch.arange(length).float()  # (L,)
    x = torch.exp(-0.5 * ((pos[None, :] - centres[y, None] - shift[:, None]) / 1.5) ** 2)  # (n, L)
    x = x + 0.3 * torch.randn(n, length, generator=gen)
    return x, y


def test_paper_cnn_learns_a_separable_problem(classifier_accuracy: Callable[..., float]) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    train = _separable_1d(2000, 40, 4, gen)
    test = _separable_1d(1000, 40, 4, gen)
    model = build_model("cnn", (40,), 4)
    acc = classifier_accuracy(model, train, test, steps=300, batch_size=64, gen=gen)
    assert acc > 0.9, acc
