"""The ablation report: every plot present as inline SVG, nothing fetched from the network, verdict colours,
the one-seed note, and (with Debian's chromium) that a real browser renders every plot without a console
message. The summary here is written by hand in the format of ``tricklab.lab.stats.ablation_summary``."""

from __future__ import annotations

import copy
import html
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="the report needs the tricklab[plots] extra")

from tricklab.errors import UserError  # noqa: E402
from tricklab.lab.report import PLOT_NAMES, VERDICT_COLOURS, pareto_front, render_report, write_report  # noqa: E402


METRICS: list[dict[str, Any]] = [
    {"key": "accuracy", "label": "test accuracy", "higher_is_better": True, "fmt": ".4f"},
    {"key": "macro_f1", "label": "macro F1", "higher_is_better": True, "fmt": ".4f"},
    {"key": "nll", "label": "NLL", "higher_is_better": False, "fmt": ".4f"},
    {"key": "ece", "label": "ECE", "higher_is_better": False, "fmt": ".4f"},
    {"key": "brier", "label": "Brier", "higher_is_better": False, "fmt": ".4f"},
    {"key": "train_seconds", "label": "training time (s)", "higher_is_better": False, "fmt": ".2f"},
    {"key": "latency_ms", "label": "latency (ms)", "higher_is_better": False, "fmt": ".3f"},
    {"key": "parameters", "label": "parameters", "higher_is_better": False, "fmt": "d"},
    {"key": "model_size_bytes", "label": "model size (bytes)", "higher_is_better": False, "fmt": "d"},
    {"key": "steps_to_target", "label": "steps to target", "higher_is_better": False, "fmt": ".0f"},
]

BASE_MEANS = {"accuracy": 0.8500, "macro_f1": 0.8400, "nll": 0.4500, "ece": 0.0400, "brier": 0.2200,
              "train_seconds": 20.0, "latency_ms": 0.500, "parameters": 12000, "model_size_bytes": 48000,
              "steps_to_target": 3000.0}

# technique -> metric -> (mean_diff, verdict); the rest "no clear effect". The verdicts are chosen to cover
# helps, hurts and unclear so that the colour check sees all three.
EFFECTS: dict[str, dict[str, tuple[float, str]]] = {
    "ema": {"accuracy": (0.0123, "helps"), "nll": (-0.0400, "helps"), "train_seconds": (1.5, "hurts")},
    "label_smoothing": {"accuracy": (0.0012, "no clear effect"), "ece": (0.0210, "hurts"),
                        "macro_f1": (-0.0150, "hurts")},
}


def _per(mean: float, n: int) -> dict[str, Any]:
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "ci_low": None, "ci_high": None, "half_width": None}
    hw = abs(mean) * 0.01 + 0.001
    return {"n": n, "mean": mean, "std": hw, "ci_low": mean - hw, "ci_high": mean + hw, "half_width": hw}


def make_summary(n_seeds: int = 3) -> dict[str, Any]:
    variants = ["baseline", *EFFECTS]
    seeds = list(range(n_seeds))
    per_variant: dict[str, Any] = {}
    paired: dict[str, Any] = {}
    for v in variants:
        per_variant[v] = {}
        for m in METRICS:
            diff = EFFECTS.get(v, {}).get(m["key"], (0.0, ""))[0]
            per_variant[v][m["key"]] = _per(BASE_MEANS[m["key"]] + diff, n_seeds)
    for v in variants[1:]:
        paired[v] = {}
        for m in METRICS:
            diff, verdict = EFFECTS[v].get(m["key"], (0.0005, "no clear effect"))
            if n_seeds < 2:
                paired[v][m["key"]] = {"n": 1, "mean_diff": diff, "std_diff": None, "ci_low": None, "ci_high": None,
                                       "t": None, "p_value": None, "verdict": "cannot tell (1 seed)"}
                continue
            hw = 0.4 * abs(diff) if verdict != "no clear effect" else 3 * abs(diff) + 0.001
            paired[v][m["key"]] = {"n": n_seeds, "mean_diff": diff, "std_diff": hw / 2, "ci_low": diff - hw,
                                   "ci_high": diff + hw, "t": 5.0 if verdict != "no clear effect" else 0.3,
                                   "p_value": 0.012 if verdict != "no clear effect" else 0.71, "verdict": verdict}
    equal_time = {
        "ema": {"seconds": 18.5, "n": n_seeds, "mean_diff": -0.0040, "ci_low": -0.0090 if n_seeds > 1 else None,
                "ci_high": 0.0010 if n_seeds > 1 else None, "t": -1.4 if n_seeds > 1 else None,
                "p_value": 0.29 if n_seeds > 1 else None,
                "verdict": "no clear effect" if n_seeds > 1 else "cannot tell (1 seed)"},
        "label_smoothing": {"seconds": 19.9, "n": n_seeds, "mean_diff": 0.0010, "ci_low": -0.0030 if n_seeds > 1 else None,
                            "ci_high": 0.0050 if n_seeds > 1 else None, "t": 0.5 if n_seeds > 1 else None,
                            "p_value": 0.66 if n_seeds > 1 else None,
                            "verdict": "no clear effect" if n_seeds > 1 else "cannot tell (1 seed)"},
    }
    edges = [i / 15 for i in range(16)]
    reliability = {}
    for k, v in enumerate(variants):
        conf = [None if i < 5 else (edges[i] + edges[i + 1]) / 2 for i in range(15)]  # low bins empty
        acc = [None if c is None else max(0.0, c - 0.05 + 0.02 * k) for c in conf]
        reliability[v] = {"bin_edges": edges, "confidence": conf, "accuracy": acc,
                          "count": [0 if c is None else 10 * i for i, c in enumerate(conf)]}
    return {
        "variants": variants,
        "metrics": copy.deepcopy(METRICS),
        "seeds": {v: list(seeds) for v in variants},
        "per_variant": per_variant,
        "paired": paired,
        "equal_time": equal_time,
        "per_class_f1": {v: [0.9 - 0.03 * c + 0.01 * k for c in range(10)] for k, v in enumerate(variants)},
        "reliability": reliability,
    }


