"""Per-token tasks through the lab: the token loss and metrics (references: F.cross_entropy and
classification_metrics on the scored positions selected by hand), further test sets, text samples, and the
statistics / report plumbing for bits per character and extrapolation metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tricklab.evaluate import classification_metrics
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.tasks import IGNORE_INDEX, TASKS, scored_positions, token_cross_entropy

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (3, 5), generator=g)
    targets[0, :2] = IGNORE_INDEX
    targets[2, 4] = IGNORE_INDEX
    return logits, targets


def test_token_loss_equals_cross_entropy_over_scored_positions() -> None:
    logits, targets = _token_batch()
    keep = targets != IGNORE_INDEX
    ref = F.cross_entropy(logits[keep], targets[keep])  # reference: the scored positions picked by a mask
    ours = token_cross_entropy(logits, targets)
    torch.testing.assert_close(ours, ref)
    g_ours, = torch.autograd.grad(ours, logits)
    g_ref, = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g_ours, g_ref)
    assert torch.all(g_ours[~keep] == 0)  # unscored positions get no gradient


def test_token_metrics_score_only_positions_with_a_target() -> None:
    logits, targets = _token_batch()
    logits = logits.detach()
    keep = targets != IGNORE_INDEX
    ours = TASKS.get("shakespeare-char").metric_fn(7)(logits, targets)
    ref = classification_metrics(logits[keep], targets[keep], 7)
    assert ours["accuracy"] == ref["accuracy"] and ours["nll"] == pytest.approx(ref["nll"])
    assert ours["bpc"] == pytest.approx(ref["nll"] / math.log(2.0))
    assert ours["scored_positions"] == int(keep.sum())
    with pytest.raises(ValueError, match="per-token task"):
        scored_positions(logits[:, 0], targets)


def test_label_smoothing_accepts_per_token_outputs() -> None:
    from tricklab.techniques import LabelSmoothing
    from tricklab.train.state import TrainState

    logits, targets = _token_batch()
    state = TrainState(model=torch.nn.Linear(1, 1), optimizer=None, loss_fn=None, device=torch.device("cpu"))  # type: ignore[arg-type]
    state.outputs, state.targets = logits, targets
    LabelSmoothing(0.1).on_loss(state)
    keep = targets != IGNORE_INDEX
    torch.testing.assert_close(state.loss, F.cross_entropy(logits[keep], targets[keep], label_smoothing=0.1))


def test_induction_heads_run_reports_the_longer_test_sets(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["task=induction-heads", "model.name=mamba_lm", "techniques=[]", "schedule=constant",
                                "model.args={n_layer: 1, d_model: 16, d_state: 4}", "batch_size=16",
                                "budget.steps=3", "eval_every=null", "progress=false",
                                "data.args={seq_len: 16, num_train: 64, num_test: 32, test_seq_lens: [32, 64]}"])
    r = run(recipe, out=tmp_path / "ih")
    extra = r.summary.extra_tests
    assert set(extra) == {"len32", "len64"}
    for m in extra.values():
        # one scored position per sequence
        assert 0.0 <= m.value("accuracy") <= 1.0 and m.value("scored_positions") == 32
    assert r.summary.test.value("scored_positions") == 32 and r.summary.test.value("bpc") is not None

    from tricklab.lab.analysis import metrics_for

    (len64,) = [m for m in metrics_for([r.summary]) if m.key == "extra:len64:accuracy"]
    assert r.summary.value(len64) == extra["len64"].value("accuracy")


def test_shakespeare_run_keeps_a_seeded_sample(tmp_path: Path) -> None:
    overrides = ["task=shakespeare-char", "model.name=gpt", "techniques=[]", "schedule=constant",
                 "model.args={n_layer: 1, d_model: 16, n_heads: 2}", "batch_size=8", "budget.steps=2",
                 "eval_every=null", "progress=false", "eval_batch_size=256",
                 "data.args={block_size: 32, max_train_windows: 64, test_fraction: 0.01}"]
    a = run(load_recipe(None, overrides), out=tmp_path / "a").summary
    b = run(load_recipe(None, overrides), out=tmp_path / "b").summary
    sample = a.sample
    assert sample is not None
    assert sample.text.startswith(sample.prompt) and len(sample.text) == len(sample.prompt) + 300
    assert sample == b.sample  # same seed, same weights -> the same text
    assert a.test.value("bpc") == pytest.approx(a.test.value("nll") / math.log(2.0))


def test_report_shows_samples_escaped_and_in_variant_order() -> None:
    pytest.importorskip("matplotlib", reason="the report needs the tricklab[plots] extra")
    from tricklab.lab.report import render_report
    from tricklab.lab.summary import AblationSetting, AblationSummary, SeededSample, TextSample

    def page(samples: dict[str, SeededSample]) -> str:
        summary = AblationSummary(["gpt", "lstm"], [], {"gpt": [0], "lstm": [0]}, {}, {}, samples=samples)
        return render_report(summary, {}, AblationSetting(task="shakespeare-char", model="gpt"))

    html = page({"lstm": SeededSample(0, TextSample("A", "A <b>&", 0.8, 10)),
                 "gpt": SeededSample(0, TextSample("A", "A two", 0.8, 10))})
    section = html[html.index("<h2>Samples</h2>"):]
    assert section.index("<h3>gpt</h3>") < section.index("<h3>lstm</h3>")
    assert "A &lt;b&gt;&amp;" in section and "<b>&" not in html
    assert "<h2>Samples</h2>" not in page({})
