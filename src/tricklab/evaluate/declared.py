"""A declared metric: what a paradigm below the lab (uncertainty, explanations, reinforcement learning, ...)
says about each number it reports, so the lab can measure it like any other (direction, unit, verdict).

It lives here, below the lab, because nothing outside the lab may import ``tricklab.lab``; the lab turns each
``MetricSpec`` into its own ``MetricInfo`` when a paradigm runs as a task kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["MetricSpec", "ParadigmResult"]


@dataclass(frozen=True)
class MetricSpec:
    """One reported number: ``key`` in the paradigm's metrics dict, a human ``label``, which way is better,
    its ``unit``, whether it enters the verdict (``verdict=False``: shown with its interval, never judged, e.g. a
    timing taken while other work shared the cores or a descriptive count) and a ``format()`` spec."""

    key: str
    label: str
    higher_is_better: bool
    unit: str = ""
    verdict: bool = True
    fmt: str = ".4f"


@dataclass
class ParadigmResult:
    """What a paradigm's ``run_<x>(config, *, seed, run_dir, progress)`` returns: ``metrics`` (final numbers,
    keys as its MetricSpec list declares), ``history`` (rows with at least ``step`` and ``seconds``, plus
    evaluations, for learning curves) and ``extras`` (JSON-able things a report may draw)."""

    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