def make_curves(variants: list[str], n_seeds: int = 3) -> dict[str, list[list[dict[str, Any]]]]:
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for k, v in enumerate(variants):
        runs = []
        for seed in range(n_seeds):
            rows = []
            for i in range(1, 11):
                step = 100 * i
                # per-seed speed differs, so the seconds axis needs the interpolation onto a common grid
                row: dict[str, Any] = {"step": step, "epoch": step // 40, "seconds": step * (0.02 + 0.001 * seed + 0.002 * k),
                                       "lr": 0.01, "train_loss": 2.0 / (1 + 0.3 * i) + 0.01 * seed}
                if i % 2 == 0:
                    row.update({"eval_accuracy": 0.5 + 0.035 * i + 0.005 * k, "eval_loss": 1.0 / i})
                rows.append(row)
            runs.append(rows)
        curves[v] = runs
    return curves


SETTING: dict[str, Any] = {
    "task": "mnist1d", "model": "cnn", "budget": {"steps": 1000}, "seeds": [0, 1, 2],
    "machine": {"cpu": "test cpu", "threads": 1, "torch": "2.13.0", "python": "3.11"},
    "recipe_hash": "abc123", "baseline_recipe": {"task": "mnist1d", "model": {"name": "cnn"}, "note": "<b>&"},
}


@pytest.fixture(scope="module")
def page() -> str:
    summary = make_summary()
    return render_report(summary, make_curves(summary["variants"]), SETTING)


def _figures(text: str) -> dict[str, str]:
    return dict(re.findall(r'<figure class="plot" data-plot="([^"]+)">(.*?)</figure>', text, flags=re.S))


def test_every_plot_is_an_inline_svg(page: str) -> None:
    figures = _figures(page)
    assert set(figures) == set(PLOT_NAMES) and len(PLOT_NAMES) == 8
    for name, content in figures.items():
        assert content.lstrip().startswith("<svg"), name
        assert "</svg>" in content, name
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page  # the SVG prolog is invalid inside HTML


def test_page_references_nothing_on_the_network(page: str) -> None:
    # the only allowed URLs are XML namespace names inside SVG, which browsers never fetch
    for match in re.finditer(r"https?://[^\s\"'<>)]*", page):
        before = page[max(0, match.start() - 20):match.start()]
        assert re.search(r'xmlns(:\w+)?="$', before), f"network reference {match.group(0)!r}"
    for attr in ("src=", "href=\"http", "@import", "url(http"):
        assert attr not in page.replace('xlink:href="#', ""), attr


def test_verdict_cells_are_coloured_by_verdict(page: str) -> None:
    cells = re.findall(r'<td class="verdict" data-verdict="([^"]*)" title="([^"]*)" style="background-color:(#[0-9a-f]+)">'
                       r"([^<]*)</td>", page)
    summary = make_summary()
    # 2 techniques x 10 metrics in the verdict table, plus 2 equal-time cells
    assert len(cells) == 2 * len(METRICS) + 2
    seen = set()
    for verdict, tip, colour, _text in cells:
        verdict = html.unescape(verdict)
        assert colour == VERDICT_COLOURS[verdict]
        assert html.unescape(tip).startswith(verdict)
        seen.add(verdict)
    assert {"helps", "hurts", "no clear effect"} <= seen
    assert VERDICT_COLOURS["helps"] != VERDICT_COLOURS["hurts"] != VERDICT_COLOURS["no clear effect"]
    # the first row is ema: accuracy helps with its exact numbers
    d = summary["paired"]["ema"]["accuracy"]
    assert cells[0][0] == "helps"
    assert cells[0][3] == f"{d['mean_diff']:+.4f} [{d['ci_low']:.4f}, {d['ci_high']:.4f}]"


