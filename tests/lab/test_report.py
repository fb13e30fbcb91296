"""The ablation report: every plot present as inline SVG, nothing fetched from the network, verdict colours,
the one-seed note, and (with Debian's chromium) that a real browser renders every plot without a console
message. The summary here is built with the constructors of ``tricklab.lab.summary``."""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib", reason="the report needs the tricklab[plots] extra")

from tricklab.errors import UserError  # noqa: E402
from tricklab.lab.format import format_effect, format_p, format_value  # noqa: E402
from tricklab.lab.metrics import MetricInfo  # noqa: E402
from tricklab.lab.report import PLOT_NAMES, VERDICT_COLOURS, pareto_front, render_report, write_report  # noqa: E402
from tricklab.lab.stats import Description, PairedDifference  # noqa: E402
from tricklab.lab.summary import AblationSetting, AblationSummary, EqualTime, Reliability  # noqa: E402


METRICS: list[MetricInfo] = [
    MetricInfo("accuracy", "test accuracy", True, ".4f"),
    MetricInfo("macro_f1", "macro F1", True, ".4f"),
    MetricInfo("nll", "NLL", False, ".4f"),
    MetricInfo("ece", "ECE", False, ".4f"),
    MetricInfo("brier", "Brier", False, ".4f"),
    MetricInfo("train_seconds", "training time (s)", False, ".2f", source="run", kind="timing"),
    MetricInfo("latency_ms", "latency (ms)", False, ".3f", source="run", kind="timing"),
    MetricInfo("parameters", "parameters", False, "d", source="run", kind="size"),
    MetricInfo("model_size_bytes", "model size (bytes)", False, "d", source="run", kind="size"),
    MetricInfo("steps_to_target", "steps to target", False, ".0f", source="run", kind="steps"),
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


def _per(mean: float, n: int) -> Description:
    if n < 2:
        return Description(n, mean, None, None, None, None)
    hw = abs(mean) * 0.01 + 0.001
    return Description(n, mean, hw, mean - hw, mean + hw, hw)


def _diff(diff: float, verdict: str, n_seeds: int) -> PairedDifference:
    if n_seeds < 2:
        return PairedDifference(1, diff, None, None, None, None, None, "cannot tell (1 seed)")
    hw = 0.4 * abs(diff) if verdict != "no clear effect" else 3 * abs(diff) + 0.001
    unclear = verdict == "no clear effect"
    return PairedDifference(n_seeds, diff, hw / 2, diff - hw, diff + hw, 0.3 if unclear else 5.0,
                            0.71 if unclear else 0.012, verdict)


def _equal_time(seconds: float, diff: float, lo: float, hi: float, t: float, p: float, n_seeds: int) -> EqualTime:
    many = n_seeds > 1
    d = PairedDifference(n_seeds, diff, None, lo if many else None, hi if many else None, t if many else None,
                         p if many else None, "no clear effect" if many else "cannot tell (1 seed)")
    return EqualTime(d, [seconds] * n_seeds, list(range(n_seeds)))


def make_summary(n_seeds: int = 3, reliability: bool = True) -> AblationSummary:
    variants = ["baseline", *EFFECTS]
    per_variant = {v: {m.key: _per(BASE_MEANS[m.key] + EFFECTS.get(v, {}).get(m.key, (0.0, ""))[0], n_seeds)
                       for m in METRICS} for v in variants}
    paired = {v: {m.key: _diff(*EFFECTS[v].get(m.key, (0.0005, "no clear effect")), n_seeds) for m in METRICS}
              for v in variants[1:]}
    edges = [i / 15 for i in range(16)]
    rel = {}
    for k, v in enumerate(variants):
        conf = [None if i < 5 else (edges[i] + edges[i + 1]) / 2 for i in range(15)]  # low bins empty
        acc = [None if c is None else max(0.0, c - 0.05 + 0.02 * k) for c in conf]
        rel[v] = Reliability(edges, conf, acc, [0 if c is None else 10 * i for i, c in enumerate(conf)])
    return AblationSummary(
        variants=variants,
        metrics=list(METRICS),
        seeds={v: list(range(n_seeds)) for v in variants},
        per_variant=per_variant,
        paired=paired,
        equal_time={"ema": _equal_time(18.5, -0.0040, -0.0090, 0.0010, -1.4, 0.29, n_seeds),
                    "label_smoothing": _equal_time(19.9, 0.0010, -0.0030, 0.0050, 0.5, 0.66, n_seeds)},
        per_class_f1={v: [0.9 - 0.03 * c + 0.01 * k for c in range(10)] for k, v in enumerate(variants)},
        reliability=rel if reliability else {},
    )


def make_curves(variants: list[str], n_seeds: int = 3) -> dict[str, list[list[dict[str, Any]]]]:
    curves: dict[str, list[list[dict[str, Any]]]] = {}
    for k, v in enumerate(variants):
        runs = []
        for seed in range(n_seeds):
            rows = []
            for i in range(1, 11):
                step = 100 * i
                # per-seed speed differs, so the seconds axis needs the interpolation onto a common grid
                row: dict[str, Any] = {"step": step, "epoch": step // 40,
                                       "seconds": step * (0.02 + 0.001 * seed + 0.002 * k),
                                       "lr": 0.01, "train_loss": 2.0 / (1 + 0.3 * i) + 0.01 * seed}
                if i % 2 == 0:
                    row.update({"eval_accuracy": 0.5 + 0.035 * i + 0.005 * k, "eval_loss": 1.0 / i})
                rows.append(row)
            runs.append(rows)
        curves[v] = runs
    return curves


SETTING = AblationSetting(
    task="mnist1d", model="cnn", budget={"steps": 1000}, seeds=[0, 1, 2],
    machine={"cpu": "test cpu", "threads": 1, "torch": "2.13.0", "python": "3.11"},
    recipe_hash="abc123", baseline_recipe={"task": "mnist1d", "model": {"name": "cnn"}, "note": "<b>&"},
)


@pytest.fixture(scope="module")
def page() -> str:
    summary = make_summary()
    return render_report(summary, make_curves(summary.variants), SETTING)


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
    cells = re.findall(r'<td class="verdict" data-verdict="([^"]*)" title="([^"]*)" '
                       r'style="background-color:(#[0-9a-f]+)">([^<]*)</td>', page)
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
    d = summary.paired["ema"]["accuracy"]
    assert cells[0][0] == "helps"
    assert cells[0][3] == f"{d.mean_diff:+.4f} [{d.ci_low:.4f}, {d.ci_high:.4f}]"


def test_text_is_escaped_and_setting_shown(page: str) -> None:
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert "mnist1d/cnn" in page and "abc123" in page and "test cpu" in page
    assert "cannot be computed" not in page  # three seeds: every interval exists


def test_one_seed_summary_says_intervals_cannot_be_computed() -> None:
    summary = make_summary(n_seeds=1)
    text = render_report(summary, make_curves(summary.variants, n_seeds=1), SETTING)
    assert 'class="note seed-note"' in text and "cannot be computed" in text
    assert set(_figures(text)) == set(PLOT_NAMES)  # one curve per variant still draws, without a band
    assert "cannot tell (1 seed)" in text
    assert "[" not in re.search(r'<table class="verdicts">.*?</table>', text, flags=re.S).group(0)  # no invented CI


def test_plots_without_data_are_left_out_with_a_note() -> None:
    summary = make_summary(reliability=False)
    text = render_report(summary, {}, SETTING)  # no curves either
    assert set(_figures(text)) == {"verdict", "pareto", "per-class-f1"}
    assert "No data for the reliability plot" in text


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = {"a": (10.0, 0.80), "b": (12.0, 0.85), "c": (12.0, 0.84), "d": (20.0, 0.85), "e": (8.0, 0.70)}
    assert pareto_front(points) == ["e", "a", "b"]


def test_write_report_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    summary = make_summary()
    (tmp_path / "report.html").write_text("old")
    path = write_report(tmp_path, summary, make_curves(summary.variants), SETTING)
    assert path == tmp_path / "report.html" and path.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
    # a failing render must keep the previous report in place
    with pytest.raises(ValueError, match="no variants"):
        write_report(tmp_path, AblationSummary([], [], {}, {}, {}), {}, SETTING)
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
    path = write_report(tmp_path / "out", summary, make_curves(summary.variants), SETTING)
    rendered, expected, console = browser.plots(path)
    assert expected >= 8
    assert rendered == expected
    assert console == []


def test_browser_check_fails_when_a_plot_is_missing_its_svg(tmp_path: Path, browser) -> None:
    # the counter must notice a figure whose drawing is gone, or the test above could never fail
    summary = make_summary()
    text = render_report(summary, make_curves(summary.variants), SETTING)
    broken = re.sub(r'(<figure class="plot" data-plot="pareto">)<svg.*?</svg>', r"\1", text, count=1, flags=re.S)
    assert broken != text
    path = tmp_path / "broken.html"
    path.write_text(broken)
    rendered, expected, _ = browser.plots(path)
    assert (rendered, expected) == (7, 8)


def test_averaging_table_shows_averaged_against_final_weights() -> None:
    v = make_summary().variants[1]
    helps = PairedDifference(3, 0.0123, None, 0.0021, 0.0225, None, 0.03, "helps")
    summary = dataclasses.replace(make_summary(), averaging={v: {"accuracy": helps}})
    text = render_report(summary, make_curves(summary.variants), SETTING)
    table = re.search(r'<table class="averaging">(.*?)</table>', text, re.S)
    assert table is not None and html.escape(v) in table.group(1)
    assert "+0.0123" in table.group(1) and VERDICT_COLOURS["helps"] in table.group(1)
    assert '<table class="averaging">' not in render_report(make_summary(), make_curves(summary.variants), SETTING)


def _table_rows(page: str, name: str) -> list[list[str]]:
    """The cell texts of each body row of ``<table class="name">`` (markup stripped, entities decoded)."""
    table = re.search(rf'<table class="{name}">(.*?)</table>', page, re.S)
    assert table is not None, name
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)[1:]  # the first row is the header
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)]
            for r in rows]


