"""Energy and carbon estimate of a piece of work (a training run), from CPU time or RAPL counters.

Method (docs/explain/energy.md states it with its uncertainty):

* **CPU time** (the default, always available): ``E = t_cpu * P_core + t_wall * M * P_mem`` with ``t_cpu`` the
  process's CPU seconds (all its threads, user + system, children included), ``P_core`` a stated power per busy
  core (default 10 W, range 4-15 W), ``M`` the peak resident memory in GiB and ``P_mem`` = 0.3725 W/GiB
  (Lannelongue, Grealey & Inouye 2021, "Green Algorithms"); times the data centre's power usage effectiveness
  ``pue`` (1.0: a machine on a desk; 1.5-1.7 is a typical data centre). Counting only this process's CPU time
  keeps other work on a shared machine out of the estimate.
* **RAPL** (where ``/sys/class/powercap/intel-rapl:*/energy_uj`` is readable: Intel, and AMD Zen with the
  powercap driver; usually root-only since CVE-2020-8694): the package energy counters' difference over the
  interval, wraparound handled. RAPL measures the whole socket, every process included, so it is recorded
  next to the CPU-time estimate, never in place of it, unless ``prefer_rapl=True``.
* **Carbon**: ``CO2e = E [kWh] * I`` at a stated grid intensity ``I`` (default 475 gCO2e/kWh, the world
  average Green Algorithms uses; real grids range from ~20 to ~800).

The low / high bounds use ``P_core`` = 4 and 15 W (a 64-core server part at its TDP per core, up to a desktop
core under load); the grid intensity is the user's to state, and the interval does not include it.

Use it around any work: ``meter = EnergyMeter(); meter.start(); ...; estimate = meter.stop()``, then
``estimate.to_dict()`` into a run's summary.
"""

from __future__ import annotations

import glob
import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tricklab.errors import UserError

__all__ = ["EnergyEstimate", "EnergyMeter", "estimate_energy", "read_rapl", "DEFAULT_WATTS_PER_CORE",
           "DEFAULT_GRID_G_PER_KWH", "WATTS_PER_GIB", "WATTS_PER_CORE_RANGE", "ENERGY_METRICS"]

DEFAULT_WATTS_PER_CORE = 10.0
WATTS_PER_CORE_RANGE = (4.0, 15.0)
WATTS_PER_GIB = 0.3725
DEFAULT_GRID_G_PER_KWH = 475.0
_J_PER_KWH = 3.6e6

#: declared metrics (shown without a helps/hurts verdict: they follow training time)
ENERGY_METRICS: tuple[dict[str, Any], ...] = (
    {"key": "energy_wh", "label": "Energy (Wh, estimate)", "higher_is_better": False, "verdict": False,
     "fmt": ".4f"},
    {"key": "co2e_g", "label": "Carbon (g CO2e, estimate)", "higher_is_better": False, "verdict": False,
     "fmt": ".4f"},
)


