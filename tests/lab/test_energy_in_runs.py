"""Every run records its training energy and carbon estimate (issue 18 item 6). Reference: the Green
Algorithms formula of tricklab.evaluate.energy, E = (t_cpu * P_core + t_wall * M * P_mem) * PUE, recomputed
here by hand from the figures the summary records; carbon = E [kWh] * grid intensity."""

from __future__ import annotations

from pathlib import Path

import pytest

from tricklab.evaluate.energy import WATTS_PER_GIB
from tricklab.lab.analysis import metrics_for
from tricklab.lab.recipe import load_recipe
from tricklab.lab.runner import run
from tricklab.lab.summary import RunSummary


def test_a_run_records_energy_and_carbon(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["task=digits", "model.name=mlp", "budget.steps=30", "eval_every=15"])
    summary = run(recipe, tmp_path / "run").summary
    e = summary.energy
    assert e is not None and e["method"] == "cpu-time" and e["cpu_seconds"] > 0
    joules = (e["cpu_seconds"] * e["watts_per_core"]
              + e["wall_seconds"] * e["peak_memory_gib"] * WATTS_PER_GIB) * e["pue"]
    assert e["energy_wh"] == pytest.approx(joules / 3600.0, rel=1e-9)
    assert e["co2e_g"] == pytest.approx(joules / 3.6e6 * e["grid_g_per_kwh"], rel=1e-9)
    assert e["energy_wh_low"] < e["energy_wh"] < e["energy_wh_high"]
    # the run-level metrics read it; the summary.json round trip keeps it
    assert summary.run_metrics()["energy_wh"] == e["energy_wh"]
    again = RunSummary.from_dict(summary.to_dict())
    assert again.energy == e and "energy" not in again.other
    # an ablation shows it (without a verdict); runs stored before energy was measured do not list it
    keys = [m.key for m in metrics_for([summary])]
    assert "energy_wh" in keys and "co2e_g" in keys
    old = RunSummary.from_dict({k: v for k, v in summary.to_dict().items() if k != "energy"})
    assert "energy_wh" not in [m.key for m in metrics_for([old])]