def test_text_is_escaped_and_setting_shown(page: str) -> None:
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert "mnist1d/cnn" in page and "abc123" in page and "test cpu" in page
    assert "cannot be computed" not in page  # three seeds: every interval exists


def test_one_seed_summary_says_intervals_cannot_be_computed() -> None:
    summary = make_summary(n_seeds=1)
    text = render_report(summary, make_curves(summary["variants"], n_seeds=1), SETTING)
    assert 'class="note seed-note"' in text and "cannot be computed" in text
    assert set(_figures(text)) == set(PLOT_NAMES)  # one curve per variant still draws, without a band
    assert "cannot tell (1 seed)" in text
    assert "[" not in re.search(r'<table class="verdicts">.*?</table>', text, flags=re.S).group(0)  # no invented CI


def test_plots_without_data_are_left_out_with_a_note() -> None:
    summary = make_summary()
    del summary["reliability"]
    text = render_report(summary, {}, SETTING)  # no curves either
    assert set(_figures(text)) == {"verdict", "pareto", "per-class-f1"}
    assert "No data for the reliability plot" in text


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = {"a": (10.0, 0.80), "b": (12.0, 0.85), "c": (12.0, 0.84), "d": (20.0, 0.85), "e": (8.0, 0.70)}
    assert pareto_front(points) == ["e", "a", "b"]


def test_write_report_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    summary = make_summary()
    (tmp_path / "report.html").write_text("old")
    path = write_report(tmp_path, summary, make_curves(summary["variants"]), SETTING)
    assert path == tmp_path / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    # a failing render must keep the previous report in place
    with pytest.raises(KeyError):
        write_report(tmp_path, {"metrics": []}, {}, SETTING)
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(UserError, match=re.escape('pip install "tricklab[plots]"')):
        render_report(make_summary(), {}, SETTING)


# --------------------------------------------------------------------------------------- real browser
def test_console_check_catches_a_console_error(tmp_path: Path, browser) -> None:
    # proves the check below can fail: a page that logs an error must be caught
    scratch = tmp_path / "scratch.html"
    scratch.write_text('<!DOCTYPE html><html><body><script>console.error("deliberate");</script></body></html>')
    result = browser.run(scratch, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = browser.console_lines(result.stderr)
    assert len(lines) == 1 and "deliberate" in lines[0]


def test_chromium_renders_every_plot_without_console_messages(tmp_path: Path, browser) -> None:
    summary = make_summary()
    path = write_report(tmp_path / "out", summary, make_curves(summary["variants"]), SETTING)
    rendered, expected, console = browser.plots(path)
    assert expected >= 8
    assert rendered == expected
    assert console == []


def test_browser_check_fails_when_a_plot_is_missing_its_svg(tmp_path: Path, browser) -> None:
    # the counter must notice a figure whose drawing is gone, or the test above could never fail
    summary = make_summary()
    text = render_report(summary, make_curves(summary["variants"]), SETTING)
    broken = re.sub(r'(<figure class="plot" data-plot="pareto">)<svg.*?</svg>', r"\1", text, count=1, flags=re.S)
    assert broken != text
    path = tmp_path / "broken.html"
    path.write_text(broken)
    rendered, expected, _ = browser.plots(path)
    assert (rendered, expected) == (7, 8)


def test_averaging_table_shows_averaged_against_final_weights() -> None:
    summary = make_summary()
    v = summary["variants"][1]
    summary["averaging"] = {v: {"accuracy": {"n": 3, "mean_diff": 0.0123, "ci_low": 0.0021, "ci_high": 0.0225,
                                             "verdict": "helps", "p_value": 0.03}}}
    text = render_report(summary, make_curves(summary["variants"]), SETTING)
    table = re.search(r'<table class="averaging">(.*?)</table>', text, re.S)
    assert table is not None and html.escape(v) in table.group(1)
    assert "+0.0123" in table.group(1) and VERDICT_COLOURS["helps"] in table.group(1)
    assert '<table class="averaging">' not in render_report(make_summary(), make_curves(summary["variants"]), SETTING)