@dataclass(frozen=True)
class EnergyEstimate:
    """An energy and carbon estimate with its stated assumptions and bounds."""

    method: str  # "cpu-time" or "rapl"
    joules: float
    joules_low: float
    joules_high: float
    co2e_g: float
    co2e_g_low: float
    co2e_g_high: float
    cpu_seconds: float
    wall_seconds: float
    peak_memory_gib: float
    watts_per_core: float
    grid_g_per_kwh: float
    pue: float
    rapl_joules: float | None = None  # whole-package RAPL energy over the interval, where readable
    notes: list[str] = field(default_factory=list)

    @property
    def kwh(self) -> float:
        return self.joules / _J_PER_KWH

    @property
    def wh(self) -> float:
        return self.joules / 3600.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with ``energy_wh`` and ``co2e_g`` (the declared metrics) at the top."""
        d = asdict(self)
        d["energy_wh"] = self.wh
        d["energy_wh_low"] = self.joules_low / 3600.0
        d["energy_wh_high"] = self.joules_high / 3600.0
        return d


def _check_number(name: str, value: float, minimum: float = 0.0, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"energy: {name} must be a number, got {value!r}")
    if (value <= minimum) if open_low else (value < minimum):
        raise UserError(f"energy: {name} must be {'>' if open_low else '>='} {minimum}, got {value}")
    return float(value)


def estimate_energy(cpu_seconds: float, wall_seconds: float = 0.0, peak_memory_gib: float = 0.0, *,
                    watts_per_core: float = DEFAULT_WATTS_PER_CORE, grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH,
                    pue: float = 1.0, rapl_joules: float | None = None, prefer_rapl: bool = False) -> EnergyEstimate:
    """The CPU-time estimate (module docstring); with ``prefer_rapl`` and a RAPL reading, the RAPL energy
    (bounds = the reading itself)."""
    cpu = _check_number("cpu_seconds", cpu_seconds)
    wall = _check_number("wall_seconds", wall_seconds)
    mem = _check_number("peak_memory_gib", peak_memory_gib)
    w = _check_number("watts_per_core", watts_per_core, open_low=True)
    grid = _check_number("grid_g_per_kwh", grid_g_per_kwh)
    pue = _check_number("pue", pue, minimum=1.0)
    mem_j = wall * mem * WATTS_PER_GIB

    def joules(p_core: float) -> float:
        return (cpu * p_core + mem_j) * pue

    notes = [f"CPU time x {w:g} W per core + {WATTS_PER_GIB} W/GiB x peak memory x wall time, x PUE {pue:g}",
             f"bounds: {WATTS_PER_CORE_RANGE[0]:g}-{WATTS_PER_CORE_RANGE[1]:g} W per core"]
    method, j, lo, hi = "cpu-time", joules(w), joules(min(w, WATTS_PER_CORE_RANGE[0])), \
        joules(max(w, WATTS_PER_CORE_RANGE[1]))
    if prefer_rapl and rapl_joules is not None:
        method, j = "rapl", float(rapl_joules) * pue
        lo = hi = j
        notes = ["RAPL package energy over the interval (every process on the socket), x PUE"]
    g = grid / _J_PER_KWH
    return EnergyEstimate(method, j, lo, hi, j * g, lo * g, hi * g, cpu, wall, mem, w, grid, pue, rapl_joules,
                          notes)


def _rapl_domains(root: str = "/sys/class/powercap") -> list[Path]:
    # top-level package domains only (intel-rapl:0, intel-rapl:1), not their sub-zones (intel-rapl:0:0 = core)
    return [Path(p) for p in sorted(glob.glob(os.path.join(root, "intel-rapl:*")))
            if Path(p).name.count(":") == 1]


def read_rapl(root: str = "/sys/class/powercap") -> dict[str, tuple[int, int]] | None:
    """``{domain: (energy_uj, max_energy_range_uj)}`` for every readable package domain, or None when none is
    readable (no powercap, no permission, not a RAPL CPU)."""
    out: dict[str, tuple[int, int]] = {}
    for d in _rapl_domains(root):
        try:
            energy = int((d / "energy_uj").read_text().strip())
            top = int((d / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            continue
        out[d.name] = (energy, top)
    return out or None


def _rapl_delta(before: dict[str, tuple[int, int]] | None, after: dict[str, tuple[int, int]] | None) -> float | None:
    """Joules between two readings, each counter's wraparound at ``max_energy_range_uj`` handled."""
    if not before or not after or before.keys() != after.keys():
        return None
    total = 0
    for k, (e0, top) in before.items():
        e1 = after[k][0]
        total += e1 - e0 if e1 >= e0 else e1 + top - e0
    return total / 1e6


def _peak_memory_gib() -> float:
    # ru_maxrss is in KiB on Linux
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage / (1024.0 * 1024.0)


def _cpu_seconds() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class EnergyMeter:
    """Measures CPU time, wall time, peak memory and (where readable) RAPL energy between ``start`` and
    ``stop``; ``stop`` returns the :class:`EnergyEstimate`. Also a context manager (``meter.estimate`` after)."""

    def __init__(self, *, watts_per_core: float = DEFAULT_WATTS_PER_CORE,
                 grid_g_per_kwh: float = DEFAULT_GRID_G_PER_KWH, pue: float = 1.0, prefer_rapl: bool = False,
                 rapl_root: str = "/sys/class/powercap") -> None:
        self.kwargs = {"watts_per_core": watts_per_core, "grid_g_per_kwh": grid_g_per_kwh, "pue": pue,
                       "prefer_rapl": prefer_rapl}
        estimate_energy(0.0, **self.kwargs)  # validate the figures now, not after an hour of training
        self.rapl_root = rapl_root
        self._start: tuple[float, float, dict[str, tuple[int, int]] | None] | None = None
        self.estimate: EnergyEstimate | None = None

    def start(self) -> EnergyMeter:
        self._start = (_cpu_seconds(), time.perf_counter(), read_rapl(self.rapl_root))
        return self

    def stop(self) -> EnergyEstimate:
        if self._start is None:
            raise UserError("EnergyMeter.stop() called before start()")
        cpu0, wall0, rapl0 = self._start
        cpu, wall = _cpu_seconds() - cpu0, time.perf_counter() - wall0
        rapl = _rapl_delta(rapl0, read_rapl(self.rapl_root))
        self.estimate = estimate_energy(cpu, wall, _peak_memory_gib(), rapl_joules=rapl, **self.kwargs)
        return self.estimate

    def __enter__(self) -> EnergyMeter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
