"""Technique cards: the summary's numbers and verdicts, negative results kept, one seed without invented
intervals, JSON that round-trips, and every committed card reads back into a Card that writes the same JSON.
The summaries are built with the constructors of ``tricklab.lab.summary``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from tricklab.lab.cards import Card, card_data, card_json, write_cards
from tricklab.lab.format import format_effect, format_value, safe_name
from tricklab.lab.metrics import MetricInfo
from tricklab.lab.stats import Description, PairedDifference
from tricklab.lab.summary import AblationSetting, AblationSummary, EqualTime

SETTING = AblationSetting(
    task="mnist1d", model="cnn", budget={"steps": 6000}, seeds=[0, 1, 2],
    machine={"cpu": "Test CPU", "threads": 1, "torch": "2.13.0", "python": "3.11.2"},
    recipe_hash="deadbeef", baseline_recipe={"task": "mnist1d"},
)
METRICS = [MetricInfo("accuracy", "test accuracy", True, ".4f"), MetricInfo("ece", "ECE", False, ".4f"),
           MetricInfo("parameters", "parameters", False, "d", source="run", kind="size")]


def _per(mean: float, hw: float | None, n: int = 3) -> Description:
    return Description(n, mean, hw, None if hw is None else mean - hw, None if hw is None else mean + hw, hw)


def summary_3_seeds() -> AblationSummary:
    same = PairedDifference(3, 0.0, 0.0, 0.0, 0.0, None, None, "no clear effect")
    return AblationSummary(
        variants=["baseline", "ema", "grad_clip"],
        metrics=list(METRICS),
        seeds={"baseline": [0, 1, 2], "ema": [0, 1, 2], "grad_clip": [0, 1, 2]},
        per_variant={
            "baseline": {"accuracy": _per(0.8512, 0.0061), "ece": _per(0.0421, 0.0033), "parameters": _per(12345, 0.0)},
            "ema": {"accuracy": _per(0.8524, 0.0049), "ece": _per(0.0310, 0.0021), "parameters": _per(12345, 0.0)},
            "grad_clip": {"accuracy": _per(0.8301, 0.0072), "ece": _per(0.0455, 0.0040),
                          "parameters": _per(12345, 0.0)},
        },
        paired={
            "ema": {
                "accuracy": PairedDifference(3, 0.0012, 0.0017, -0.0031, 0.0055, 1.22, 0.347, "no clear effect"),
                "ece": PairedDifference(3, -0.0111, 0.0012, -0.0141, -0.0081, -16.0, 0.0039, "helps"),
                "parameters": same,
            },
            "grad_clip": {
                "accuracy": PairedDifference(3, -0.0211, 0.0030, -0.0286, -0.0136, -12.2, 0.0067, "hurts"),
                "ece": PairedDifference(3, 0.0034, 0.0040, -0.0065, 0.0133, 1.47, 0.279, "no clear effect"),
                "parameters": same,
            },
        },
        equal_time={
            "ema": EqualTime(PairedDifference(3, -0.0023, None, -0.0080, 0.0034, -1.7, 0.23, "no clear effect"),
                             [41.7, 41.7, 41.7], [0, 1, 2]),
            "grad_clip": EqualTime(PairedDifference(3, -0.0190, None, -0.0270, -0.0110, -10.2, 0.0095, "hurts"),
                                   [40.2, 40.2, 40.2], [0, 1, 2]),
        },
    )


def summary_1_seed() -> AblationSummary:
    one = "cannot tell (1 seed)"
    return AblationSummary(
        variants=["baseline", "ema"],
        metrics=METRICS[:1],
        seeds={"baseline": [0], "ema": [0]},
        per_variant={"baseline": {"accuracy": _per(0.8512, None, 1)}, "ema": {"accuracy": _per(0.8601, None, 1)}},
        paired={"ema": {"accuracy": PairedDifference(1, 0.0089, None, None, None, None, None, one)}},
        equal_time={"ema": EqualTime(PairedDifference(1, 0.0050, None, None, None, None, None, one), [40.0], [0])},
    )


def test_cards_written_for_each_technique_only(tmp_path: Path) -> None:
    paths = write_cards(summary_3_seeds(), SETTING, tmp_path / "cards")
    assert sorted(p.name for p in paths) == ["ema.json", "ema.md", "grad_clip.json", "grad_clip.md"]
    assert sorted(p.name for p in (tmp_path / "cards").iterdir()) == sorted(p.name for p in paths)  # no temp files


def test_markdown_carries_the_summary_numbers_and_verdicts(tmp_path: Path) -> None:
    write_cards(summary_3_seeds(), SETTING, tmp_path)
    md = (tmp_path / "ema.md").read_text()
    # baseline and technique means, differences with intervals, p-values: all formatted from the summary
    for text in ("0.8512", "0.8524", "+0.0012 [-0.0031, 0.0055]", "0.347", "-0.0111 [-0.0141, -0.0081]",
                 "0.0039", "12345", "no clear effect", "helps", "41.7", "-0.0023 [-0.0080, 0.0034]"):
        assert text in md, text
    for text in ("mnist1d", "cnn", "Test CPU", "deadbeef", '"steps": 6000', "[0, 1, 2]"):
        assert text in md, text
    assert ("On mnist1d/cnn over 3 seeds, ema: test accuracy no clear effect (+0.0012 [-0.0031, 0.0055]); "
            "ECE helps (-0.0111 [-0.0141, -0.0081])") in md
    assert "cannot be computed" not in md


def test_negative_results_are_written_like_positive_ones(tmp_path: Path) -> None:
    write_cards(summary_3_seeds(), SETTING, tmp_path)
    md = (tmp_path / "grad_clip.md").read_text()
    assert "grad_clip: test accuracy hurts (-0.0211 [-0.0286, -0.0136])" in md
    assert "0.8301" in md and "0.0067" in md
    assert "At equal training time (40.2, 40.2, 40.2 s), accuracy hurts (-0.0190 [-0.0270, -0.0110])" in md
    card = json.loads((tmp_path / "grad_clip.json").read_text())
    acc = next(e for e in card["effects"] if e["metric"] == "accuracy")
    assert acc["verdict"] == "hurts" and acc["mean_diff"] == -0.0211


def test_json_round_trips_the_summary_numbers(tmp_path: Path) -> None:
    summary = summary_3_seeds()
    write_cards(summary, SETTING, tmp_path)
    card = json.loads((tmp_path / "ema.json").read_text())
    assert card == json.loads(json.dumps(card_data(summary, SETTING, "ema").to_dict()))
    assert card["variant"] == "ema" and card["baseline"] == "baseline" and card["seeds"] == [0, 1, 2]
    assert card["setting"]["machine"] == SETTING.machine and "baseline_recipe" not in card["setting"]
    for e in card["effects"]:
        d = summary.paired["ema"][e["metric"]]
        for key in ("n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "p_value", "verdict"):
            assert e[key] == getattr(d, key), (e["metric"], key)
        assert e["baseline_mean"] == summary.per_variant["baseline"][e["metric"]].mean
        assert e["technique_mean"] == summary.per_variant["ema"][e["metric"]].mean
    assert card["equal_time"] == summary.equal_time["ema"].to_dict()
    assert card["verdict_sentence"] in (tmp_path / "ema.md").read_text()
    assert Card.from_dict(card).to_dict() == card


def test_one_seed_says_the_interval_cannot_be_computed_and_invents_nothing(tmp_path: Path) -> None:
    write_cards(summary_1_seed(), SETTING, tmp_path)
    md = (tmp_path / "ema.md").read_text()
    assert "over 1 seed, ema: test accuracy cannot tell (1 seed) (+0.0089 (interval cannot be computed))" in md
    assert "confidence intervals cannot be computed" in md
    card = json.loads((tmp_path / "ema.json").read_text())
    assert card["intervals_computable"] is False
    acc = card["effects"][0]
    assert acc["ci_low"] is None and acc["ci_high"] is None and acc["p_value"] is None
    assert card["equal_time"]["ci_low"] is None
    # no bracketed interval anywhere in the card: nothing was filled in
    assert re.search(r"\[[-+]?\d+\.\d+,", md) is None


def test_non_finite_numbers_become_null_in_json(tmp_path: Path) -> None:
    summary = summary_3_seeds()
    # zero variance of differences: t undefined
    summary.paired["ema"]["parameters"] = PairedDifference(3, 0.0, 0.0, 0.0, 0.0, math.nan, None, "no clear effect")
    write_cards(summary, SETTING, tmp_path)
    text = (tmp_path / "ema.json").read_text()
    assert "NaN" not in text
    params = next(e for e in json.loads(text)["effects"] if e["metric"] == "parameters")
    assert params["t"] is None


def test_unsafe_variant_names_stay_inside_the_folder(tmp_path: Path) -> None:
    assert safe_name("ema+grad_clip") == "ema+grad_clip"
    assert safe_name("../evil") == ".._evil" and safe_name("..") == "_.."
    summary = summary_3_seeds()
    summary.variants[1] = "a/b"
    summary.paired["a/b"] = summary.paired.pop("ema")
    paths = write_cards(summary, SETTING, tmp_path)
    assert all(p.parent == tmp_path for p in paths) and (tmp_path / "a_b.md").exists()


@pytest.mark.parametrize(("value", "fmt", "signed", "expected"), [
    (0.00123, ".4f", True, "+0.0012"), (-0.5, ".2f", True, "-0.50"), (12345.0, "d", False, "12345"),
    (12.5, "d", False, "12.5"), (None, ".4f", False, "n/a"), (math.nan, ".4f", False, "n/a"),
])
def test_format_value(value: float | None, fmt: str, signed: bool, expected: str) -> None:
    assert format_value(value, fmt, signed) == expected


def test_format_effect_without_bounds_says_so() -> None:
    assert format_effect(0.01, None, None, ".3f") == "+0.010 (interval cannot be computed)"
    assert format_effect(0.01, -0.002, 0.022, ".3f") == "+0.010 [-0.002, 0.022]"


ALL_CARDS = sorted((Path(__file__).resolve().parents[2] / "docs" / "cards").glob("*/*.json"))
# Ablation cards (written by `tricklab ablate --card`) carry "variant" and "effects"; the
# paradigm cards (uncertainty, explanations, RL, ...) are written by their own benchmark scripts
# with their own shape, checked below only for the command that reproduces them.
CARDS = [p for p in ALL_CARDS if {"variant", "effects"} <= set(json.loads(p.read_text()))]


def _command(data: dict[str, object]) -> object:
    meta = data.get("meta")
    return data.get("command") or (meta.get("command") if isinstance(meta, dict) else None)


@pytest.mark.parametrize(
    "path", [p for p in ALL_CARDS if p not in CARDS], ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_paradigm_cards_name_the_command_that_made_them(path: Path) -> None:
    # Ablation cards are regenerated by tests/reference/regenerate_cards.py from their recipe.
    command = _command(json.loads(path.read_text()))
    assert isinstance(command, str) and command.strip(), f"{path} does not say how to regenerate it"


@pytest.mark.parametrize("path", CARDS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_committed_cards_read_back_and_write_the_same_json(path: Path) -> None:
    text = path.read_text()
    card = Card.from_dict(json.loads(text))
    assert card_json(card) == text  # every number, the verdict sentence and the layout
