"""Technique cards: the summary's numbers and verdicts, negative results kept, one seed without invented
intervals, JSON that round-trips. The summary is written by hand in the ``ablation_summary`` format."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from tricklab.lab.cards import card_data, format_effect, format_value, safe_name, write_cards

SETTING: dict[str, Any] = {
    "task": "mnist1d", "model": "cnn", "budget": {"steps": 6000}, "seeds": [0, 1, 2],
    "machine": {"cpu": "Test CPU", "threads": 1, "torch": "2.13.0", "python": "3.11.2"},
    "recipe_hash": "deadbeef", "baseline_recipe": {"task": "mnist1d"},
}


def _per(mean: float, hw: float | None, n: int = 3) -> dict[str, Any]:
    return {"n": n, "mean": mean, "std": None if hw is None else hw, "ci_low": None if hw is None else mean - hw,
            "ci_high": None if hw is None else mean + hw, "half_width": hw}


def summary_3_seeds() -> dict[str, Any]:
    return {
        "variants": ["baseline", "ema", "grad_clip"],
        "metrics": [
            {"key": "accuracy", "label": "test accuracy", "higher_is_better": True, "fmt": ".4f"},
            {"key": "ece", "label": "ECE", "higher_is_better": False, "fmt": ".4f"},
            {"key": "parameters", "label": "parameters", "higher_is_better": False, "fmt": "d"},
        ],
        "seeds": {"baseline": [0, 1, 2], "ema": [0, 1, 2], "grad_clip": [0, 1, 2]},
        "per_variant": {
            "baseline": {"accuracy": _per(0.8512, 0.0061), "ece": _per(0.0421, 0.0033), "parameters": _per(12345, 0.0)},
            "ema": {"accuracy": _per(0.8524, 0.0049), "ece": _per(0.0310, 0.0021), "parameters": _per(12345, 0.0)},
            "grad_clip": {"accuracy": _per(0.8301, 0.0072), "ece": _per(0.0455, 0.0040), "parameters": _per(12345, 0.0)},
        },
        "paired": {
            "ema": {
                "accuracy": {"n": 3, "mean_diff": 0.0012, "std_diff": 0.0017, "ci_low": -0.0031, "ci_high": 0.0055,
                             "t": 1.22, "p_value": 0.347, "verdict": "no clear effect"},
                "ece": {"n": 3, "mean_diff": -0.0111, "std_diff": 0.0012, "ci_low": -0.0141, "ci_high": -0.0081,
                        "t": -16.0, "p_value": 0.0039, "verdict": "helps"},
                "parameters": {"n": 3, "mean_diff": 0.0, "std_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                               "t": None, "p_value": None, "verdict": "no clear effect"},
            },
            "grad_clip": {
                "accuracy": {"n": 3, "mean_diff": -0.0211, "std_diff": 0.0030, "ci_low": -0.0286, "ci_high": -0.0136,
                             "t": -12.2, "p_value": 0.0067, "verdict": "hurts"},
                "ece": {"n": 3, "mean_diff": 0.0034, "std_diff": 0.0040, "ci_low": -0.0065, "ci_high": 0.0133,
                        "t": 1.47, "p_value": 0.279, "verdict": "no clear effect"},
                "parameters": {"n": 3, "mean_diff": 0.0, "std_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0,
                               "t": None, "p_value": None, "verdict": "no clear effect"},
            },
        },
        "equal_time": {
            "ema": {"seconds": 41.7, "n": 3, "mean_diff": -0.0023, "ci_low": -0.0080, "ci_high": 0.0034, "t": -1.7,
                    "p_value": 0.23, "verdict": "no clear effect"},
            "grad_clip": {"seconds": 40.2, "n": 3, "mean_diff": -0.0190, "ci_low": -0.0270, "ci_high": -0.0110,
                          "t": -10.2, "p_value": 0.0095, "verdict": "hurts"},
        },
        "per_class_f1": {},
        "reliability": {},
    }


def summary_1_seed() -> dict[str, Any]:
    s = summary_3_seeds()
    s["variants"] = ["baseline", "ema"]
    s["seeds"] = {"baseline": [0], "ema": [0]}
    s["per_variant"] = {"baseline": {"accuracy": _per(0.8512, None, 1)}, "ema": {"accuracy": _per(0.8601, None, 1)}}
    s["metrics"] = s["metrics"][:1]
    s["paired"] = {"ema": {"accuracy": {"n": 1, "mean_diff": 0.0089, "std_diff": None, "ci_low": None, "ci_high": None,
                                        "t": None, "p_value": None, "verdict": "cannot tell (1 seed)"}}}
    s["equal_time"] = {"ema": {"seconds": 40.0, "n": 1, "mean_diff": 0.0050, "ci_low": None, "ci_high": None, "t": None,
                               "p_value": None, "verdict": "cannot tell (1 seed)"}}
    return s


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
    assert "At equal training time (40.2 s), accuracy hurts (-0.0190 [-0.0270, -0.0110])" in md
    card = json.loads((tmp_path / "grad_clip.json").read_text())
    acc = next(e for e in card["effects"] if e["metric"] == "accuracy")
    assert acc["verdict"] == "hurts" and acc["mean_diff"] == -0.0211


def test_json_round_trips_the_summary_numbers(tmp_path: Path) -> None:
    summary = summary_3_seeds()
    write_cards(summary, SETTING, tmp_path)
    card = json.loads((tmp_path / "ema.json").read_text())
    assert card == json.loads(json.dumps(card_data(summary, SETTING, "ema")))
    assert card["variant"] == "ema" and card["baseline"] == "baseline" and card["seeds"] == [0, 1, 2]
    assert card["setting"]["machine"] == SETTING["machine"] and "baseline_recipe" not in card["setting"]
    for e in card["effects"]:
        d = summary["paired"]["ema"][e["metric"]]
        for key in ("n", "mean_diff", "std_diff", "ci_low", "ci_high", "t", "p_value", "verdict"):
            assert e[key] == d[key], (e["metric"], key)
        assert e["baseline_mean"] == summary["per_variant"]["baseline"][e["metric"]]["mean"]
        assert e["technique_mean"] == summary["per_variant"]["ema"][e["metric"]]["mean"]
    assert card["equal_time"] == summary["equal_time"]["ema"]
    assert card["verdict_sentence"] in (tmp_path / "ema.md").read_text()


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
    summary["paired"]["ema"]["parameters"]["t"] = math.nan  # zero variance of differences: t undefined
    write_cards(summary, SETTING, tmp_path)
    text = (tmp_path / "ema.json").read_text()
    assert "NaN" not in text
    params = next(e for e in json.loads(text)["effects"] if e["metric"] == "parameters")
    assert params["t"] is None


def test_unsafe_variant_names_stay_inside_the_folder(tmp_path: Path) -> None:
    assert safe_name("ema+grad_clip") == "ema+grad_clip"
    assert safe_name("../evil") == ".._evil" and safe_name("..") == "_.."
    summary = summary_3_seeds()
    summary["variants"][1] = "a/b"
    summary["paired"]["a/b"] = summary["paired"].pop("ema")
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
