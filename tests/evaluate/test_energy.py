"""Energy and carbon estimate. References: the closed form t_cpu * P + t_wall * M * 0.3725 W/GiB (times PUE) in
plain Python; RAPL counters read from a fake powercap tree (including a wraparound); the process's own CPU
time from resource.getrusage around a busy loop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tricklab.errors import UserError
from tricklab.evaluate.energy import (
    DEFAULT_GRID_G_PER_KWH,
    WATTS_PER_GIB,
    EnergyMeter,
    estimate_energy,
    read_rapl,
)


def test_closed_form_and_bounds() -> None:
    e = estimate_energy(100.0, 120.0, 2.0, watts_per_core=10.0, grid_g_per_kwh=400.0, pue=1.5)
    mem = 120.0 * 2.0 * WATTS_PER_GIB
    assert e.joules == pytest.approx((100.0 * 10.0 + mem) * 1.5)
    assert e.joules_low == pytest.approx((100.0 * 4.0 + mem) * 1.5)
    assert e.joules_high == pytest.approx((100.0 * 15.0 + mem) * 1.5)
    assert e.co2e_g == pytest.approx(e.joules / 3.6e6 * 400.0)
    assert e.kwh == pytest.approx(e.joules / 3.6e6) and e.method == "cpu-time"
    d = e.to_dict()
    assert d["energy_wh"] == pytest.approx(e.joules / 3600) and json.dumps(d)
    assert estimate_energy(1.0).grid_g_per_kwh == DEFAULT_GRID_G_PER_KWH


def _fake_rapl(root: Path, energy: int, top: int = 1000) -> None:
    for name in ("intel-rapl:0", "intel-rapl:0:0"):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{top}\n")


def test_rapl_reading_and_wraparound(tmp_path: Path) -> None:
    assert read_rapl(str(tmp_path)) is None
    _fake_rapl(tmp_path, 900_000, top=1_000_000)
    assert read_rapl(str(tmp_path)) == {"intel-rapl:0": (900_000, 1_000_000)}  # the sub-zone is not added again
    meter = EnergyMeter(rapl_root=str(tmp_path), prefer_rapl=True).start()
    _fake_rapl(tmp_path, 100_000, top=1_000_000)  # wrapped: 100k + 1M - 900k = 200k uJ = 0.2 J
    est = meter.stop()
    assert est.rapl_joules == pytest.approx(0.2) and est.method == "rapl" and est.joules == pytest.approx(0.2)


def test_meter_counts_this_process_cpu_time() -> None:
    with EnergyMeter(watts_per_core=8.0) as meter:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.2:
            sum(range(1000))
    est = meter.estimate
    assert est is not None and est.cpu_seconds >= 0.15 and est.wall_seconds >= 0.15
    assert est.method == "cpu-time" and est.joules >= est.cpu_seconds * 8.0


def test_bad_figures() -> None:
    with pytest.raises(UserError, match="watts_per_core"):
        EnergyMeter(watts_per_core=0)
    with pytest.raises(UserError, match="pue"):
        estimate_energy(1.0, pue=0.5)
    with pytest.raises(UserError, match="before start"):
        EnergyMeter().stop()
