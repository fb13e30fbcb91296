"""Contract sweep over tricklab.techniques.TECHNIQUES: every entry is a Technique with valid declared slots
and events, has a docs page, plans alone, and its state_dict() loads into a fresh instance and comes back
equal (after a short fit, so that stateful techniques have non-trivial state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.techniques import TECHNIQUES
from tricklab.train import EVENTS, SLOTS, Technique, Trainer, plan

DOCS = Path(__file__).resolve().parents[2] / "docs" / "techniques"
NAMES = TECHNIQUES.names()
# configured by their own recipe keys in the lab runner (schedule, checkpoint, log_every, progress),
# which refuses them under ``techniques``; their pages show those keys instead
RUNNER_OWNED = {"checkpointing", "metrics_log", "progress", "lr_schedule"}


def _kwargs(name: str, tmp_path: Path) -> dict[str, Any]:
    return {
        "checkpointing": {"every_steps": 2, "folder": str(tmp_path / "ck")},
        "metrics_log": {"path": str(tmp_path / "m.jsonl")},
        "progress": {"stream": __import__("io").StringIO(), "rich": False},
        "early_stopping": {"metric": "accuracy", "patience": 100, "restore_best": True},
        "ema": {"decay": 0.9},
        "lr_schedule": {"schedule": "cosine"},
        "mixed_precision": {"dtype": "bfloat16"},
        "mixup": {"num_classes": 3}, "cutmix": {"num_classes": 3}, "mix": {"num_classes": 3},
        "multi_scale": {"sizes": [4]},  # the sweep's inputs are (B, 4) signals feeding a Linear(4, 3)
    }.get(name, {})


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_registry_is_not_empty() -> None:
    assert len(NAMES) >= 11
    assert {"ema", "grad_clip", "nan_guard", "mixed_precision", "checkpointing"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_declarations(name: str) -> None:
    cls = TECHNIQUES.get(name)
    assert isinstance(cls, type) and issubclass(cls, Technique)
    assert cls.name == name
    assert set(cls.reads) <= SLOTS and set(cls.writes) <= SLOTS
    assert all(isinstance(n, str) for n in (*cls.after, *cls.before, *cls.composes_with))
    assert TECHNIQUES.summary(name), f"{name} needs a docstring (its registry summary)"
    # every on_<x> method is a real event (a typo would silently never run)
    handlers = [m[3:] for m in dir(cls) if m.startswith("on_") and callable(getattr(cls, m))]
    assert set(handlers) <= set(EVENTS), sorted(set(handlers) - set(EVENTS))
    assert handlers, f"{name} handles no event"


@pytest.mark.parametrize("name", NAMES)
def test_docs_page(name: str) -> None:
    page = DOCS / f"{name}.md"
    assert page.is_file(), f"missing docs page {page}"
    text = page.read_text(encoding="utf-8")
    assert text.startswith("# ")
    for section in ("## The problem", "## The fix", "## Math", "## References", "## In any loop",
                    "## In a recipe", "## What it declares"):
        assert section in text, f"{page.name} lacks the section {section!r}"
    if name in RUNNER_OWNED:
        assert "refused" in text  # says which recipe key configures it instead
    else:
        assert f"name: {name}" in text  # the recipe snippet names it


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_on_a_fresh_instance(name: str, tmp_path: Path) -> None:
    cls = TECHNIQUES.get(name)
    technique = cls(**_kwargs(name, tmp_path))
    plan([technique])
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g)
    model = nn.Linear(4, 3)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0),
            techniques=[technique], max_steps=4, eval_data=(x, y), eval_every=2).fit()
    sd = technique.state_dict()
    assert isinstance(sd, dict)
    fresh = cls(**_kwargs(name, tmp_path))
    fresh.load_state_dict(sd)
    assert _equal(fresh.state_dict(), sd)
    # the state survives the checkpoint format (safetensors + JSON, no pickle)
    from tricklab.train.checkpoint import flatten_state, unflatten_state

    assert _equal(unflatten_state(*flatten_state(sd)), sd)