def test_tables_show_the_summary_numbers(page: str) -> None:
    # every cell of the three tables, against the summary's numbers formatted with the metric's spec
    summary = make_summary()
    verdicts = _table_rows(page, "verdicts")
    assert [r[0] for r in verdicts] == summary.techniques
    for row, tech in zip(verdicts, summary.techniques):
        for cell, m in zip(row[1:], summary.metrics, strict=True):
            d = summary.paired[tech][m.key]
            assert cell == format_effect(d.mean_diff, d.ci_low, d.ci_high, m.fmt), (tech, m.key)
    per_variant = _table_rows(page, "per-variant")
    assert [r[0] for r in per_variant] == summary.variants
    for row, v in zip(per_variant, summary.variants):
        assert row[1] == "3"
        for cell, m in zip(row[2:], summary.metrics, strict=True):
            s = summary.per_variant[v][m.key]
            assert cell == f"{format_value(s.mean, m.fmt)} ± {format_value(s.half_width, m.fmt)}", (v, m.key)
    equal = _table_rows(page, "equal-time")
    for row, tech in zip(equal, ["ema", "label_smoothing"], strict=True):
        eq = summary.equal_time[tech]
        d = eq.difference
        assert row == [tech, format_value(eq.seconds, ".1f"), str(d.n), format_effect(d.mean_diff, d.ci_low, d.ci_high,
                       ".4f"), format_value(d.t, ".3g"), format_p(d.p_value), d.verdict]
